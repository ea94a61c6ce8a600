"""Pruner and sampler of a study, built from the spec.

The reported value is the trial's objective so far (mean mae_ratio of its clips, the one under attack
as if stopped now), every `report_every` attack iterations: on the scale of the final values, so trials
compare at equal steps whatever their distance or top-gradient fraction (the matching loss does not:
those change its scale, and it keeps falling geometrically long after the reconstruction stopped
improving). `plateau` stops a trial once its best reported value has not dropped by the fraction
`min_delta` over its last `patience` reports and it is also worse than the median of completed trials
at the same step: a flat but good trial goes on.
"""

from __future__ import annotations

import optuna

from search.spec import PrunerSpec, SamplerSpec


def build_pruner(spec: PrunerSpec, multi_objective: bool) -> optuna.pruners.BasePruner:
    """Optuna cannot prune multi-objective trials (report() refuses them), so those get no pruner."""
    if multi_objective or spec.type == "none":
        return optuna.pruners.NopPruner()
    median = optuna.pruners.MedianPruner(n_startup_trials=spec.n_startup_trials, n_warmup_steps=spec.n_warmup_steps)
    if spec.type == "median":
        return median
    return PlateauPruner(median, patience=spec.patience, min_delta=spec.min_delta)


class PlateauPruner(optuna.pruners.BasePruner):
    """PatientPruner's idea with the test turned round. Optuna's PatientPruner waits for a window of reports
    that got *worse* than before by min_delta, which an attack whose reconstruction merely stopped
    improving never does. This one asks the wrapped pruner only once the best of the last `patience`
    reports improved on the best before them by less than `min_delta` (relative)."""

    def __init__(self, wrapped: optuna.pruners.BasePruner, patience: int, min_delta: float) -> None:
        self.wrapped, self.patience, self.min_delta = wrapped, patience, min_delta

    def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
        values = [v for _, v in sorted(trial.intermediate_values.items())]
        if len(values) <= self.patience:
            return False
        before, recent = min(values[: len(values) - self.patience]), min(values[len(values) - self.patience:])
        if recent < before - self.min_delta * abs(before):
            return False  # still improving
        return bool(self.wrapped.prune(study, trial))


def build_sampler(spec: SamplerSpec, worker_index: int = 0) -> optuna.samplers.BaseSampler:
    """Worker k seeds with seed + k: identical seeds would make parallel workers try the same startup points.
    constant_liar keeps TPE from proposing the point a running trial is already evaluating."""
    seed = spec.seed + worker_index
    if spec.type == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(
        seed=seed, n_startup_trials=spec.n_startup_trials, multivariate=spec.multivariate, constant_liar=True
    )
