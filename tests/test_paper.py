"""`asr-recon paper` in miniature: every section's files and columns, numbers that come back the same on a
rerun (which reuses the run folders, the study and the cost cache), and the sweep plan's bookkeeping."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from cli import build_parser
from paper.budget import BUDGETS
from paper.build import PaperOptions, build_paper
from paper.cost import COST_COLUMNS
from paper.listening import LISTENING_COLUMNS
from paper.plan import sweep_points
from paper.reference import reference_for
from paper.studies import BEST_COLUMNS, IMPORTANCE_COLUMNS, TRIAL_COLUMNS
from paper.sweeps import SWEEP_COLUMNS

TABLES = {"ds1_sweeps": SWEEP_COLUMNS, "ds2_sweeps": SWEEP_COLUMNS, "ds2_failure_modes": SWEEP_COLUMNS,
          "settings": SWEEP_COLUMNS, "trials": TRIAL_COLUMNS, "budget": ("setting", "value"),
          "importances": IMPORTANCE_COLUMNS, "best_configs": BEST_COLUMNS, "cost": COST_COLUMNS,
          "listening": LISTENING_COLUMNS}
SECTIONS = ("## 1. DS1 reproduction", "## 2. DS2", "## 3. Sensitivity", "## 4. Cost", "## 5. Listening")


def _header(path: Path) -> list[str]:
    with path.open(newline="") as f:
        return next(csv.reader(f))


def _snapshot(out: Path) -> dict[str, str]:
    return {p.name: p.read_text() for p in sorted((out / "tables").glob("*.csv"))}


@pytest.mark.slow
def test_miniature_paper_writes_every_section_and_reruns_identically(tmp_path: Path) -> None:
    out = tmp_path / "paper"
    report = build_paper(PaperOptions(out, BUDGETS["tiny-test"], device="cpu"))

    text = report.read_text()
    for section in SECTIONS:
        assert section in text
    for name, columns in TABLES.items():
        assert _header(out / "tables" / f"{name}.csv")[: len(columns)] == list(columns), name
        tex = (out / "tables" / f"{name}.tex").read_text()
        assert r"\toprule" in tex and r"\bottomrule" in tex
    for link in [line.split("](")[1].rstrip(")") for line in text.splitlines() if line.startswith("![")]:
        assert (out / link).is_file(), link
    provenance = json.loads((out / "provenance.json").read_text())
    assert {"git", "environment", "budget", "seeds", "timings_s", "runs", "cost_jobs"} <= set(provenance)
    assert provenance["environment"]["device"] == "cpu"
    assert list((out / "audio").glob("*_true.wav")) and list((out / "audio").glob("*_recon.wav"))
    with (out / "tables" / "cost.csv").open(newline="") as f:
        assert all(row["device"] for row in csv.DictReader(f))
    with (out / "tables" / "ds1_sweeps.csv").open(newline="") as f:
        attacked = [row for row in csv.DictReader(f) if row["clips"] != "0"]
    assert attacked and all(row["mae_ratio_mean"] and row["mae_ratio_uniform_mean"] for row in attacked)
    assert {row["value"] for row in attacked if row["ref_feature_mae_raw"]} >= {"0.001", "0.2", "2-3 s"}

    first = _snapshot(out)
    metrics = out / "runs" / "ds1-base" / "metrics.csv"
    stamp = metrics.stat().st_mtime_ns
    build_paper(PaperOptions(out, BUDGETS["tiny-test"], device="cpu"))
    assert _snapshot(out) == first
    assert metrics.stat().st_mtime_ns == stamp  # reused, not attacked again


def test_equal_settings_share_a_run_folder_and_carry_the_original_number() -> None:
    points = sweep_points("ds1", BUDGETS["small"], None)
    runs = {(p.sweep, p.value): p.run for p in points}
    assert runs[("lr", "0.5")] == runs[("top_grad", "1")] == runs[("distance", "cosine")] == "ds1-base"
    assert len({p.run for p in points}) == len({p.cfg for p in points})
    assert reference_for("ds1", "lr", "0.001").feature_mae_raw == 10.04
    assert reference_for("ds1", "duration", "2-3 s").random_start_mae_raw == 8.30
    assert reference_for("ds2", "lr", "0.5") is None
    settings = [p for p in points if p.sweep == "settings"]
    assert settings[0].run == "ds1-base"  # DS1's sweeps are the original settings, a reproduction


def test_cli_paper_flags() -> None:
    args = build_parser().parse_args(["paper", "--out", "x", "--budget", "small", "--storage", "a.db"])
    assert (args.out, args.budget, args.storage) == (Path("x"), "small", "a.db")
