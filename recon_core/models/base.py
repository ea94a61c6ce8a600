"""What every attacked model offers: a functional forward over per-restart weights."""

from __future__ import annotations

import torch
from torch import nn

from recon_core.models.functional import Params


class ReconModel(nn.Module):
    """An ASR model whose forward is a pure function of (per-restart) weights and input.

    Subclasses define `functional` (what the attack differentiates twice, with per-restart weights) and
    `forward` with PyTorch's native modules (what a client's ordinary training step runs: the baseline of
    the cost benchmark and the reference the tests hold `functional` to).
    """

    n_features: int
    #: parameter names of the output layer: what the original attack matched
    output_layer: tuple[str, ...]

    def functional(self, p: Params, x: torch.Tensor, bn_train: bool = True) -> torch.Tensor:
        """x (R, T, n_features) -> log-probabilities (R, T', 29)."""
        raise NotImplementedError

    def output_frames(self, n_frames: int) -> int:
        """Output frames for an input of n_frames (CTC needs at least one per label)."""
        return n_frames

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, T, n_features) -> log-probabilities (B, T', 29) through the native modules."""
        raise NotImplementedError

    def buffer_dict(self) -> dict[str, torch.Tensor]:
        return dict(self.named_buffers())
