"""Create or join a study, and count how far it is, the same way in every worker.

A study remembers the spec identity it was created with; a worker whose spec means something else
(another model, data, fixed setting or search space) is refused, naming the first difference, so that
trials of two different experiments never share one study.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import optuna
from optuna.trial import TrialState

from recon_core.config import first_difference
from recon_core.errors import InputError
from search.pruning import build_pruner, build_sampler
from search.spec import StudySpec
from search.storage import display_url, open_storage, require_existing

FINGERPRINT_ATTR = "spec_fingerprint"
IDENTITY_ATTR = "spec_identity"


def open_study(spec: StudySpec, storage: str, study_name: str | None = None,
               worker_index: int = 0) -> optuna.Study:
    """Create the study if it is new, else join it after checking that the spec means the same."""
    name = study_name or spec.name
    study = optuna.create_study(
        storage=open_storage(storage, spec.storage),
        study_name=name,
        sampler=build_sampler(spec.sampler, worker_index),
        pruner=build_pruner(spec.pruner, spec.multi_objective),
        directions=["minimize"] * len(spec.objectives),
        load_if_exists=True,
    )
    old = study.user_attrs.get(IDENTITY_ATTR)
    if old is None:
        study.set_user_attr(IDENTITY_ATTR, spec.identity())
        study.set_user_attr(FINGERPRINT_ATTR, spec.fingerprint())
        study.set_user_attr("report_every", spec.pruner.report_every)
        study.set_metric_names(list(spec.objectives))
    elif study.user_attrs.get(FINGERPRINT_ATTR) != spec.fingerprint():
        change = first_difference(old, spec.identity())
        raise InputError(f"study {name!r} in {display_url(storage)} was created from another spec ({change}); "
                         "use another --study-name or the original spec")
    return study


def load_existing(storage: str, study_name: str) -> optuna.Study:
    """An existing study, for export/report/paper; a storage file that does not exist is refused before opening
    it would create an empty one, and a wrong name lists the names the storage has."""
    require_existing(storage)
    store = open_storage(storage)
    names = optuna.get_all_study_names(store)
    if study_name not in names:
        shown = ", ".join(sorted(names)) or "none"
        raise InputError(f"study {study_name!r} is not in {display_url(storage)} (studies there: {shown})")
    return optuna.load_study(study_name=study_name, storage=store)


@dataclass(frozen=True)
class Progress:
    """Trials of a study by what they mean for its budget: a trial retried after its worker died counts
    once (the retry), so a budget of n trials ends with n finished ones whatever workers were lost."""

    finished: int
    running: int
    waiting: int
    failed: int

    def line(self) -> str:
        return f"{self.finished} finished ({self.failed} failed), {self.running} running, {self.waiting} queued"


def progress(study: optuna.Study) -> Progress:
    trials = study.get_trials(deepcopy=False)
    retried = {t.system_attrs["failed_trial"] for t in trials if "failed_trial" in t.system_attrs}
    retried |= {n for t in trials for n in t.system_attrs.get("retry_history", [])}
    counts = Counter(t.state for t in trials if not (t.state == TrialState.FAIL and t.number in retried))
    finished = counts[TrialState.COMPLETE] + counts[TrialState.PRUNED] + counts[TrialState.FAIL]
    return Progress(finished, counts[TrialState.RUNNING], counts[TrialState.WAITING], counts[TrialState.FAIL])


def fail_running(study: optuna.Study, host: str, pids: set[int], reason: str) -> list[int]:
    """Mark FAIL the RUNNING trials that workers `pids` on `host` left behind when they were stopped, so
    that no trial of a stopped launch stays RUNNING forever (heartbeats would catch it, but only on RDB
    storages and only after the grace period). Returns the trial numbers."""
    storage, failed = study._storage, []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        worker = trial.user_attrs.get("worker") or {}
        if worker.get("host") != host or worker.get("pid") not in pids:
            continue
        try:
            storage.set_trial_user_attr(trial._trial_id, "fail_reason", reason)
            if storage.set_trial_state_values(trial._trial_id, TrialState.FAIL):
                failed.append(trial.number)
        except optuna.exceptions.UpdateFinishedTrialError:
            continue  # it finished meanwhile
    return failed
