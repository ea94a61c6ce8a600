"""What an attack returns: per-restart metrics and the per-sample reconstruction they belong to."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch


@dataclass(frozen=True)
class RestartResult:
    """Metrics of one random restart (one seeded init) on one sample."""

    utt_id: str
    restart: int
    seed: int
    feature_mae: float
    random_start_mae: float
    mae_ratio: float
    #: feature_mae over the MAE of the original's U[-1, 1] start with the same seed: comparable across inits
    mae_ratio_uniform: float
    feature_mae_raw: float
    feature_snr_db: float
    cosine_similarity: float
    final_loss: float
    best_loss: float
    iterations: int
    stop_reason: str
    best: bool = False

    def row(self) -> dict[str, object]:
        return asdict(self)


@dataclass
class SampleResult:
    """One attacked utterance: every restart's metrics, the best reconstruction and its history."""

    utt_id: str
    transcript: str
    duration_ms: float
    restarts: list[RestartResult]
    x_true: torch.Tensor  # (T, F) standardised features the client used
    x_recon: torch.Tensor  # (T, F) best restart's reconstruction (standardised)
    loss_history: torch.Tensor  # (iterations, R) matching loss per restart
    seconds: float
    peak_memory_mb: float
    device: str
    extra: dict[str, float] = field(default_factory=dict)

    @property
    def best(self) -> RestartResult:
        return next(r for r in self.restarts if r.best)
