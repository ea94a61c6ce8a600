"""The DS2 remedies as attack options: each changes the result on a real clip in the documented direction."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from cli import main
from recon_core.attack import Attack, restart_seeds
from recon_core.attack_presets import ATTACK_PRESETS, preset_overrides
from recon_core.case import build_case
from recon_core.config import AttackConfig, DataConfig, ModelConfig
from recon_core.data import load_selection
from recon_core.errors import InputError
from recon_core.features import front_end_for
from recon_core.models.functional import clipped_relu, probe, surrogate_clip
from recon_core.models.presets import build_model
from recon_core.regularisers import batch_norm_gap

CLIP = "cards-0-0001"


def _case(layers: str = "output"):
    net = build_model(ModelConfig(model="ds2"))
    (utt,) = load_selection(DataConfig(ids=(CLIP,)))
    return build_case(net, front_end_for("ds2"), utt, layers, torch.device("cpu"))


def _mae(case, x: torch.Tensor) -> float:
    return float((x - case.x_true).abs().mean())


def _attack(case, **kw):
    cfg = AttackConfig(**{"patience": 0, **kw})
    attack = Attack(case, cfg, cfg.resolved_lr("ds2"))
    return attack, attack.run(attack.start(restart_seeds(cfg)))


def test_mean_init_starts_nearer_the_truth_than_the_uniform_start() -> None:
    case = _case()
    uniform = _attack(case, max_iter=1, init="uniform")[1].x_init
    mean = _attack(case, max_iter=1, init="mean", n_seeds=2)[1].x_init
    assert _mae(case, mean[0]) < 0.9 * _mae(case, uniform[0])
    assert 0.05 < float(mean.std()) < 0.2
    assert not torch.equal(mean[0], mean[1])


def test_coarse_grid_optimises_fewer_values_and_overfits_less() -> None:
    """Full resolution drives the matching loss lower yet drifts from the truth; the coarse grid does not."""
    case = _case()
    common = dict(max_iter=40, init="mean", lr=0.05, schedule="cosine")
    _, fine = _attack(case, **common)
    attack, coarse = _attack(case, coarse_time=2, coarse_freq=64, **common)
    assert coarse.x.shape[1:] == (56, 5) and coarse.best_x.shape == fine.best_x.shape  # 110 x 257 features
    corners = (slice(None), [0, -1], [0, -1])
    torch.testing.assert_close(attack.features(coarse.x)[corners], coarse.x[corners])  # the grid spans the clip
    assert _mae(case, coarse.best_x[0]) < _mae(case, fine.best_x[0])
    assert float(fine.best_loss[0]) < float(coarse.best_loss[0])


def test_surrogate_clip_leaks_only_into_the_outer_gradient() -> None:
    x = torch.tensor([-1.0, 5.0, 25.0], requires_grad=True)
    with surrogate_clip(0.1):
        y = clipped_relu(x)
    assert torch.equal(y, torch.tensor([0.0, 5.0, 20.0]))
    (inner,) = torch.autograd.grad(y.sum(), x, create_graph=True)
    assert torch.equal(inner, torch.tensor([0.0, 1.0, 0.0]))
    with surrogate_clip(0.1):
        y = clipped_relu(x)
    (outer,) = torch.autograd.grad(y.sum(), x)
    assert torch.allclose(outer, torch.tensor([0.1, 1.0, 0.1]))


def test_clip_slope_keeps_the_objective_and_changes_the_input_gradient() -> None:
    case = _case("all")
    exact, leaky = (Attack(case, AttackConfig(clip_slope=s), 0.05) for s in (0.0, 0.2))
    at_truth = leaky.losses(case.x_true.unsqueeze(0), leaky._params(1))[0]
    assert float(at_truth.detach()) < 1e-5  # the matched gradient is still the exact one
    x = (torch.rand(1, *case.x_true.shape, generator=torch.Generator().manual_seed(0)) * 2 - 1).requires_grad_()
    grads = [torch.autograd.grad(a.losses(x, a._params(1))[0].sum(), x)[0] for a in (exact, leaky)]
    values = [float(a.losses(x, a._params(1))[0].detach()) for a in (exact, leaky)]
    assert values[0] == pytest.approx(values[1])  # the forward is exact
    assert not torch.allclose(grads[0], grads[1])


def test_recommended_preset_beats_the_original_on_ds2() -> None:
    case = _case()
    _, original = _attack(case, max_iter=40)
    _, recommended = _attack(case, **{**preset_overrides("recommended", "ds2"), "max_iter": 40})
    assert _mae(case, recommended.best_x[0]) < 0.9 * _mae(case, original.best_x[0])


def test_presets_are_applied_at_the_cli_and_recorded(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert preset_overrides("original", "ds2") == {}
    with pytest.raises(InputError, match="original, recommended"):
        preset_overrides("best", "ds2")
    out = tmp_path / "run"
    assert main(["run", "--model", "ds2", "--ids", CLIP, "--preset-attack", "recommended", "--max_iter", "2",
                 "--lr", "0.02", "--out", str(out), "--device", "cpu"]) == 0
    attack = yaml.safe_load((out / "config.yaml").read_text())["attack"]
    assert attack["lr"] == 0.02  # a flag given beats the preset
    for key, value in ATTACK_PRESETS["recommended"]["ds2"].items():
        if key != "lr":
            assert attack[key] == value
    capsys.readouterr()
    assert main(["diagnose", "ds2", "--runs", str(out)]) == 0
    row = capsys.readouterr().out.splitlines()[-1].split("|")
    own, uniform = float(row[-3]), float(row[-2])
    assert uniform < own  # the mean init starts nearer the truth than the uniform start the original used


def _bn_gap(case, x: torch.Tensor) -> float:
    attack = Attack(case, AttackConfig(), 0.05)
    with probe() as seen:
        attack.losses(x.unsqueeze(0), attack._params(1))
    return float(batch_norm_gap(seen, case.bn_stats)[0])


def test_bn_stats_prior_pulls_the_batch_statistics_towards_the_clients() -> None:
    """The client's batch statistics are recorded with its gradient; the prior is 0 at the truth and, with a
    weight, the attack ends with statistics nearer the client's than without it."""
    case = _case()
    assert set(case.bn_stats) == {f"{p}.{s}" for p in ("bn1", "bn2", "bns.0", "bn_out") for s in ("mean", "var")}
    assert _bn_gap(case, case.x_true) < 1e-10
    _, plain = _attack(case, max_iter=30, lr=0.05)
    _, prior = _attack(case, max_iter=30, lr=0.05, bn_stats_weight=1.0)
    assert _bn_gap(case, prior.x[0]) < 0.5 * _bn_gap(case, plain.x[0])


def test_bn_stats_prior_needs_batch_norm(capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    assert main(["run", "--model", "ds1", "--ids", CLIP, "--bn_stats_weight", "1", "--out", str(tmp_path / "r")]) == 2
    assert "bn_stats_weight 1.0 needs a model with batch norm" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()
