"""The attack on real clips: batched restarts, the run folder, resuming after a hard kill."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

from cli import main
from recon_core.attack import Attack, restart_seeds
from recon_core.case import build_case
from recon_core.config import AttackConfig, DataConfig, ModelConfig, RunConfig
from recon_core.data import load_selection
from recon_core.features import front_end_for
from recon_core.models.presets import build_model

CLIP = "cards-0-0001"  # 1.1 s: the shortest embedded clip


def _case(model: str = "ds1", layers: str = "output"):
    net = build_model(ModelConfig(model=model))
    (utt,) = load_selection(DataConfig(ids=(CLIP,)))
    return build_case(net, front_end_for(model), utt, layers, torch.device("cpu"))


def _attack(case, **kw) -> tuple[torch.Tensor, torch.Tensor]:
    cfg = AttackConfig(max_iter=8, patience=0, **kw)
    attack = Attack(case, cfg, cfg.resolved_lr("ds1"))
    state = attack.run(attack.start(restart_seeds(cfg)))
    return torch.stack(state.history), state.best_x


def test_batched_restarts_follow_the_sequential_trajectories() -> None:
    """Same seeds, same trajectories; float32 batched and single matmuls round differently, so the
    tolerance is float32's, far below the O(1) gap between two seeds."""
    case = _case(layers="all")
    history, best_x = _attack(case, n_seeds=3, seed=5, lr=0.05)
    for r in range(3):
        alone_history, alone_x = _attack(case, n_seeds=1, seed=5 + r, lr=0.05)
        torch.testing.assert_close(history[:, r], alone_history[:, 0], rtol=1e-3, atol=1e-7)
        torch.testing.assert_close(best_x[r], alone_x[0], rtol=1e-3, atol=2e-4)
    assert not torch.allclose(history[:, 0], history[:, 1])  # different seeds really differ


def test_matching_the_true_features_costs_nothing() -> None:
    """Sanity of the objective: the client's own features reproduce its gradient exactly."""
    case = _case(layers="all")
    attack = Attack(case, AttackConfig(), 0.1)
    match, _ = attack.losses(case.x_true.unsqueeze(0), attack._params(1))
    assert float(match.detach()) < 1e-6


def _read(path: Path) -> list[dict[str, str]]:
    with path.open() as f:
        return list(csv.DictReader(f))


def test_run_folder_and_config_repeat(tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert main(["run", "--ids", f"{CLIP},cards-0-0003", "--max_iter", "8", "--n_seeds", "2", "--out", str(out),
                 "--device", "cpu"]) == 0
    rows = _read(out / "metrics.csv")
    assert [(r["utt_id"], r["restart"]) for r in rows] == [(CLIP, "0"), (CLIP, "1"), ("cards-0-0003", "0"),
                                                          ("cards-0-0003", "1")]
    assert sum(r["best"] == "True" for r in rows) == 2
    assert all(r["mae_ratio_uniform"] == r["mae_ratio"] for r in rows)  # the default start is the uniform one
    for uid in (CLIP, "cards-0-0003"):
        assert (out / "checkpoints" / f"{uid}.pt").is_file() and (out / "plots" / f"{uid}.png").stat().st_size
        assert (out / "audio" / f"{uid}_true.wav").is_file() and (out / "audio" / f"{uid}_recon.wav").is_file()
    log = (out / "run.log").read_text().splitlines()
    assert log and all(line[:4].isdigit() for line in log)  # every line starts with its timestamp
    again = tmp_path / "again"
    assert main(["run", "--config", str(out / "config.yaml"), "--out", str(again), "--device", "cpu"]) == 0
    for a, b in zip(rows, _read(again / "metrics.csv"), strict=True):
        assert a["mae_ratio"] == b["mae_ratio"] and a["best_loss"] == b["best_loss"]


def _run_cmd(out: Path, max_iter: int) -> list[str]:
    """The seed's DS1 script with its own flags: clips of [1000, 1600) ms, indices [0, 2)."""
    return [sys.executable, "scripts/reconstruct_ds1_run_many_sample.py", "--batch_min_dur", "1000",
            "--batch_max_dur", "1600", "--batch-start", "0", "--batch-end", "2", "--lr", "0.5", "--max_iter",
            str(max_iter), "--n_seeds", "2", "--top_grad_percentage", "1.0", "--patience", "0",
            "--checkpoint-every", "5", "--out", str(out)]


def test_resume_after_sigkill_gives_the_uninterrupted_result(tmp_path: Path) -> None:
    cwd = Path(__file__).resolve().parents[1]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    killed = tmp_path / "killed"
    proc = subprocess.Popen(_run_cmd(killed, 60), cwd=cwd, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    partial = killed / "checkpoints" / "cards-0-0003.partial.pt"
    deadline = time.monotonic() + 240
    while not partial.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert partial.exists(), "no checkpoint of the second clip appeared"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert len(_read(killed / "metrics.csv")) == 2  # the first clip (2 restarts) was finished, the second not
    subprocess.run(_run_cmd(killed, 60), cwd=cwd, env=env, check=True, capture_output=True)
    assert "resumed at iteration" in (killed / "run.log").read_text()
    straight = tmp_path / "straight"
    subprocess.run(_run_cmd(straight, 60), cwd=cwd, env=env, check=True, capture_output=True)
    resumed, reference = _read(killed / "metrics.csv"), _read(straight / "metrics.csv")
    assert [r["utt_id"] for r in resumed] == [CLIP, CLIP, "cards-0-0003", "cards-0-0003"]  # no duplicates
    for a, b in zip(resumed, reference, strict=True):
        assert abs(float(a["best_loss"]) - float(b["best_loss"])) <= 1e-6 * max(1.0, abs(float(b["best_loss"])))
        assert abs(float(a["feature_mae"]) - float(b["feature_mae"])) < 1e-5
    assert not list((killed / "checkpoints").glob("*.partial.pt"))


def test_a_finished_run_is_not_redone(tmp_path: Path) -> None:
    out = tmp_path / "run"
    args = ["run", "--ids", CLIP, "--max_iter", "4", "--out", str(out), "--device", "cpu"]
    assert main(args) == 0
    before = (out / "metrics.csv").read_bytes()
    assert main(args) == 0
    assert (out / "metrics.csv").read_bytes() == before
    assert "already finished" in (out / "run.log").read_text()


def test_config_mismatch_keeps_the_old_run(tmp_path: Path, capsys) -> None:
    out = tmp_path / "run"
    assert main(["run", "--ids", CLIP, "--max_iter", "4", "--out", str(out), "--device", "cpu"]) == 0
    before = (out / "metrics.csv").read_bytes()
    capsys.readouterr()
    assert main(["run", "--ids", CLIP, "--max_iter", "5", "--out", str(out), "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "attack.max_iter (4 -> 5)" in err[0]
    assert (out / "metrics.csv").read_bytes() == before


def test_run_config_records_every_setting() -> None:
    cfg = RunConfig()
    assert RunConfig.model_validate(cfg.model_dump(mode="json")) == cfg


def test_a_diverging_restart_stops_alone() -> None:
    """NaN in one restart's loss stops that restart with its reason; the others run to the end."""
    case = _case()
    cfg = AttackConfig(max_iter=6, patience=0, n_seeds=3)
    attack = Attack(case, cfg, 0.5)
    state = attack.start(restart_seeds(cfg))
    state.x[1, 0, 0] = float("nan")
    state = attack.run(state)
    assert state.stop_reason == ["max_iter", "nan", "max_iter"]
    assert state.iterations.tolist() == [6, 1, 6]
    assert torch.isfinite(state.best_loss[[0, 2]]).all() and torch.isfinite(state.x[[0, 2]]).all()
