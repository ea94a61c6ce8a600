"""The truth and the starts of a finished clip, rebuilt from its run folder.

metrics.csv holds the random start's MAE in standardised units only; the original reported raw units, and
listening compares against the start's audio. A start depends on (init, seed, grid) alone, so it is
recomputed exactly with the attack's own functions rather than stored twice.
"""

from __future__ import annotations

from pathlib import Path

import torch

from recon_core.attack import start_values
from recon_core.config import AttackConfig

CPU = torch.device("cpu")


def truth(run_dir: Path, utt_id: str) -> torch.Tensor:
    """(T, F) standardised client features from the clip's finished checkpoint."""
    checkpoint = torch.load(run_dir / "checkpoints" / f"{utt_id}.pt", map_location="cpu", weights_only=False)
    return checkpoint["x_true"]


def random_start(cfg: AttackConfig, shape: tuple[int, int], seed: int) -> torch.Tensor:
    """(T, F) standardised starting features of the restart with this seed, as Attack.start draws them."""
    return start_values(shape, cfg, [seed], CPU)[1][0]
