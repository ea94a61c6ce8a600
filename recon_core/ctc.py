"""CTC loss from plain differentiable torch ops, so that its gradient has a gradient.

PyTorch's `ctc_loss` has no double backward, yet gradient matching differentiates the parameter gradient
of the loss once more with respect to the input. This is the standard alpha (forward) recursion in log
space over the blank-extended label sequence, batched over a leading dimension.

Impossible paths use a large finite negative number instead of -inf: `logsumexp` over all -inf entries
has a NaN gradient, a finite floor has an exact zero one.
"""

from __future__ import annotations

import torch

from recon_core.text import BLANK

#: log-probability of an unreachable state (finite: see the module docstring)
NEG = -1e30


def _extend(targets: torch.Tensor, blank: int) -> torch.Tensor:
    """(B, S) labels -> (B, 2S+1) with a blank before, between and after them."""
    b, s = targets.shape
    ext = targets.new_full((b, 2 * s + 1), blank)
    ext[:, 1::2] = targets
    return ext


def _skip_allowed(ext: torch.Tensor, blank: int) -> torch.Tensor:
    """State s may be entered from s-2 when it is a label that differs from the label two states back."""
    allowed = torch.zeros_like(ext, dtype=torch.bool)
    allowed[:, 2:] = (ext[:, 2:] != blank) & (ext[:, 2:] != ext[:, :-2])
    return allowed


def _shift(alpha: torch.Tensor, by: int) -> torch.Tensor:
    return torch.cat([alpha.new_full((alpha.shape[0], by), NEG), alpha[:, :-by]], dim=1)


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
    """
    b, t_max, _ = log_probs.shape
    ext = _extend(targets, blank)
    emit = log_probs.gather(2, ext.unsqueeze(1).expand(b, t_max, ext.shape[1]))  # (B, T, 2S+1)
    skip = _skip_allowed(ext, blank)
    start = torch.full_like(emit[:, 0], NEG)
    start[:, :2] = emit[:, 0, :2]
    alpha = start
    for t in range(1, t_max):
        from_skip = torch.where(skip, _shift(alpha, 2), NEG)
        step = torch.logsumexp(torch.stack([alpha, _shift(alpha, 1), from_skip]), dim=0) + emit[:, t]
        alpha = torch.where((t < input_lengths)[:, None], step, alpha)
    last = alpha.gather(1, (2 * target_lengths)[:, None]).squeeze(1)
    before = alpha.gather(1, (2 * target_lengths - 1).clamp(min=0)[:, None]).squeeze(1)
    before = torch.where(target_lengths > 0, before, NEG)
    return -torch.logaddexp(last, before)
