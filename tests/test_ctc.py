"""The differentiable CTC against PyTorch's native one, and its second derivative."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from recon_core.ctc import ctc_loss
from recon_core.text import min_ctc_frames


def _case(seed: int, b: int, t: int, s: int, repeats: bool, c: int = 6):
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(b, t, c, generator=gen, dtype=torch.float64)
    targets = torch.randint(1, c, (b, s), generator=gen)
    if repeats:
        targets[:, 1] = targets[:, 0]  # a repeated label needs a blank between its copies
    target_lengths = torch.randint(1, s + 1, (b,), generator=gen)
    target_lengths[0] = s
    needed = torch.tensor([min_ctc_frames(targets[i, : target_lengths[i]].tolist()) for i in range(b)])
    input_lengths = torch.maximum(needed, torch.randint(1, t + 1, (b,), generator=gen))
    input_lengths[0] = t
    return logits, targets, input_lengths, target_lengths


def _native(logits, targets, input_lengths, target_lengths):
    lp = logits.log_softmax(-1).transpose(0, 1)
    return F.ctc_loss(lp, targets, input_lengths, target_lengths, reduction="none", zero_infinity=False)


def _ours(logits, targets, input_lengths, target_lengths):
    return ctc_loss(logits.log_softmax(-1), targets, input_lengths, target_lengths)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("repeats", [False, True])
def test_value_and_input_gradient_equal_native(seed: int, repeats: bool) -> None:
    logits, targets, lin, lout = _case(seed, b=4, t=12, s=5, repeats=repeats)
    ours_x = logits.clone().requires_grad_(True)
    native_x = logits.clone().requires_grad_(True)
    ours = _ours(ours_x, targets, lin, lout)
    native = _native(native_x, targets, lin, lout)
    torch.testing.assert_close(ours, native, atol=1e-6, rtol=0)
    (g_ours,) = torch.autograd.grad(ours.sum(), ours_x)
    (g_native,) = torch.autograd.grad(native.sum(), native_x)
    torch.testing.assert_close(g_ours, g_native, atol=1e-6, rtol=0)


@pytest.mark.parametrize("labels", [[1, 2, 3, 4], [2, 2, 2], [1, 1, 2, 2, 3]])
def test_at_the_feasibility_limit(labels: list[int]) -> None:
    """T equal to the fewest frames an alignment needs: a single path, still exact."""
    t = min_ctc_frames(labels)
    gen = torch.Generator().manual_seed(len(labels))
    logits = torch.randn(1, t, 5, generator=gen, dtype=torch.float64, requires_grad=True)
    targets = torch.tensor([labels])
    lin, lout = torch.tensor([t]), torch.tensor([len(labels)])
    ours = _ours(logits, targets, lin, lout)
    native = _native(logits, targets, lin, lout)
    assert torch.isfinite(native).all()
    torch.testing.assert_close(ours, native, atol=1e-6, rtol=0)
    g_ours, g_native = (torch.autograd.grad(v.sum(), logits)[0] for v in (ours, native))
    torch.testing.assert_close(g_ours, g_native, atol=1e-6, rtol=0)


def test_below_the_limit_is_inf_with_zero_gradient() -> None:
    """Two frames cannot emit "1 1" (it needs a blank between): inf, as the native loss, but no NaN gradient,
    and the feasible sequence beside it keeps its exact value and gradient."""
    logits = torch.randn(2, 3, 5, dtype=torch.float64, requires_grad=True)
    targets, lin, lout = torch.tensor([[1, 1], [1, 2]]), torch.tensor([2, 3]), torch.tensor([2, 2])
    loss = _ours(logits, targets, lin, lout)
    assert loss[0].item() == float("inf")
    torch.testing.assert_close(loss[1], _native(logits, targets, lin, lout)[1])
    (grad,) = torch.autograd.grad(loss.sum(), logits)
    assert torch.equal(grad[0], torch.zeros_like(grad[0]))
    assert torch.isfinite(grad).all()


@pytest.mark.parametrize("seed", [7, 8, 9])
def test_gradgradcheck(seed: int) -> None:
    """The Hessian-vector product of the double backward against finite differences, ragged lengths."""
    logits, targets, lin, lout = _case(seed, b=3, t=7, s=3, repeats=seed % 2 == 1, c=4)
    logits.requires_grad_(True)
    assert torch.autograd.gradgradcheck(lambda x: _ours(x, targets, lin, lout), (logits,))
