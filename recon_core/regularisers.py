"""Priors on the dummy features, per restart: x (R, T, F) -> (R,)."""

from __future__ import annotations

from collections.abc import Callable

import torch

Regulariser = Callable[[torch.Tensor], torch.Tensor]


def total_variation(x: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference between neighbours in time and in frequency: speech is smooth in both."""
    dt = (x[:, 1:] - x[:, :-1]).abs().mean(dim=(1, 2))
    df = (x[:, :, 1:] - x[:, :, :-1]).abs().mean(dim=(1, 2))
    return dt + df


def l2_norm(x: torch.Tensor) -> torch.Tensor:
    """Mean square: pulls standardised features towards the corpus mean."""
    return x.pow(2).mean(dim=(1, 2))


def zero(x: torch.Tensor) -> torch.Tensor:
    return x.new_zeros(x.shape[0])


REGULARISERS: dict[str, Regulariser] = {"none": zero, "tv": total_variation, "l2": l2_norm}
