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


RECURRENT = [("ds1", "original", "lstm.weight_hh_l0"), ("ds1", "torchaudio", "net.bi_rnn.weight_hh_l0_reverse"),
             ("ds2", "original", "grus.0.weight_hh_l0")]


def _ctc_of(m: torch.nn.Module, p: dict[str, torch.Tensor], x: torch.Tensor, labels: list[int]) -> torch.Tensor:
    log_probs = m.functional(p, x, bn_train=True)
    r, t = log_probs.shape[:2]
    return ctc_loss(log_probs, torch.tensor([labels] * r), torch.full((r,), t), torch.full((r,), len(labels))).sum()


@pytest.mark.parametrize(("model", "variant", "name"), RECURRENT)
def test_recurrent_weight_gradient_equals_native(model: str, variant: str, name: str) -> None:
    """The recurrent weight's gradient is assembled in one matmul after the time loop (functional.py): per
    restart (R=2, expanded weights) and for a plain shared weight, it equals the native module's backward."""
    m = _tiny(model, variant)
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(2, 16, m.n_features, generator=gen, dtype=torch.float64)
    native = []
    for r in range(2):
        m.zero_grad()
        log_probs = m(x[r : r + 1])
        F.ctc_loss(log_probs.transpose(0, 1), torch.tensor([[3, 5, 5]]), torch.tensor([log_probs.shape[1]]),
                   torch.tensor([3]), reduction="sum").backward()
        native.append(dict(m.named_parameters())[name].grad.clone())
    per_restart = restart_params(dict(m.named_parameters()), 2, (name,))
    (ours,) = torch.autograd.grad(_ctc_of(m, per_restart, x, [3, 5, 5]), per_restart[name])
    torch.testing.assert_close(ours, torch.stack(native), atol=1e-8, rtol=1e-6)
    shared = dict(m.named_parameters())
    (plain,) = torch.autograd.grad(_ctc_of(m, shared, x[:1], [3, 5, 5]), shared[name])
    torch.testing.assert_close(plain, native[0], atol=1e-8, rtol=1e-6)


@pytest.mark.parametrize(("model", "variant", "name"),
                         [("ds1", "original", "output"), ("ds2", "original", "output"), *RECURRENT])
def test_gradgradcheck_through_tiny_models(model: str, variant: str, name: str) -> None:
    """Second derivatives of CTC(model(x), y) w.r.t. (input, a weight): the mixed term is what the attack
    differentiates, for the output layer and for each kind of recurrent weight. Numerical checks cost two
    passes per perturbed number, so the variables are a patch of the input and two columns of the weight;
    the rest stays fixed."""
    m = _tiny(model, variant)
    labels = torch.tensor([[3, 5]])
    gen = torch.Generator().manual_seed(1)
    x_full = torch.randn(1, 12, m.n_features, generator=gen, dtype=torch.float64)
    name = m.output_layer[0] if name == "output" else name
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
