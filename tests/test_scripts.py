"""The seed-compatible scripts: the original command lines, scaled down, on the embedded clips."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(("script", "lr"), [("reconstruct_ds1_run_many_sample.py", "0.5"),
                                            ("reconstruct_ds2_run_many_sample.py", "0.01")])
def test_seed_command_line(script: str, lr: str, tmp_path: Path) -> None:
    """`--batch-start 0 --batch-end 100 --batch_min_dur 1000 --batch_max_dur 2000` as in the seed's examples;
    an empty CUDA_VISIBLE_DEVICES must leave the default device on the CPU."""
    out = tmp_path / "run"
    cmd = [sys.executable, f"scripts/{script}", "--batch-start", "0", "--batch-end", "100", "--batch_min_dur", "1000",
           "--batch_max_dur", "2000", "--lr", lr, "--max_iter", "3", "--n_seeds", "2", "--top_grad_percentage",
           "0.6", "--out", str(out)]
    done = subprocess.run(cmd, cwd=ROOT, env={**os.environ, "CUDA_VISIBLE_DEVICES": ""}, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    with (out / "metrics.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert sorted({r["utt_id"] for r in rows}) == ["cards-0-0001", "cards-0-0003", "lj-002-0020"]
    assert {r["device"] for r in rows} == {"cpu"} and len(rows) == 6
    assert "top_grad_percentage: 0.6" in (out / "config.yaml").read_text()
