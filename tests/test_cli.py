"""The command line on a fresh machine: no-argument commands work, every bad input is one line and exit 2."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _cli(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cli", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300)


def test_models_and_data_need_no_arguments() -> None:
    models = _cli("models")
    assert models.returncode == 0
    assert "122,748,957" in models.stdout and "41,754,368" in models.stdout and "59,421" in models.stdout
    data = _cli("data")
    assert data.returncode == 0 and "cards-0-0001" in data.stdout and "ten of clubs" in data.stdout


def test_data_selection_flags_use_the_seed_spelling() -> None:
    out = _cli("data", "--batch_min_dur", "1000", "--batch_max_dur", "2000", "--batch-start", "1", "--batch-end", "3")
    assert out.returncode == 0
    assert "cards-0-0003" in out.stdout and "lj-002-0020" in out.stdout and "cards-0-0001" not in out.stdout


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["run", "--distance", "manhattan"], "manhattan"),
        (["run", "--lr", "-1"], "lr"),
        (["run", "--top_grad_percentage", "1.5"], "top_grad_percentage"),
        (["run", "--model", "ds3"], "ds3"),
        (["run", "--preset", "huge"], "huge"),
        (["run", "--layers", "fc9"], "fc9"),
        (["run", "--max_iter", "ten"], "ten"),
        (["run", "--device", "tpu"], "tpu"),
        (["run", "--config", "missing.yaml"], "missing.yaml"),
        (["run", "--weights", "nowhere.pt"], "nowhere.pt"),
        (["data", "--data", "/no/such/folder"], "/no/such/folder"),
        (["data", "--batch_min_dur", "9000"], "9000"),
        (["data", "--ids", "nobody-0-0000"], "nobody-0-0000"),
        (["data", "--batch_min_dur", "2000", "--batch_max_dur", "1000"], "1000"),
        (["run", "--no-such-flag"], "--no-such-flag"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args: list[str], named: str, tmp_path: Path) -> None:
    out = _cli(*args, "--out", str(tmp_path / "out")) if args[0] == "run" else _cli(*args)
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and named in lines[0], lines


def test_infeasible_clip_is_skipped_with_its_reason(tmp_path: Path, demo_copy: Path) -> None:
    """A transcript longer than the model's output frames cannot be attacked; the run says so and goes on."""
    trans = next(demo_copy.rglob("cards-0.trans.txt"))
    lines = trans.read_text().splitlines()
    uid = lines[0].split()[0]
    trans.write_text("\n".join([f"{uid} {'a b ' * 200}".strip(), *lines[1:]]) + "\n")
    out = _cli("run", "--data", str(demo_copy), "--ids", uid, "--max_iter", "2", "--out", str(tmp_path / "r"))
    assert out.returncode == 0
    assert "CTC frames" in (tmp_path / "r" / "skipped.csv").read_text()


def test_threads_flag_sets_the_run_threads(tmp_path: Path) -> None:
    """--threads wins over the environment's OMP_NUM_THREADS (2 here), which torch would use otherwise."""
    out = subprocess.run([sys.executable, "-m", "cli", "run", "--ids", "cards-0-0001", "--max_iter", "2",
                          "--threads", "3", "--out", str(tmp_path / "r")], cwd=ROOT, capture_output=True, text=True,
                         timeout=300, env={**os.environ, "OMP_NUM_THREADS": "2"})
    assert out.returncode == 0, out.stderr
    (log_file,) = (tmp_path / "r").glob("*.log")
    assert "3 torch threads" in log_file.read_text()
