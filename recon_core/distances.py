"""Gradient distances, per restart: g (R, N) dummy gradients against the target t (N,)."""

from __future__ import annotations

from collections.abc import Callable

import torch

Distance = Callable[[torch.Tensor, torch.Tensor, float], torch.Tensor]


def cosine(g: torch.Tensor, t: torch.Tensor, l2_weight: float = 0.0) -> torch.Tensor:
    """1 - cos(g, t): blind to the gradient's scale, which depends on the unknown loss value.

    Computed as half the squared distance of the unit vectors (the same number): `1 - cos` in float32 stops
    at about 1e-7 and then goes negative, which made late noise look like the best iterate.
    """
    g_unit = g / g.norm(dim=1, keepdim=True).clamp_min(1e-30)
    t_unit = t / t.norm().clamp_min(1e-30)
    return 0.5 * (g_unit - t_unit).pow(2).sum(dim=1)


def l2(g: torch.Tensor, t: torch.Tensor, l2_weight: float = 1.0) -> torch.Tensor:
    """Mean squared error, as the original's `l2` distance."""
    return (g - t).pow(2).mean(dim=1)


def cosine_l2(g: torch.Tensor, t: torch.Tensor, l2_weight: float = 0.5) -> torch.Tensor:
    """(1 - w) * cosine + w * mse (the original DS1's mix; it crashed in DS2)."""
    return (1 - l2_weight) * cosine(g, t) + l2_weight * l2(g, t)


DISTANCES: dict[str, Distance] = {"cosine": cosine, "l2": l2, "cosine+l2": cosine_l2}
