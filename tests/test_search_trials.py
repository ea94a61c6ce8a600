"""What single trials do in a real worker process: pruned on a plateau, failed with a reason, exported."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import torch
import yaml
from optuna.trial import TrialState

from recon_core.config import ModelConfig, load_run_config
from recon_core.models.presets import build_model
from search.spec import load_spec
from search.study import open_study

ROOT = Path(__file__).resolve().parents[1]
TINY = {"name": "tiny", "data": {"ids": ["cards-0-0001"]}, "attack": {"max_iter": 10},
        "search": {"lr": {"type": "float", "low": 1e-7, "high": 1e38, "log": True}},
        "pruner": {"type": "none", "report_every": 5}}
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def _spec(tmp_path: Path, **changes: object) -> Path:
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump({**TINY, **changes}))
    return path


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", "import sys, cli; sys.exit(cli.main())", *args], cwd=ROOT,
                          env=ENV, capture_output=True, text=True, timeout=300)


def _study_run(spec: Path, storage: str, tmp_path: Path, n_trials: int) -> subprocess.CompletedProcess:
    return _run("study", "run", str(spec), "--storage", storage, "--n-trials", str(n_trials), "--threads", "1",
                "--artifact-dir", str(tmp_path / "artifacts"), "--log-file", str(tmp_path / "worker.log"))


def _queued(spec: Path, storage: str, *lrs: float) -> None:
    """Fix the sampled settings of the first trials, so a test knows which trial does what."""
    study = open_study(load_spec(spec), storage)
    for lr in lrs:
        study.enqueue_trial({"lr": lr})


@pytest.mark.slow
def test_plateauing_trial_is_pruned(tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path / 's.db'}"
    spec = _spec(tmp_path, attack={"max_iter": 60},
                 pruner={"type": "plateau", "patience": 2, "min_delta": 0.01, "n_startup_trials": 1,
                         "report_every": 5})
    _queued(spec, storage, 0.5, 1e-7)  # a learning rate of 1e-7 leaves the reconstruction where it started
    done = _study_run(spec, storage, tmp_path, 2)
    assert done.returncode == 0, done.stderr
    good, flat = optuna.load_study(study_name="tiny", storage=storage).trials
    assert good.state == TrialState.COMPLETE
    assert flat.state == TrialState.PRUNED
    assert flat.last_step < 60 and flat.user_attrs["iterations"] == flat.last_step
    assert len(good.intermediate_values) == 60 // 5


@pytest.mark.slow
def test_failing_trials_keep_their_reason_and_the_study_goes_on(tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path / 's.db'}"
    spec = _spec(tmp_path)
    _queued(spec, storage, 1e38, 0.5)  # lr 1e38 overflows inside the optimiser: an exception
    done = _study_run(spec, storage, tmp_path, 2)
    assert done.returncode == 0, done.stderr
    crashed, fine = optuna.load_study(study_name="tiny", storage=storage).trials
    assert crashed.state == TrialState.FAIL and "RuntimeError" in crashed.user_attrs["fail_reason"]
    assert fine.state == TrialState.COMPLETE


@pytest.mark.slow
def test_nan_trial_fails_with_its_reason(tmp_path: Path) -> None:
    weights = tmp_path / "nan.pt"
    state = build_model(ModelConfig()).state_dict()
    state["out.bias"] = torch.full_like(state["out.bias"], math.nan)  # every gradient the client shares is NaN
    torch.save(state, weights)
    storage = f"sqlite:///{tmp_path / 's.db'}"
    spec = _spec(tmp_path, model={"weights": str(weights)})
    done = _study_run(spec, storage, tmp_path, 2)
    assert done.returncode == 0, done.stderr
    trials = optuna.load_study(study_name="tiny", storage=storage).trials
    assert len(trials) == 2, "the worker went on after the first NaN trial"
    for t in trials:
        assert t.state == TrialState.FAIL
        assert t.user_attrs["fail_reason"] == "non-finite matching loss on cards-0-0001 (nan)"


@pytest.fixture(scope="module")
def finished_study(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    tmp_path = tmp_path_factory.mktemp("study")
    storage = f"sqlite:///{tmp_path / 's.db'}"
    spec = _spec(tmp_path, search={"lr": {"type": "float", "low": 0.01, "high": 1.0, "log": True},
                                   "top_grad_percentage": {"type": "float", "low": 0.2, "high": 1.0}},
                 sampler={"n_startup_trials": 2})
    done = _study_run(spec, storage, tmp_path, 3)
    assert done.returncode == 0, done.stderr
    return storage, tmp_path


@pytest.mark.slow
def test_export_then_run_reproduces_the_objective(finished_study: tuple[str, Path]) -> None:
    storage, tmp_path = finished_study
    out = tmp_path / "best.yaml"
    done = _run("study", "export", "--storage", storage, "--study-name", "tiny", "-o", str(out))
    assert done.returncode == 0, done.stderr
    best = optuna.load_study(study_name="tiny", storage=storage).best_trial
    cfg = load_run_config(out)
    assert cfg.attack.lr == best.params["lr"] and cfg.data.ids == ("cards-0-0001",)
    rerun = _run("run", "--config", str(out), "--out", str(tmp_path / "rerun"))
    assert rerun.returncode == 0, rerun.stderr
    summary = json.loads((tmp_path / "rerun" / "summary.json").read_text())
    assert summary["mae_ratio"]["mean"] == pytest.approx(best.value, rel=0.01)


@pytest.mark.slow
def test_report_writes_csv_plots_and_summary(finished_study: tuple[str, Path]) -> None:
    storage, tmp_path = finished_study
    out = tmp_path / "report"
    done = _run("study", "report", "--storage", storage, "--study-name", "tiny", "--out", str(out))
    assert done.returncode == 0, done.stderr
    rows = (out / "trials.csv").read_text().splitlines()
    assert rows[0].startswith("number,state,mae_ratio,params_lr,params_top_grad_percentage") and len(rows) == 4
    for name in ("optimization_history", "param_importances", "slice", "parallel_coordinate"):
        assert (out / f"{name}.png").read_bytes()[:4] == b"\x89PNG"
    summary = (out / "summary.md").read_text()
    assert "## Best trial" in summary and "lr:" in summary and "## Parameter importances" in summary


@pytest.mark.slow
def test_pareto_study_exports_its_most_accurate_trial(tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path / 's.db'}"
    spec = _spec(tmp_path, objectives=["mae_ratio", "seconds"],
                 search={"lr": {"type": "float", "low": 0.01, "high": 1.0, "log": True}})
    assert _study_run(spec, storage, tmp_path, 2).returncode == 0
    study = optuna.load_study(study_name="tiny", storage=storage)
    assert study.metric_names == ["mae_ratio", "seconds"] and all(len(t.values) == 2 for t in study.trials)
    done = _run("study", "export", "--storage", storage, "--study-name", "tiny", "-o", str(tmp_path / "b.yaml"))
    assert done.returncode == 0, done.stderr
    best = min(study.best_trials, key=lambda t: t.values[0])
    assert load_run_config(tmp_path / "b.yaml").attack.lr == best.params["lr"]
    done = _run("study", "report", "--storage", storage, "--study-name", "tiny", "--out", str(tmp_path / "r"))
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "r" / "optimization_history.png").is_file()


def test_export_of_unknown_study_is_one_line(tmp_path: Path) -> None:
    open_study(load_spec(_spec(tmp_path)), str(tmp_path / "s.db"))
    done = _run("study", "export", "--storage", str(tmp_path / "s.db"), "--study-name", "other")
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1] == (
        f"asr-recon: error: study 'other' is not in {tmp_path / 's.db'} (studies there: tiny)")
