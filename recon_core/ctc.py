"""CTC loss whose gradient has a gradient, at the speed of PyTorch's fused kernel for the first order.

Gradient matching differentiates the parameter gradient of the loss once more with respect to the input,
and PyTorch's `ctc_loss` has no double backward. Here the value and first derivative come from the fused
kernel (`F.ctc_loss`); the second derivative is exact too. With `nll = -log Z(lp)` over all alignments:

- d nll / d lp = -occupancy: the posterior probability that the alignment emits class k at frame t (the
  native kernel returns `exp(lp) - occupancy`, the gradient with respect to logits, so occupancy is read off);
- the Hessian of log Z is symmetric, so its product with any direction u is the directional derivative of
  the occupancy along u: one loop over time through the alpha and beta recursions and their derivatives
  (`occupancy` below), run only in the double backward and without recording an autograd graph.

Impossible paths use a large finite negative number instead of -inf inside the recursions, so that their
derivatives are exact zeros rather than NaN. An infeasible sequence (too few frames) has loss inf
and a zero gradient.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.autograd.function import FunctionCtx, once_differentiable

from recon_core.text import BLANK

#: log-probability of an unreachable state (finite: see the module docstring)
NEG = -1e30


def _extend(targets: torch.Tensor, blank: int) -> torch.Tensor:
    """(B, S) labels -> (B, 2S+1) with a blank before, between and after them."""
    b, s = targets.shape
    ext = targets.new_full((b, 2 * s + 1), blank)
    ext[:, 1::2] = targets
    return ext


def _skip_penalty(ext: torch.Tensor, blank: int, dtype: torch.dtype) -> torch.Tensor:
    """0 where state s may be entered from s-2 (a label that differs from the label two states back), NEG
    elsewhere: added to the shifted alphas, it is a mask that costs one addition."""
    allowed = torch.zeros_like(ext, dtype=torch.bool)
    allowed[:, 2:] = (ext[:, 2:] != blank) & (ext[:, 2:] != ext[:, :-2])
    return torch.where(allowed, 0.0, NEG).to(dtype)


def _recursion(emit: torch.Tensor, emit_dir: torch.Tensor, skip: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Log forward variables alpha (B, T, N), each including its frame's emission, and their directional
    derivatives when the emissions move along `emit_dir`: the derivative of a log-sum-exp is the softmax-
    weighted mean of the derivatives it sums, so both advance in one loop over time without autograd."""
    b, t_max, n = emit.shape
    alpha = torch.cat([emit[:, 0, :2], emit.new_full((b, max(n - 2, 0)), NEG)], dim=1)
    d_alpha = torch.cat([emit_dir[:, 0, :2], emit_dir.new_zeros(b, max(n - 2, 0))], dim=1)
    alphas, d_alphas = [alpha], [d_alpha]
    for t in range(1, t_max):
        padded = F.pad(alpha, (2, 0), value=NEG)
        paths = torch.stack([alpha, padded[:, 1:-1], padded[:, :-2] + skip])
        total = torch.logsumexp(paths, dim=0)
        d_padded = F.pad(d_alpha, (2, 0))
        d_paths = torch.stack([d_alpha, d_padded[:, 1:-1], d_padded[:, :-2]])
        d_alpha = (torch.exp(paths - total) * d_paths).sum(0) + emit_dir[:, t]
        alpha = total + emit[:, t]
        alphas.append(alpha)
        d_alphas.append(d_alpha)
    return torch.stack(alphas, dim=1), torch.stack(d_alphas, dim=1)


def _reverse(x: torch.Tensor, lengths: torch.Tensor, dim: int) -> torch.Tensor:
    """Reverse each sequence's first `lengths[b]` entries along `dim` (1 or 2); the rest is left to masks."""
    n = x.shape[dim]
    index = (lengths[:, None] - 1 - torch.arange(n, device=x.device)).clamp(min=0)  # (B, n)
    shape = [x.shape[0], 1, 1]
    shape[dim] = n
    return x.gather(dim, index.view(shape).expand_as(x))


def min_frames(targets: torch.Tensor, target_lengths: torch.Tensor) -> torch.Tensor:
    """(B,) fewest frames an alignment needs: one per label plus a blank between each repeated pair."""
    index = torch.arange(targets.shape[1] - 1, device=targets.device)[None]
    repeats = (targets[:, 1:] == targets[:, :-1]) & (index < target_lengths[:, None] - 1)
    return target_lengths + repeats.sum(1)


def occupancy(
    log_probs: torch.Tensor,
    direction: torch.Tensor,
    targets: torch.Tensor,
    input_lengths: torch.Tensor,
    target_lengths: torch.Tensor,
    blank: int = BLANK,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Posterior occupancy (B, T, C) = -d nll / d log_probs, and its directional derivative along
    `direction` (B, T, C), i.e. the Hessian of log Z times the direction. Zero past each input length.

    Beta is the alpha recursion run on each sequence reversed in time and in label order (the skip rule is
    symmetric), batched with alpha. A state's log posterior is alpha + beta - emission - log Z; its
    derivative is the same sum of derivatives.
    """
    b, t_max, c = log_probs.shape
    ext = _extend(targets, blank)
    n_ext = ext.shape[1]
    states = 2 * target_lengths + 1
    valid_s = torch.arange(n_ext, device=ext.device)[None] < states[:, None]  # (B, N)
    valid_t = torch.arange(t_max, device=ext.device)[None] < input_lengths[:, None]  # (B, T)
    index = ext.unsqueeze(1).expand(b, t_max, n_ext)
    emit = torch.where(valid_s[:, None], log_probs.gather(2, index), NEG)
    emit_dir = torch.where(valid_s[:, None], direction.gather(2, index), 0.0)

    def backwards(x: torch.Tensor) -> torch.Tensor:  # an involution: also maps reversed results back
        return _reverse(_reverse(x, input_lengths, 1), states, 2)

    ext_rev = _reverse(ext.unsqueeze(1), states, 2).squeeze(1)
    skip = _skip_penalty(torch.cat([ext, ext_rev]), blank, log_probs.dtype)
    both, d_both = _recursion(torch.cat([emit, torch.where(valid_s[:, None], backwards(emit), NEG)]),
                              torch.cat([emit_dir, backwards(emit_dir)]), skip)
    alpha, beta, d_alpha, d_beta = both[:b], backwards(both[b:]), d_both[:b], backwards(d_both[b:])
    last = (input_lengths - 1).view(b, 1, 1).expand(b, 1, n_ext)
    ends = torch.stack([states - 1, (states - 2).clamp(min=0)], dim=1)
    end_alpha = alpha.gather(1, last).squeeze(1).gather(1, ends)
    end_alpha = torch.where(torch.stack([target_lengths >= 0, target_lengths > 0], dim=1), end_alpha, NEG)
    log_z = torch.logsumexp(end_alpha, dim=1)
    d_log_z = (torch.softmax(end_alpha, dim=1) * d_alpha.gather(1, last).squeeze(1).gather(1, ends)).sum(1)
    keep = valid_t[:, :, None] & valid_s[:, None]
    post = torch.where(keep, torch.exp(alpha + beta - emit - log_z[:, None, None]), 0.0)
    d_post = post * (d_alpha + d_beta - emit_dir - d_log_z[:, None, None])
    occ = log_probs.new_zeros(b, t_max, c).scatter_add(2, index, post)
    return occ, log_probs.new_zeros(b, t_max, c).scatter_add(2, index, d_post)


class _CTCGradient(torch.autograd.Function):
    """d nll / d log_probs scaled by the upstream gradient, with the exact Hessian-vector product backward."""

    @staticmethod
    def forward(ctx: FunctionCtx, log_probs: torch.Tensor, occ: torch.Tensor, grad_out: torch.Tensor,
                lengths: tuple[torch.Tensor, torch.Tensor, torch.Tensor], blank: int) -> torch.Tensor:
        ctx.save_for_backward(log_probs, occ, grad_out)
        ctx.lengths, ctx.blank = lengths, blank
        return -grad_out[:, None, None] * occ

    @staticmethod
    @once_differentiable
    def backward(ctx: FunctionCtx, u: torch.Tensor) -> tuple[torch.Tensor, None, torch.Tensor, None, None]:
        log_probs, occ, grad_out = ctx.saved_tensors
        targets, input_lengths, target_lengths = ctx.lengths
        feasible = occ.flatten(1).abs().sum(1) > 0
        _, hvp = occupancy(log_probs, u, targets, input_lengths, target_lengths, ctx.blank)
        hvp = torch.where(feasible[:, None, None], hvp, 0.0)
        return -grad_out[:, None, None] * hvp, None, -(occ * u).sum((1, 2)), None, None


class _CTC(torch.autograd.Function):
    """The loss from the fused kernel; the occupancy (read off its gradient) is kept for the backward."""

    @staticmethod
    def forward(ctx: FunctionCtx, log_probs: torch.Tensor, targets: torch.Tensor, input_lengths: torch.Tensor,
                target_lengths: torch.Tensor, blank: int) -> torch.Tensor:
        with torch.enable_grad():
            lp = log_probs.detach().requires_grad_(True)
            nll = F.ctc_loss(lp.transpose(0, 1), targets, input_lengths, target_lengths, blank, reduction="none",
                             zero_infinity=True)
            (native,) = torch.autograd.grad(nll.sum(), lp)
        feasible = input_lengths >= min_frames(targets, target_lengths)
        t_max = log_probs.shape[1]
        frames = torch.arange(t_max, device=log_probs.device)[None] < input_lengths[:, None]
        keep = (feasible[:, None] & frames)[:, :, None]
        occ = torch.where(keep, log_probs.detach().exp() - native, 0.0)
        ctx.save_for_backward(log_probs, occ)
        ctx.lengths, ctx.blank = (targets, input_lengths, target_lengths), blank
        return torch.where(feasible, nll.detach(), torch.inf)

    @staticmethod
    def backward(ctx: FunctionCtx, grad_out: torch.Tensor) -> tuple[torch.Tensor, None, None, None, None]:
        log_probs, occ = ctx.saved_tensors
        return _CTCGradient.apply(log_probs, occ, grad_out, ctx.lengths, ctx.blank), None, None, None, None


def ctc_loss(
    log_probs: torch.Tensor,
    targets: torch.Tensor,
    input_lengths: torch.Tensor,
    target_lengths: torch.Tensor,
    blank: int = BLANK,
) -> torch.Tensor:
    """Negative log-likelihood per sequence, (B,), like `F.ctc_loss(..., reduction='none')`, twice
    differentiable with respect to log_probs.

    log_probs (B, T, C) are log-softmax outputs (batch first, unlike PyTorch's), targets (B, S) padded
    labels, lengths (B,). An infeasible sequence (too few frames) gets loss inf and a zero gradient.
    """
    return _CTC.apply(log_probs, targets, input_lengths, target_lengths, blank)
