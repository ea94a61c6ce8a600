"""The functional (per-restart) models against PyTorch's own modules, and their double backward."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from recon_core.case import parameter_gradients
from recon_core.config import ModelConfig
from recon_core.ctc import ctc_loss
from recon_core.models.functional import context_window, restart_params
from recon_core.models.presets import PRESETS, build_model, count_parameters


def _tiny(model: str, variant: str = "original") -> torch.nn.Module:
    return build_model(ModelConfig(model=model, variant=variant, preset="tiny")).double()


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_functional_ds1_and_ds2_equal_native_modules(mode: str) -> None:
    """One restart (R=1, the client's batch of one): the functional forward is the native forward."""
    gen = torch.Generator().manual_seed(0)
    for model, n_feat in (("ds1", 26), ("ds2", 257)):
        m = _tiny(model).train(mode == "train")
        x = torch.randn(1, 30, n_feat, generator=gen, dtype=torch.float64)
        with torch.no_grad():
            ours = m.functional(dict(m.named_parameters()), x, bn_train=mode == "train")
            torch.testing.assert_close(ours, m(x), atol=1e-9, rtol=1e-9)


def test_functional_torchaudio_ds1_equals_torchaudio() -> None:
    m = _tiny("ds1", "torchaudio")
    x = torch.randn(1, 25, 26, dtype=torch.float64)
    with torch.no_grad():
        theirs = m.net(context_window(x, m.n_context).unsqueeze(1))
        torch.testing.assert_close(m.functional(dict(m.named_parameters()), x), theirs, atol=1e-9, rtol=1e-9)


@pytest.mark.parametrize("model", ["ds1", "ds2"])
def test_restarts_are_independent(model: str) -> None:
    """R inputs through R weight copies give what each gives alone (batch norm per restart included)."""
    m = _tiny(model)
    x = torch.randn(3, 24, m.n_features, dtype=torch.float64)
    p = dict(m.named_parameters())
    with torch.no_grad():
        together = m.functional(p, x)
        alone = torch.cat([m.functional(p, x[r : r + 1]) for r in range(3)])
    torch.testing.assert_close(together, alone, atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("model", ["ds1", "ds2"])
def test_gradgradcheck_through_tiny_models(model: str) -> None:
    """Second derivatives of CTC(model(x), y) w.r.t. (input, output-layer weights): the mixed term is what the
    attack differentiates. Numerical checks cost two passes per perturbed number, so the variables are a
    patch of the input and two columns of the output weight; the rest stays fixed."""
    m = _tiny(model)
    labels = torch.tensor([[3, 5]])
    gen = torch.Generator().manual_seed(1)
    x_full = torch.randn(1, 12, m.n_features, generator=gen, dtype=torch.float64)
    name = m.output_layer[0]
    p = restart_params(dict(m.named_parameters()), 1, (name,))
    w_full = p[name].detach()
    x_patch = x_full[:, 4:6, :6].clone().requires_grad_(True)
    w_cols = w_full[..., :2].clone().requires_grad_(True)

    def loss(x_: torch.Tensor, w_: torch.Tensor) -> torch.Tensor:
        x = torch.cat([x_full[:, :4], torch.cat([x_, x_full[:, 4:6, 6:]], dim=2), x_full[:, 6:]], dim=1)
        log_probs = m.functional({**p, name: torch.cat([w_, w_full[..., 2:]], dim=-1)}, x, bn_train=True)
        return ctc_loss(log_probs, labels, torch.tensor([log_probs.shape[1]]), torch.tensor([2]))

    assert torch.autograd.gradgradcheck(loss, (x_patch, w_cols), eps=1e-6, atol=1e-5, rtol=1e-3, fast_mode=True)


def test_parameter_gradient_matches_native_backward() -> None:
    """The shared gradient of the helper equals an ordinary backward through the native modules."""
    m = _tiny("ds2")
    x = torch.randn(1, 40, 257, dtype=torch.float64)
    labels = torch.tensor([4, 9, 9, 2])
    names = ("fc.weight", "grus.0.weight_hh_l0", "conv1.weight")
    p = restart_params(dict(m.named_parameters()), 1, names)
    ours = parameter_gradients(m, p, names, x, labels, bn_train=True, create_graph=True)
    lp = m(x)
    native = F.ctc_loss(lp.transpose(0, 1), labels[None], torch.tensor([lp.shape[1]]), torch.tensor([4]))
    params = dict(m.named_parameters())
    expected = torch.autograd.grad(native * 4, [params[n] for n in names])  # 'mean' divides by target length
    for a, b in zip(ours, expected, strict=True):
        torch.testing.assert_close(a[0], b, atol=1e-8, rtol=1e-6)
    assert all(g.requires_grad for g in ours)


def test_full_presets_have_the_original_sizes() -> None:
    sizes = {}
    for (model, variant, preset), make in PRESETS.items():
        if preset == "full" and variant == "original":
            net = make()
            sizes[model] = (count_parameters(net), count_parameters(net, net.output_layer))
    assert sizes["ds1"] == (122_748_957, 59_421)  # attack reference: about 122.7M; output layer 59,421
    assert sizes["ds2"] == (41_754_368, 23_200)  # about 41.7M; final FC 23,200


def test_seeded_weights_are_reproducible(tmp_path) -> None:
    a = build_model(ModelConfig(weight_seed=3))
    b = build_model(ModelConfig(weight_seed=3))
    c = build_model(ModelConfig(weight_seed=4))
    assert torch.equal(a.out.weight, b.out.weight) and not torch.equal(a.out.weight, c.out.weight)
    path = tmp_path / "w.pt"
    torch.save(c.state_dict(), path)
    d = build_model(ModelConfig(weight_seed=3, weights=path))
    assert torch.equal(d.out.weight, c.out.weight)
