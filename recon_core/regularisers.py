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


def batch_norm_gap(seen: dict[str, list[torch.Tensor]], client: dict[str, torch.Tensor]) -> torch.Tensor:
    """(R,) distance of the dummy's batch-norm statistics to the client's: per layer, the mean square
    difference of the per-channel batch means and standard deviations, relative to the client's mean
    variance (so layers of any scale weigh alike), summed over layers. `seen` is what `probe` recorded
    (R, C) per key, `client` the client's (1, C)."""
    gap = 0.0
    for key in client:
        if not key.endswith("mean"):
            continue
        var_key = key[: -len("mean")] + "var"
        d_mean = seen[key][0] - client[key]
        d_std = seen[var_key][0].clamp_min(0).sqrt() - client[var_key].sqrt()
        gap = gap + (d_mean.pow(2) + d_std.pow(2)).mean(dim=1) / client[var_key].mean().clamp_min(1e-12)
    return gap
