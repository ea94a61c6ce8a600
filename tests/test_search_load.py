"""Many workers, many short trials, one storage: every trial stored once, none lost, no connection errors.

The trials are as short as a real trial gets (one attack iteration on the shortest clip, random sampler),
so the storage sees the most writes per second these workers can make; start-up (each worker imports
torch) is most of the time.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.trial import TrialState

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
FAST = {"data": {"ids": ["cards-0-0001"]}, "attack": {"max_iter": 1, "patience": 0},
        "search": {"lr": {"type": "float", "low": 0.01, "high": 1.0, "log": True}},
        "sampler": {"type": "random", "seed": 0}, "pruner": {"type": "none"}}
# What a worker's log or the launcher would show if the storage had not kept up.
STORAGE_TROUBLE = ("database is locked", "OperationalError", "too many clients", "QueuePool limit", "Traceback",
                   "connection failed", "server closed the connection")


def _launch(tmp_path: Path, storage: str, name: str, workers: int, n_trials: int) -> tuple[float, str]:
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump({**FAST, "name": name}))
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "cli", "study", "launch", str(spec), "--storage", storage, "--workers", str(workers),
         "--n-trials", str(n_trials), "--artifact-dir", str(tmp_path / "artifacts"),
         "--log-dir", str(tmp_path / "logs")],
        cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=900)
    seconds = time.monotonic() - started
    assert done.returncode == 0, done.stderr[-3000:]
    return seconds, done.stderr


def _assert_nothing_lost(storage: str, name: str, tmp_path: Path, workers: int, n_trials: int,
                         launcher_out: str) -> list[optuna.trial.FrozenTrial]:
    trials = optuna.load_study(study_name=name, storage=storage).get_trials()
    assert sorted(t.number for t in trials) == list(range(len(trials))), "trial numbers unique, without gaps"
    assert len({t._trial_id for t in trials}) == len(trials)
    bad = [(t.number, t.state, t.user_attrs.get("fail_reason")) for t in trials if t.state != TrialState.COMPLETE]
    assert not bad, bad
    assert not [t.number for t in trials if "failed_trial" in t.system_attrs], "no trial had to be retried"
    # the budget is the study's: each worker checks the shared count first, so the last few can overlap
    assert n_trials <= len(trials) <= n_trials + workers - 1
    assert all(t.values and t.user_attrs["clips"][0]["utt_id"] == "cards-0-0001" for t in trials)
    pids = {t.user_attrs["worker"]["pid"] for t in trials}
    assert len(pids) >= min(workers, 2), "the workers really shared the study"
    # every trial's plot and two WAVs are in the artifact store, once
    assert len([p for p in (tmp_path / "artifacts").rglob("*") if p.is_file()]) == 3 * len(trials)
    logs = "".join(p.read_text() for p in (tmp_path / "logs").rglob("*.log")) + launcher_out
    assert not [m for m in STORAGE_TROUBLE if m in logs], [m for m in STORAGE_TROUBLE if m in logs]
    return trials


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.timeout(900)
def test_eight_workers_200_trials_on_postgres(tmp_path: Path, postgres_url: str, unique_name: str) -> None:
    seconds, out = _launch(tmp_path, postgres_url, unique_name, workers=8, n_trials=200)
    trials = _assert_nothing_lost(postgres_url, unique_name, tmp_path, 8, 200, out)
    per_worker = sorted(sum(t.user_attrs["worker"]["index"] == k for t in trials) for k in range(8))
    print(f"\n{len(trials)} trials by 8 workers on PostgreSQL in {seconds:.0f} s; trials per worker {per_worker}")


@pytest.mark.slow
def test_two_workers_50_fast_trials_on_sqlite(tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path / 'studies.db'}"
    seconds, out = _launch(tmp_path, storage, "load", workers=2, n_trials=50)
    trials = _assert_nothing_lost(storage, "load", tmp_path, 2, 50, out)
    print(f"\n{len(trials)} trials by 2 workers on SQLite in {seconds:.0f} s")
