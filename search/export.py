"""The best trial of a study as a run config, so `asr-recon run --config FILE` repeats it exactly.

Each trial stores the full RunConfig it ran (fixed + sampled settings, data selection, seeds) as a user
attribute, so export does not need the spec file and cannot mix a trial with a later, edited spec.
"""

from __future__ import annotations

from pathlib import Path

import optuna
from optuna.trial import FrozenTrial, TrialState
from pydantic import ValidationError

from recon_core.config import RunConfig, describe_validation_error
from recon_core.errors import InputError

RUN_CONFIG_ATTR = "run_config"


def best_trial(study: optuna.Study) -> FrozenTrial:
    """The completed trial with the lowest mae_ratio (on a Pareto front: the front's most accurate)."""
    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not done:
        raise InputError(f"study {study.study_name!r} has no completed trial yet")
    front = study.best_trials if len(study.directions) > 1 else [study.best_trial]
    return min(front, key=lambda t: (t.values[0], t.number))


def run_config_of(trial: FrozenTrial) -> RunConfig:
    raw = trial.user_attrs.get(RUN_CONFIG_ATTR)
    if raw is None:
        raise InputError(f"trial {trial.number} has no stored run config (it was not made by asr-recon)")
    try:
        return RunConfig.model_validate(raw)
    except ValidationError as exc:
        raise InputError(f"trial {trial.number}'s run config: {describe_validation_error(exc)}") from None


def export_text(study: optuna.Study, trial: FrozenTrial) -> str:
    """YAML of the run config, headed by comments saying where it came from and what it scored."""
    values = ", ".join(f"{n}={v:.6g}" for n, v in zip(study.metric_names or ["value"], trial.values, strict=False))
    header = (f"# best trial {trial.number} of study {study.study_name!r}: {values}\n"
              f"# searched: {trial.params}\n"
              "# reproduce: asr-recon run --config THIS_FILE\n")
    return header + run_config_of(trial).to_yaml()


def export_best(study: optuna.Study, out: Path) -> FrozenTrial:
    trial = best_trial(study)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(export_text(study, trial))
    return trial
