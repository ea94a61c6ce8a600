"""Section 3: sensitivity from the Optuna studies of studies/ds1_baseline.yaml and studies/ds2_search.yaml.

A study is read from --storage when that storage holds one named like the spec (it is reported as it stands:
workers may still be adding to it); otherwise the budget's version of the spec is run here, in-process, on
SQLite under --out, and resumed on a rerun. Importances are PED-ANOVA, Optuna's default: deterministic, so a
rerun on the same trials gives the same numbers, and it needs no scikit-learn (fANOVA does).
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

import optuna
import torch
from optuna.importance import PedAnovaImportanceEvaluator
from optuna.trial import TrialState

from paper.budget import MAIN_BUCKET, Budget
from paper.tables import Row
from recon_core.config import DataConfig
from recon_core.errors import InputError
from search.export import best_trial, export_best
from search.objective import Objective, TrialFailed
from search.spec import StudySpec, load_spec
from search.study import load_existing, open_study, progress

log = logging.getLogger(__name__)

SPECS_DIR = Path(__file__).resolve().parents[1] / "studies"
STUDY_SPECS = {"ds1": "ds1_baseline.yaml", "ds2": "ds2_search.yaml"}
IMPORTANCE_METHOD = ("PED-ANOVA (Optuna PedAnovaImportanceEvaluator, default quantiles: top 10 % of trials against "
                     "all), on mae_ratio of the completed trials")
IMPORTANCE_COLUMNS = ("model", "study", "source", "setting", "importance", "method")
TRIAL_COLUMNS = ("model", "study", "trial", "mae_ratio")  # then param_<setting>, one per searched setting
BEST_COLUMNS = ("model", "study", "source", "trials_complete", "trials_finished", "best_trial", "mae_ratio",
                "settings", "config")


@dataclass(frozen=True)
class StudyResult:
    model: str
    study: optuna.Study
    source: str  # the storage it came from and whether it ran here


def budget_spec(spec: StudySpec, budget: Budget, data: Path | None) -> StudySpec:
    """The spec at the budget's scale: the budget's model size and 1-2 s clips, max_iter and a single restart
    fixed (so taken out of the search), no pruning (importances need completed trials). `full` keeps it."""
    if budget.study_trials is None:
        return spec
    fixed = {"max_iter": budget.max_iter, "n_seeds": 1}
    raw = spec.model_dump(mode="json", exclude={"attack", "search"})
    raw.update(
        name=f"{spec.name}-{budget.name}",
        model={**raw["model"], "preset": budget.preset},
        data=DataConfig(data=data, min_ms=MAIN_BUCKET[0], max_ms=MAIN_BUCKET[1], end=budget.clips_per_bucket)
        .model_dump(mode="json"),
        attack={**spec.attack.model_dump(mode="json", exclude_unset=True), **fixed},
        search={k: v.model_dump(mode="json") for k, v in spec.search.items() if k not in fixed},
        pruner={"type": "none"},
        n_trials=budget.study_trials,
        sampler={**raw["sampler"], "n_startup_trials": min(spec.sampler.n_startup_trials, budget.study_trials // 2)},
    )
    return StudySpec.model_validate(raw)


def obtain_study(model: str, budget: Budget, data: Path | None, storage: str | None, local_storage: str,
                 device: torch.device) -> StudyResult:
    spec = load_spec(SPECS_DIR / STUDY_SPECS[model])
    if storage:
        try:
            return StudyResult(model, load_existing(storage, spec.name), f"{storage} (read as found)")
        except InputError as exc:
            log.info("%s; running the %s budget's study here instead", exc, budget.name)
    spec = budget_spec(spec, budget, data)
    study = open_study(spec, local_storage)
    objective = Objective(spec, device, None)
    while progress(study).finished < (spec.n_trials or 0):
        study.optimize(objective, n_trials=1, catch=(TrialFailed,))
        log.info("study %s: %s", spec.name, progress(study).line())
    return StudyResult(model, study, f"{local_storage} (run here, {budget.name} budget)")


def importance_rows(result: StudyResult) -> tuple[list[Row], str | None]:
    """One row per searched setting, or no rows and the reason (too few completed trials)."""
    study = result.study
    target = (lambda t: t.values[0]) if len(study.directions) > 1 else None
    try:
        with warnings.catch_warnings():  # it warns that it ranks settings by how they lower the target: we minimise
            warnings.simplefilter("ignore", UserWarning)
            found = optuna.importance.get_param_importances(study, evaluator=PedAnovaImportanceEvaluator(),
                                                            target=target)
    except (ValueError, RuntimeError, ZeroDivisionError) as exc:
        return [], f"{result.model}: importances not computed ({str(exc).splitlines()[0] if str(exc) else exc!r})"
    return [{"model": result.model, "study": study.study_name, "source": result.source, "setting": k,
             "importance": v, "method": IMPORTANCE_METHOD} for k, v in found.items()], None


def best_row(result: StudyResult, configs_dir: Path) -> Row:
    """The best completed trial, exported as a run config that `asr-recon run --config` repeats."""
    study = result.study
    trials = study.get_trials(deepcopy=False)
    row: Row = {"model": result.model, "study": study.study_name, "source": result.source,
                "trials_complete": sum(t.state == TrialState.COMPLETE for t in trials),
                "trials_finished": progress(study).finished}
    try:
        trial = best_trial(study)
    except InputError:
        return row
    config = configs_dir / f"{study.study_name}-best.yaml"
    export_best(study, config)
    settings = "; ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in trial.params.items())
    return {**row, "best_trial": trial.number, "mae_ratio": trial.values[0], "settings": settings,
            "config": str(config.relative_to(configs_dir.parent))}


def trial_rows(result: StudyResult) -> list[Row]:
    """Completed trials: mae_ratio and every searched setting (the slice plots' data)."""
    study = result.study
    return [{"model": result.model, "study": study.study_name, "trial": t.number, "mae_ratio": t.values[0],
             **{f"param_{k}": v for k, v in t.params.items()}}
            for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))]
