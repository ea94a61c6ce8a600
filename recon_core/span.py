"""The span objective: what a recurrent weight's gradient says about the vectors it multiplied.

A weight applied at every time step, such as a GRU's input weight W_ih, gets the gradient
sum_t delta_t a_t^T: a matrix whose rows are combinations of the inputs a_t it saw. When it has more rows
than there are time steps (DS2: 3H = 2,400 rows, 55 steps after the stride), its row space *is* the span of
{a_t}, computable from the shared gradient alone, without the downstream deltas that make gradient matching
so rugged on DS2 (docs/ds2-failure-modes.md, section 10). The attack then asks for features whose inputs to
each such weight lie in that span: a residual that is zero at the truth and, unlike the matching loss, needs
no double backward.
"""

from __future__ import annotations

import torch

#: the weights whose gradient is a sum over time steps of (delta, input) products, by name suffix
RECURRENT_WEIGHTS = ("weight_ih_l0", "weight_ih_l0_reverse", "weight_hh_l0", "weight_hh_l0_reverse")
#: singular values below this fraction of the largest are numerical noise (measured gap: 6e-3 -> 3e-8)
RANK_TOLERANCE = 1e-6


def is_recurrent_weight(name: str) -> bool:
    return name.endswith(RECURRENT_WEIGHTS)


def row_space(grad: torch.Tensor, tolerance: float = RANK_TOLERANCE) -> torch.Tensor:
    """Orthonormal basis (k, D) of the row space of a (G, D) gradient, k its numerical rank (float64 SVD)."""
    _, s, vh = torch.linalg.svd(grad.double(), full_matrices=False)
    k = int((s > tolerance * s[0]).sum()) if s.numel() and s[0] > 0 else 0
    return vh[:k].to(grad.dtype)


def span_residual(inputs: torch.Tensor, basis: torch.Tensor) -> torch.Tensor:
    """(R,) share of the inputs' energy (R, T, D) outside the span of the basis rows (k, D): 0 when every
    input lies in the span, 1 when all are orthogonal to it. Relative, so it ignores the inputs' scale (which
    train-mode batch norm hides anyway)."""
    outside = inputs - (inputs @ basis.T) @ basis
    return outside.pow(2).sum(dim=(1, 2)) / inputs.pow(2).sum(dim=(1, 2)).clamp_min(1e-30)


def span_bases(names: tuple[str, ...], target: list[torch.Tensor]) -> dict[str, torch.Tensor]:
    """The row space of each matched recurrent weight's shared gradient, by parameter name."""
    return {n: row_space(t) for n, t in zip(names, target, strict=True) if is_recurrent_weight(n)}


def span_loss(seen: dict[str, list[torch.Tensor]], bases: dict[str, torch.Tensor]) -> torch.Tensor:
    """(R,) sum over the recurrent weights of `span_residual`; `seen` is what `probe` recorded in one forward
    (each weight's inputs under its name)."""
    return sum(span_residual(seen[name][0], basis) for name, basis in bases.items())
