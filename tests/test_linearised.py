"""The linearised oracle on real clips: CG finds the seen part of a perturbation, the central-difference Jacobian
is the one autograd differentiates (and DS2's gradient jumps at steps where DS1's is smooth), and diagnose
reports it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from cli import main
from recon_core.case import build_case
from recon_core.config import DataConfig, ModelConfig
from recon_core.data import load_selection
from recon_core.diagnose import standard_noise
from recon_core.features import front_end_for
from recon_core.linearised import FD_STEP, Linearised, adjoint_gap, conjugate_gradient, linearised_oracle
from recon_core.models.presets import build_model

CLIP = "cards-0-0001"


def _case(model: str, layers: str | tuple[str, ...] = "all"):
    (utt,) = load_selection(DataConfig(ids=(CLIP,)))
    return build_case(build_model(ModelConfig(model=model)), front_end_for(model), utt, layers, torch.device("cpu"))


def _gap(case, fd_step: float) -> float:
    """adjoint_gap at the truth along fixed noise directions (seeds 2 and 3)."""
    lin = Linearised(case, case.x_true, fd_step=fd_step)
    v = standard_noise(tuple(case.x_true.shape), 2, case.device).double()
    u = [standard_noise(tuple(g.shape), 3, case.device).double() for g in lin.gradient(lin.x)]
    return adjoint_gap(lin, v, u)


def test_conjugate_gradient_returns_the_part_of_the_solution_in_the_row_space() -> None:
    """On a singular PSD matrix CG from 0 never enters the null space: the visible part of delta, exactly."""
    a = torch.diag(torch.tensor([1.0, 3.0, 0.0], dtype=torch.float64))
    delta = torch.tensor([1.0, -2.0, 5.0], dtype=torch.float64)
    *_, z = conjugate_gradient(lambda v: a @ v, a @ delta, iters=3)
    torch.testing.assert_close(z, torch.tensor([1.0, -2.0, 0.0], dtype=torch.float64))


@pytest.mark.parametrize("model", ["ds1", "ds2"])
def test_central_difference_jacobian_is_autograds_at_the_default_step(model: str) -> None:
    assert _gap(_case(model), FD_STEP) < 1e-3


def test_ds2_gradient_jumps_where_ds1_is_smooth() -> None:
    """At a central-difference step of 1e-3 (unit direction) DS1's Jacobian still agrees with autograd to 1e-4;
    DS2's does not within 10 %: clipped units cross 0 within that distance and switch their contribution."""
    assert _gap(_case("ds1"), 1e-3) < 1e-4 and _gap(_case("ds2"), 1e-3) > 0.1


def test_oracle_removes_the_seen_part_of_a_perturbation() -> None:
    case = _case("ds1")
    delta = 0.3 * standard_noise(tuple(case.x_true.shape), 1, case.device)
    rows = linearised_oracle(Linearised(case, case.x_true), delta, iters=8)
    assert [r["iteration"] for r in rows] == list(range(9))
    assert rows[0]["visible"] == 0 and rows[-1]["visible"] > 0.1
    assert rows[-1]["ratio"] < rows[0]["ratio"] - 0.005


def test_diagnose_reports_the_oracle_beside_the_basin(tmp_path: Path) -> None:
    out = tmp_path / "d"
    argv = ["diagnose", "ds2", "--ids", CLIP, "--max-iter", "5", "--out", str(out), "--only-basin", "ds1-output"]
    assert main([*argv, "--oracle-iters", "3"]) == 0
    (clip,) = json.loads((out / "measurements.json").read_text())["clips"]
    row = clip["basin"]["ds1 output"]
    assert row["oracle_ratio"] < row["ratio_start"] and 0 < row["oracle_visible"] < 1
    assert {"gap at 0.01", "gap at 1e-05"} <= set(row)
    assert "Linearised oracle" in (out / "report.md").read_text()


def test_diagnose_refuses_negative_oracle_iterations(capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    out = tmp_path / "d"
    assert main(["diagnose", "ds2", "--ids", CLIP, "--out", str(out), "--oracle-iters", "-1"]) == 2
    assert "--oracle-iters -1 is negative" in capsys.readouterr().err
    assert not out.exists()


def test_ds2_jumps_come_from_the_conv_block() -> None:
    """The conv weights' gradients carry Hardtanh's derivative and jump at a 1e-2 step; the GRU weights' do not."""
    assert _gap(_case("ds2", ("conv1", "bn1", "conv2", "bn2")), 1e-2) > 1
    assert _gap(_case("ds2", "grus"), 1e-2) < 1e-2
