"""CTC loss from plain differentiable torch ops, so that its gradient has a gradient.

PyTorch's `ctc_loss` has no double backward, yet gradient matching differentiates the parameter gradient
of the loss once more with respect to the input. This is the standard alpha (forward) recursion in log
space over the blank-extended label sequence, batched over a leading dimension.

Impossible paths use a large finite negative number instead of -inf: `logsumexp` over all -inf entries
has a NaN gradient, a finite floor has an exact zero one.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

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


def ctc_loss(
    log_probs: torch.Tensor,
    targets: torch.Tensor,
    input_lengths: torch.Tensor,
    target_lengths: torch.Tensor,
    blank: int = BLANK,
) -> torch.Tensor:
    """Negative log-likelihood per sequence, (B,), like `F.ctc_loss(..., reduction='none')`.

    log_probs (B, T, C) are log-softmax outputs (batch first, unlike PyTorch's), targets (B, S) padded
    labels, lengths (B,). An infeasible sequence (too few frames) gets a loss near 1e30, not inf.
    The time loop is a handful of ops per frame (it is a large share of an attack step on small models).
    """
    b, t_max, _ = log_probs.shape
    ext = _extend(targets, blank)
    n = ext.shape[1]
    emit = log_probs.gather(2, ext.unsqueeze(1).expand(b, t_max, n))  # (B, T, 2S+1)
    skip = _skip_penalty(ext, blank, log_probs.dtype)
    ragged = bool((input_lengths != t_max).any())
    alpha = torch.cat([emit[:, 0, :2], emit.new_full((b, n - 2), NEG)], dim=1) if n > 1 else emit[:, 0]
    for t in range(1, t_max):
        padded = F.pad(alpha, (2, 0), value=NEG)
        paths = torch.stack([alpha, padded[:, 1:-1], padded[:, :-2] + skip])
        step = torch.logsumexp(paths, dim=0) + emit[:, t]
        alpha = torch.where((t < input_lengths)[:, None], step, alpha) if ragged else step
    last = alpha.gather(1, (2 * target_lengths)[:, None]).squeeze(1)
    before = alpha.gather(1, (2 * target_lengths - 1).clamp(min=0)[:, None]).squeeze(1)
    before = torch.where(target_lengths > 0, before, NEG)
    return -torch.logaddexp(last, before)
