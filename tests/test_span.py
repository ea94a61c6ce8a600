"""The span objective on a real clip: the shared recurrent-weight gradients reveal the span of what each weight
multiplied, the residual is zero at the truth and grows away from it, and the attack option is validated."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from cli import main
from recon_core.attack import Attack
from recon_core.attack_presets import preset_overrides
from recon_core.case import build_case
from recon_core.config import AttackConfig, DataConfig, ModelConfig
from recon_core.data import load_selection
from recon_core.diagnose import standard_noise
from recon_core.features import front_end_for
from recon_core.metrics import mae
from recon_core.models.functional import probe, restart_params
from recon_core.models.presets import build_model
from recon_core.span import row_space, span_bases, span_loss, span_residual

CLIP = "cards-0-0001"


@pytest.fixture(scope="module")
def case():
    net = build_model(ModelConfig(model="ds2"))
    (utt,) = load_selection(DataConfig(ids=(CLIP,)))
    return build_case(net, front_end_for("ds2"), utt, "all", torch.device("cpu"))


def _inputs(case, x: torch.Tensor) -> dict[str, list[torch.Tensor]]:
    params = restart_params(dict(case.model.named_parameters()), x.shape[0], ())
    with probe() as seen, torch.no_grad():
        case.model.functional(params, x, bn_train=True)
    return seen


def _span_loss(case, x: torch.Tensor) -> float:
    bases = span_bases(case.names, case.target)
    return float(span_loss(_inputs(case, x[None]), bases)[0])


def test_gradient_row_space_is_the_span_of_the_inputs(case) -> None:
    """GRU 1's input weight (192 x 360, no bias) saw 55 conv frames: its gradient has rank 55 and its rows span
    exactly those frames; the recorded hidden states lie in the span of the recurrent weight's gradient."""
    bases = span_bases(case.names, case.target)
    assert set(bases) == {f"grus.{i}.weight_{k}_l0{d}" for i in (0, 1) for k in ("ih", "hh") for d in ("", "_reverse")}
    seen = _inputs(case, case.x_true[None])
    frames = seen["grus.0.weight_ih_l0"][0]
    assert frames.shape == (1, 55, 360) and bases["grus.0.weight_ih_l0"].shape == (55, 360)
    for name, basis in bases.items():
        assert float(span_residual(seen[name][0], basis)[0]) < 1e-9, name
    # a random subspace of the same size does not contain them
    other = row_space(torch.randn(55, 360, generator=torch.Generator().manual_seed(0)))
    assert float(span_residual(frames, other)[0]) > 0.5


def test_span_loss_is_zero_at_the_truth_and_grows_with_the_error(case) -> None:
    noise = standard_noise(tuple(case.x_true.shape), 1, case.device)
    losses = [_span_loss(case, case.x_true + s * noise) for s in (0.0, 0.1, 0.3, 1.0)]
    assert losses[0] < 1e-9
    assert losses[0] < losses[1] < losses[2] < losses[3]


def test_span_loss_ignores_level_and_scale(case) -> None:
    """Train-mode batch norm after the first convolution hides x -> a x + c (a > 0): so does the objective (the
    scale exactly up to batch norm's epsilon, the level up to the convolution's zero padding at the edges)."""
    x = case.x_true + 0.3 * standard_noise(tuple(case.x_true.shape), 1, case.device)
    assert _span_loss(case, 2.5 * x) == pytest.approx(_span_loss(case, x), rel=1e-4)
    assert _span_loss(case, x - 0.7) == pytest.approx(_span_loss(case, x), rel=0.03)
    assert _span_loss(case, -x) > 1.5 * _span_loss(case, x)


def test_span_attack_moves_towards_the_truth_without_parameter_gradients(case) -> None:
    """From truth + 0.3 noise the span attack lowers both its loss and the feature error; it builds no
    per-restart weight copies (no double backward)."""
    cfg = AttackConfig(objective="span", layers="all", lr=0.01, schedule="cosine", max_iter=60, patience=0)
    attack = Attack(case, cfg, cfg.lr)
    assert not any(p.requires_grad for p in attack._params(2).values())
    start = case.x_true + 0.3 * standard_noise(tuple(case.x_true.shape), 1, case.device)
    state = attack.start([0])
    state.x, state.x_init, state.best_x = start[None].clone(), start[None].clone(), start[None].clone()
    end = attack.run(state)
    assert float(end.best_loss[0]) < 0.2 * _span_loss(case, start)
    assert mae(end.best_x[0], case.x_true) < mae(start, case.x_true)


def test_span_objective_needs_a_recurrent_weight(capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    out = tmp_path / "r"
    assert main(["run", "--model", "ds2", "--ids", CLIP, "--objective", "span", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "objective span needs a recurrent weight" in err and "'output'" in err
    assert not out.exists()


def test_diagnose_only_basin_reports_the_span_attack_near_the_truth(tmp_path: Path) -> None:
    """`diagnose ds2 --only-basin NAMES`: those basin attacks alone, in report and JSON; the span attack lowers
    its residual and the error from truth + 0.3 noise."""
    out = tmp_path / "d"
    argv = ["diagnose", "ds2", "--ids", CLIP, "--max-iter", "20", "--out", str(out), "--only-basin"]
    assert main([*argv, "ds2-all-span", "ds2-output"]) == 0
    (clip,) = json.loads((out / "measurements.json").read_text())["clips"]
    assert set(clip) == {"utt_id", "frames", "basin"}
    assert set(clip["basin"]) == {"ds2 output", "ds2 all, span"}
    span = clip["basin"]["ds2 all, span"]
    assert span["loss_end"] < 0.5 * span["loss_start"] and span["ratio_end"] < span["ratio_start"]
    report = (out / "report.md").read_text()
    assert "### Basin" in report and "| ds2 all, span |" in report and "### Attacks" not in report


def test_diagnose_refuses_an_unknown_basin_attack(capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    out = tmp_path / "d"
    assert main(["diagnose", "ds2", "--ids", CLIP, "--out", str(out), "--only-basin", "ds2-span"]) == 2
    assert "--only-basin 'ds2-span' is not a basin attack; choose from ds2-output" in capsys.readouterr().err
    assert not out.exists()


def test_span_preset_is_for_ds2_only(capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    out = tmp_path / "r"
    assert main(["run", "--model", "ds1", "--ids", CLIP, "--preset-attack", "span", "--out", str(out)]) == 2
    assert "attack preset 'span' has no settings for ds1; for ds1 use one of original, recommended" in (
        capsys.readouterr().err)
    assert not out.exists()
    assert preset_overrides("span", "ds2")["objective"] == "span"


def test_span_restarts_batched_follow_their_own_trajectories(case) -> None:
    """Restarts share the weights under the span objective and still never interact: restart 1 of a batched
    run of two ends where a run of restart 1 alone ends."""
    cfg = AttackConfig(objective="span", layers="all", init="mean", lr=0.05, schedule="cosine", max_iter=8,
                       patience=0)
    attack = Attack(case, cfg, cfg.lr)
    both, alone = attack.run(attack.start([0, 1])), attack.run(attack.start([1]))
    torch.testing.assert_close(both.best_loss[1:], alone.best_loss, rtol=1e-4, atol=1e-7)
    # Adam divides each step by the root of its squared-gradient average, so where a gradient component is near
    # zero a float32 reduction-order difference between batch shapes (R=2 vs R=1) can move that value by up to a
    # step: the features agree to a fifth of one step (lr 0.05), the restarts differ by far more
    torch.testing.assert_close(both.best_x[1:], alone.best_x, rtol=0, atol=0.01)
    assert (both.best_x[0] - both.best_x[1]).abs().mean() > 0.05
