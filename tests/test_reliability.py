"""Runs under hard kills and signals: every clip ends in metrics.csv exactly once, no torn files."""

from __future__ import annotations

import csv
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}


def _cmd(out: Path) -> list[str]:
    return [sys.executable, "-m", "cli", "run", "--ids", "cards-0-0001,cards-0-0003,lj-002-0020", "--max_iter", "40",
            "--patience", "0", "--n_seeds", "2", "--checkpoint-every", "5", "--out", str(out)]


def _ids(out: Path) -> list[str]:
    with (out / "metrics.csv").open() as f:
        return [row["utt_id"] for row in csv.DictReader(f)]


def test_sigterm_stops_after_a_checkpoint(tmp_path: Path) -> None:
    out = tmp_path / "run"
    proc = subprocess.Popen(_cmd(out), cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    partial = out / "checkpoints" / "cards-0-0001.partial.pt"
    deadline = time.monotonic() + 120
    while not partial.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    sent = time.monotonic()
    assert proc.wait(timeout=60) == 130
    assert time.monotonic() - sent < 30
    assert "checkpoint written" in (out / "run.log").read_text()
    assert any((out / "checkpoints").glob("*.pt"))


@pytest.mark.slow
def test_ten_random_sigkills_then_finish(tmp_path: Path) -> None:
    out = tmp_path / "run"
    rng = random.Random(0)
    for _ in range(10):
        proc = subprocess.Popen(_cmd(out), cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(1.0, 6.0))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        if (out / "metrics.csv").exists():
            ids = _ids(out)  # parses: never torn
            assert len(ids) == len(set(zip(ids, range(len(ids)), strict=True)))
    subprocess.run(_cmd(out), cwd=ROOT, env=ENV, check=True, capture_output=True, timeout=600)
    ids = _ids(out)
    assert sorted(ids) == sorted(["cards-0-0001", "cards-0-0003", "lj-002-0020"] * 2)  # each clip's 2 restarts once
    assert not [p for p in out.rglob(".*") if p.is_file()]  # no temporary files left behind
    assert not list((out / "checkpoints").glob("*.partial.pt"))


def test_reopening_a_run_folder_removes_a_killed_writers_temp_files(tmp_path: Path) -> None:
    from cli import main

    out = tmp_path / "run"
    args = ["run", "--ids", "cards-0-0001", "--max_iter", "2", "--out", str(out), "--device", "cpu"]
    assert main(args) == 0
    stale = out / "plots" / ".tmp-cards-0-0001.png.x1y2z3.png"  # what a SIGKILL between write and rename leaves
    stale.write_bytes(b"half a png")
    assert main(args) == 0
    assert not stale.exists() and (out / "plots" / "cards-0-0001.png").stat().st_size > 1000
