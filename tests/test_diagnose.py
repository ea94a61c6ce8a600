"""The DS2 diagnosis' measurements on a real clip: each says what the docs claim it says."""

from __future__ import annotations

import pytest
import torch

from recon_core.attack import upsample
from recon_core.attack_presets import preset_overrides
from recon_core.case import build_case
from recon_core.config import AttackConfig, DataConfig, ModelConfig
from recon_core.data import load_selection
from recon_core.diagnose import (
    Trace,
    affine_fit,
    attack_variants,
    basin,
    clip_zero_grad_fraction,
    coarse_projection,
    ctc_feasibility,
    early_stop,
    landscape_line,
    last_modules,
    low_dim_floors,
    matched_per_unknown,
    measure_batch_norm,
    spearman,
    traced_attack,
)
from recon_core.features import front_end_for
from recon_core.models.presets import build_model

CLIP = "cards-0-0001"


def _case(layers: str | tuple[str, ...] = "output"):
    net = build_model(ModelConfig(model="ds2"))
    (utt,) = load_selection(DataConfig(ids=(CLIP,)))
    return build_case(net, front_end_for("ds2"), utt, layers, torch.device("cpu"))


def test_ctc_feasibility_counts_frames_after_the_time_stride() -> None:
    (row,) = ctc_feasibility(build_model(ModelConfig(model="ds2")), DataConfig(ids=(CLIP,)))
    assert row["output_frames"] == (row["input_frames"] + 1) // 2
    assert row["slack"] == row["output_frames"] / row["ctc_min_frames"] > 1


def test_more_layers_match_more_numbers_per_unknown() -> None:
    case = _case()
    out, last, every = (matched_per_unknown(case, x) for x in ("output", last_modules(case.model, 3), "all"))
    assert out < last < every
    assert last_modules(case.model, 1) == ("fc",)


def test_the_truth_is_the_minimum_of_the_straight_line() -> None:
    case = _case()
    start = torch.rand(case.x_true.shape) * 2 - 1
    line = landscape_line(case, start, "output", (0.0, 0.5, 1.0))
    assert line[0] > line[1] > line[2]
    assert abs(line[2]) < 1e-5


def test_eval_mode_batch_norm_changes_the_gradient_and_naive_forwards_move_running_stats() -> None:
    case = _case("all")
    bn = measure_batch_norm(case, [torch.rand(case.x_true.shape) * 2 - 1], forwards_each=5)
    assert bn["cos_train_eval_output"] < 0.9
    assert bn["running_mean_abs_shift"] > 0
    assert bn["running_var_ratio"] > 1


def test_half_the_clip_units_pass_no_gradient_at_a_random_start() -> None:
    case = _case()
    fraction = clip_zero_grad_fraction(case, torch.rand(1, *case.x_true.shape) * 2 - 1)
    assert 0.3 < fraction < 0.7


def test_traced_attack_records_every_observation() -> None:
    trace = traced_attack(_case(), AttackConfig(max_iter=12, patience=0, lr=0.05), "t", every=5)
    assert trace.steps == [0, 5, 10, 12]
    assert len(trace.history) == 12
    assert trace.loss[-1] == min(trace.history)


def test_early_stop_replays_patience_on_a_history() -> None:
    trace = Trace("t", AttackConfig(), steps=[0, 5, 10], ratio_best=[1.0, 0.9, 0.5],
                  history=[3.0, 2.0, 2.5, 2.5, 2.5, 1.0, 1.0, 1.0, 1.0, 1.0])
    stopped = early_stop(trace, 3)
    assert stopped["stop"] == 5 and stopped["stopped"] and stopped["would_improve"]
    assert not early_stop(trace, 100)["stopped"]


def test_spearman_is_one_for_monotone_pairs() -> None:
    assert abs(spearman([1.0, 2.0, 3.0, 4.0], [0.1, 0.5, 0.7, 2.0]) - 1) < 1e-9


def test_the_compared_attacks_run_without_early_stop_and_with_the_recommended_settings() -> None:
    variants = attack_variants(build_model(ModelConfig(model="ds2")), 7)
    assert all(c.patience == 0 and c.max_iter == 7 for c in variants.values())
    recommended = variants["all, recommended"]
    for key, value in preset_overrides("recommended", "ds2").items():
        if key != "patience":
            assert getattr(recommended, key) == value


def test_low_dimensional_fits_of_the_truth_beat_the_uniform_start() -> None:
    floors = low_dim_floors(_case())
    assert floors["5x9 moving average"] < floors["rank 1"] < 1
    assert floors["frame mean"] < 1


def test_basin_starts_at_the_noisy_truth_and_lowers_the_matching_loss() -> None:
    case = _case()
    cfg = AttackConfig(max_iter=10, patience=0, lr=0.01, schedule="cosine")
    out = basin(case, cfg, sigma=0.3, seed=1)
    noise = torch.randn(case.x_true.shape, generator=torch.Generator().manual_seed(1))
    uniform = torch.rand(case.x_true.shape, generator=torch.Generator().manual_seed(0)) * 2 - 1
    expected = float((0.3 * noise).abs().mean() / (uniform - case.x_true).abs().mean())
    assert abs(out["ratio_start"] - expected) < 1e-5
    assert 0 < out["loss_end"] < out["loss_start"]
    assert 0 < out["ratio_end"] < 1
    with pytest.raises(ValueError):
        basin(case, cfg.model_copy(update={"coarse_time": 2}))


def test_the_truths_coarse_projection_is_near_it_but_not_a_minimum_of_coarse_matching() -> None:
    case = _case()
    cfg = AttackConfig(max_iter=10, patience=0, lr=0.01, schedule="cosine", coarse_time=2, coarse_freq=64)
    out = coarse_projection(case, cfg, sigmas=(0.0, 0.3), seed=1)
    # independently: least squares over the upsampling of every unit grid vector (56 x 5 grid for 110 frames)
    t, f = 56, 5
    basis = upsample(torch.eye(t * f).reshape(-1, t, f), tuple(case.x_true.shape)).reshape(t * f, -1).T.double()
    z = torch.linalg.lstsq(basis, case.x_true.reshape(-1, 1).double()).solution
    x = (basis @ z).reshape(case.x_true.shape).float()
    uniform = torch.rand(case.x_true.shape, generator=torch.Generator().manual_seed(0)) * 2 - 1
    expected = float((x - case.x_true).abs().mean() / (uniform - case.x_true).abs().mean())
    projection, exact, noisy = out["projection"], out["sigma 0"], out["sigma 0.3"]
    assert abs(projection["ratio"] - expected) < 1e-5
    assert 0.2 < projection["ratio"] < 0.6  # far better than the start, but coarse
    assert projection["loss"] > 0.2  # the truth's projection does not match the gradient
    assert exact["ratio_start"] == projection["ratio"] and exact["loss_start"] == projection["loss"]
    assert exact["loss_end"] < exact["loss_start"]
    assert noisy["ratio_start"] > projection["ratio"]
    assert noisy["loss_end"] < noisy["loss_start"]
    with pytest.raises(ValueError):
        coarse_projection(case, cfg.model_copy(update={"lr": None}))


def test_affine_fit_recovers_level_and_scale() -> None:
    truth = torch.randn(20, 7, generator=torch.Generator().manual_seed(0))
    fit = affine_fit(2 * truth + 1, truth)
    assert abs(fit["slope"] - 0.5) < 1e-9 and abs(fit["correlation"] - 1) < 1e-9
    unrelated = torch.randn(200, 70, generator=torch.Generator().manual_seed(1))
    assert abs(affine_fit(unrelated, truth.repeat(10, 10))["correlation"]) < 0.05
