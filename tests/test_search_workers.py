"""Workers as real processes on real storages: budgets kept, dead workers' trials retried, clean stops."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from search.spec import load_spec
from search.study import open_study, progress

ROOT = Path(__file__).resolve().parents[1]
TINY = {"name": "tiny", "data": {"ids": ["cards-0-0001"]}, "attack": {"max_iter": 10},
        "search": {"lr": {"type": "float", "low": 0.01, "high": 1.0, "log": True}},
        "sampler": {"n_startup_trials": 2}, "pruner": {"type": "none", "report_every": 5}}
# Short heartbeats so a dead worker's trial goes stale in seconds, and one torch thread per process.
ENV = {**os.environ, "ASR_RECON_HEARTBEAT_INTERVAL": "1", "ASR_RECON_GRACE_PERIOD": "3", "OMP_NUM_THREADS": "1"}


def _spec(tmp_path: Path, **changes: object) -> Path:
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump({**TINY, **changes}))
    return path


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-c", "import sys, cli; sys.exit(cli.main())", *args]


def _worker(spec: Path, storage: str, tmp_path: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "search.worker", str(spec), "--storage", storage, "--threads", "1", "--quiet",
         "--artifact-dir", str(tmp_path / "artifacts"), "--log-file", str(tmp_path / f"w{time.monotonic_ns()}.log"),
         *extra],
        cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _launch(spec: Path, storage: str, tmp_path: Path, workers: int, n_trials: int) -> subprocess.CompletedProcess:
    return subprocess.run(
        _cli("study", "launch", str(spec), "--storage", storage, "--workers", str(workers), "--n-trials",
             str(n_trials), "--artifact-dir", str(tmp_path / "artifacts"), "--log-dir", str(tmp_path / "logs")),
        cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)


def _wait_for(condition: Callable[[], bool], what: str, limit: float = 120.0) -> None:
    end = time.monotonic() + limit
    while not condition():
        if time.monotonic() > end:
            pytest.fail(f"gave up waiting for {what}")
        time.sleep(0.2)


def _load(storage: str, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=storage)


def _assert_budget_kept(study: optuna.Study, n_trials: int, workers: int, logs: Path, sharing: int = 2) -> None:
    """No lost, duplicate or failed trial; at least `sharing` workers ran trials (a worker that is slow to
    start on a busy machine may find the budget spent, so not all of them have to)."""
    trials = study.get_trials()
    numbers = [t.number for t in trials]
    assert sorted(numbers) == list(range(len(trials))), "trial numbers are unique and without gaps"
    assert all(t.state == TrialState.COMPLETE for t in trials), [(t.number, t.state, t.user_attrs) for t in trials]
    # a worker checks the shared count before it starts; two can start the last one at once
    assert n_trials <= len(trials) <= n_trials + workers - 1
    assert len({t.user_attrs["worker"]["pid"] for t in trials}) >= sharing, "workers really shared the study"
    text = "".join(p.read_text() for p in logs.rglob("*.log"))
    assert "database is locked" not in text


@pytest.mark.slow
def test_two_workers_share_one_sqlite_file(tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path / 'studies.db'}"
    done = _launch(_spec(tmp_path), storage, tmp_path, workers=2, n_trials=6)
    assert done.returncode == 0, done.stderr
    study = _load(storage, "tiny")
    _assert_budget_kept(study, 6, 2, tmp_path / "logs")
    first = study.trials[0].user_attrs
    assert first["clips"][0]["utt_id"] == "cards-0-0001" and first["seconds"] > 0 and first["peak_memory_mb"] > 0
    assert first["device"] == "cpu" and first["worker"]["host"]


@pytest.mark.slow
@pytest.mark.postgres
def test_four_workers_share_postgres(tmp_path: Path, postgres_url: str, unique_name: str) -> None:
    done = _launch(_spec(tmp_path, name=unique_name), postgres_url, tmp_path, workers=4, n_trials=8)
    assert done.returncode == 0, done.stderr
    _assert_budget_kept(_load(postgres_url, unique_name), 8, 4, tmp_path / "logs")


@pytest.mark.slow
def test_killed_worker_trial_is_retried_by_another(tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path / 'studies.db'}"
    spec = _spec(tmp_path, attack={"max_iter": 400}, n_trials=1)
    victim = _worker(spec, storage, tmp_path)
    _wait_for(lambda: _running_with_report(storage), "the first worker to be inside a trial")
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    rescuer = _worker(spec, storage, tmp_path, "--n-trials", "1")
    out, _ = rescuer.communicate(timeout=300)
    assert rescuer.returncode == 0, out
    trials = _load(storage, "tiny").get_trials()
    dead, retry = trials[0], trials[-1]
    assert dead.state == TrialState.FAIL
    assert retry.state == TrialState.COMPLETE and retry.system_attrs["failed_trial"] == dead.number
    assert retry.params == dead.params
    assert retry.user_attrs["worker"]["pid"] == rescuer.pid
    assert progress(_load(storage, "tiny")).finished == 1


def _running_with_report(storage: str) -> bool:
    try:
        study = _load(storage, "tiny")
    except KeyError:
        return False
    return any(t.intermediate_values for t in study.get_trials(states=(TrialState.RUNNING,)))


@pytest.mark.slow
def test_sigterm_to_launcher_stops_every_worker_and_fails_their_trials(tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path / 'studies.db'}"
    spec = _spec(tmp_path, attack={"max_iter": 2000}, n_trials=4)
    launcher = subprocess.Popen(
        _cli("study", "launch", str(spec), "--storage", storage, "--workers", "2",
             "--artifact-dir", str(tmp_path / "artifacts"), "--log-dir", str(tmp_path / "logs")),
        cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    _wait_for(lambda: _count_running(storage) == 2, "both workers to be inside a trial")
    pids = {t.user_attrs["worker"]["pid"] for t in _load(storage, "tiny").get_trials()}
    launcher.send_signal(signal.SIGTERM)
    out, _ = launcher.communicate(timeout=120)
    assert launcher.returncode == 130, out
    trials = _load(storage, "tiny").get_trials()
    assert trials and all(t.state == TrialState.FAIL for t in trials), [(t.number, t.state) for t in trials]
    assert all("stopped" in t.user_attrs["fail_reason"] for t in trials)
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def _count_running(storage: str) -> int:
    try:
        return len(_load(storage, "tiny").get_trials(states=(TrialState.RUNNING,)))
    except KeyError:
        return 0


def test_study_run_refuses_a_changed_spec(tmp_path: Path) -> None:
    storage = str(tmp_path / "studies.db")
    open_study(load_spec(_spec(tmp_path)), storage)
    changed = _spec(tmp_path, attack={"max_iter": 11})
    done = subprocess.run(_cli("study", "run", str(changed), "--storage", storage, "--log-file",
                               str(tmp_path / "w.log")), cwd=ROOT, env=ENV,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    last = done.stderr.strip().splitlines()[-1]  # Optuna's own INFO line may come first
    assert last.startswith("asr-recon: error: study 'tiny'") and "attack.max_iter (10 -> 11)" in last


@pytest.mark.slow
def test_shell_launcher_starts_workers_on_one_storage(tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path / 'studies.db'}"
    env = {**ENV, "PYTHON": sys.executable, "LOG_DIR": str(tmp_path / "logs")}
    done = subprocess.run(["bash", "scripts/launch_workers.sh", str(_spec(tmp_path, n_trials=3)), storage, "cpu:2"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    _assert_budget_kept(_load(storage, "tiny"), 3, 2, tmp_path / "logs", sharing=1)
    logs = sorted((tmp_path / "logs").glob("*-w*.log"))
    assert len(logs) == 2 and all("joined study 'tiny'" in p.read_text() for p in logs)


def test_workers_opening_a_new_database_together_do_not_fail(tmp_path: Path) -> None:
    """They race to create Optuna's tables; the losers must retry, not exit."""
    code = "import sys; from search.storage import open_storage; open_storage(sys.argv[1])"
    procs = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path / "new.db")], cwd=ROOT,
                              stderr=subprocess.PIPE, text=True) for _ in range(4)]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_sigkill_of_one_of_three_workers_mid_trial(backend: str, tmp_path: Path, unique_name: str,
                                                   request: pytest.FixtureRequest) -> None:
    """Three workers share a study; one is SIGKILLed inside a trial. Its trial becomes FAIL by heartbeat, is
    retried with the same settings by a survivor, and the budget ends with no COMPLETE trial lost."""
    storage = (request.getfixturevalue("postgres_url") if backend == "postgres"
               else f"sqlite:///{tmp_path / 'studies.db'}")
    n_trials = 5
    spec = _spec(tmp_path, name=unique_name, attack={"max_iter": 150}, n_trials=n_trials)
    open_study(load_spec(spec), storage)  # created once, as the launcher does, so the workers only join
    workers = [_worker(spec, storage, tmp_path, "--worker-index", str(k)) for k in range(3)]
    try:
        _wait_for(lambda: _reporting_pids(storage, unique_name) >= {p.pid for p in workers[:1]},
                  "the first worker to be inside a trial")
        victim = workers[0]
        victim.send_signal(signal.SIGKILL)
        victim.wait()
        survivors = workers[1:]
        for w in survivors:
            out, _ = w.communicate(timeout=400)
            assert w.returncode == 0, out
    finally:
        for w in workers:
            if w.poll() is None:
                w.kill()
                w.wait()
    study = _load(storage, unique_name)
    trials = study.get_trials()
    assert sorted(t.number for t in trials) == list(range(len(trials)))
    dead = [t for t in trials if t.user_attrs["worker"]["pid"] == victim.pid]
    assert len(dead) == 1 and dead[0].state == TrialState.FAIL, [(t.number, t.state) for t in dead]
    retries = [t for t in trials if t.system_attrs.get("failed_trial") == dead[0].number]
    assert len(retries) == 1
    retry = retries[0]
    assert retry.state == TrialState.COMPLETE and retry.params == dead[0].params
    assert retry.user_attrs["worker"]["pid"] in {w.pid for w in survivors}
    others = [t for t in trials if t.number != dead[0].number]
    assert all(t.state == TrialState.COMPLETE for t in others), [(t.number, t.state) for t in others]
    assert n_trials <= len(others) <= n_trials + 1  # the two survivors may both start the last one
    assert progress(study).finished == len(others) and progress(study).failed == 0


def _reporting_pids(storage: str, name: str) -> set[int]:
    """Pids of workers inside a trial that has reported at least once."""
    try:
        study = _load(storage, name)
    except KeyError:
        return set()
    return {t.user_attrs["worker"]["pid"] for t in study.get_trials(states=(TrialState.RUNNING,))
            if t.intermediate_values and "worker" in t.user_attrs}
