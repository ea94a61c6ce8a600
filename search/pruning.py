"""Pruner and sampler of a study, built from the spec.

The reported value is the clip's best matching loss so far (monotone), every `report_every` attack
iterations. `plateau` stops a trial once that loss has not dropped by the fraction `min_delta` over its
last `patience` reports and it is also worse than the median of completed trials at the same step: a
flat but good trial goes on.
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
    that got *worse* than before by min_delta; the value reported here is the best loss so far, which
    never gets worse, so that test would never fire. This one asks the wrapped pruner only once the last
    `patience` reports improved the best loss by less than `min_delta` (relative) on the reports before."""

    def __init__(self, wrapped: optuna.pruners.BasePruner, patience: int, min_delta: float) -> None:
        self.wrapped, self.patience, self.min_delta = wrapped, patience, min_delta

    def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
        values = [v for _, v in sorted(trial.intermediate_values.items())]
        # A best-so-far loss never rises within a clip: a rise is the next clip starting, and only the
        # current clip's reports say whether the attack is still making progress.
        start = max((i for i in range(1, len(values)) if values[i] > values[i - 1]), default=0)
        values = values[start:]
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
