"""Reconstruction quality: how close the attack's features are to the client's, per restart."""

from __future__ import annotations

import math

import torch

from recon_core.attack import AttackState, initial_guess
from recon_core.case import Case
from recon_core.results import RestartResult


def mae(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().mean())


def snr_db(truth: torch.Tensor, estimate: torch.Tensor) -> float:
    """Feature SNR: energy of the truth over energy of the error, in dB (0 dB: error as large as signal)."""
    err = (truth - estimate).pow(2).sum()
    return float(10 * torch.log10(truth.pow(2).sum() / err)) if err > 0 else math.inf


def cosine_similarity(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.nn.functional.cosine_similarity(a.reshape(1, -1), b.reshape(1, -1)))


def uniform_start_mae(truth: torch.Tensor, seed: int) -> float:
    """MAE of the original's U[-1, 1] start with this seed: the denominator of mae_ratio on the original's scale,
    comparable across inits."""
    return mae(initial_guess(tuple(truth.shape), "uniform", [seed], truth.device)[0], truth)


def best_restart(state: AttackState) -> int:
    """The restart with the lowest finite matching loss (the only thing an attacker sees); 0 if none is finite."""
    finite = torch.isfinite(state.best_loss)
    return int(torch.where(finite, state.best_loss, math.inf).argmin()) if bool(finite.any()) else 0


def _ratio(f_mae: float, start_mae: float) -> float:
    """mae_ratio: the feature MAE over the MAE of the start (nan for a start that is the truth)."""
    return f_mae / start_mae if start_mae > 0 else math.nan


def current_ratio(case: Case, state: AttackState) -> float:
    """The mae_ratio the clip would score if the attack stopped now: what a study reports for pruning."""
    r = best_restart(state)
    return _ratio(mae(state.best_x[r], case.x_true), mae(state.x_init[r], case.x_true))


def restart_results(case: Case, state: AttackState, seeds: list[int]) -> list[RestartResult]:
    """Metrics of each restart's best iterate (best by matching loss); the restart with the lowest
    matching loss is flagged best."""
    truth = case.x_true
    raw_truth = case.front_end.destandardise(truth)
    best_r = best_restart(state)
    last = state.history[-1] if state.history else state.best_loss
    rows = []
    for r, seed in enumerate(seeds):
        x = state.best_x[r]
        f_mae, start_mae = mae(x, truth), mae(state.x_init[r], truth)
        uniform_mae = uniform_start_mae(truth, seed)
        rows.append(
            RestartResult(
                utt_id=case.utt.utt_id,
                restart=r,
                seed=seed,
                feature_mae=f_mae,
                random_start_mae=start_mae,
                mae_ratio=_ratio(f_mae, start_mae),
                mae_ratio_uniform=f_mae / uniform_mae,
                feature_mae_raw=mae(case.front_end.destandardise(x), raw_truth),
                feature_snr_db=snr_db(truth, x),
                cosine_similarity=cosine_similarity(x, truth),
                final_loss=float(last[r]),
                best_loss=float(state.best_loss[r]),
                iterations=int(state.iterations[r]),
                stop_reason=state.stop_reason[r],
                best=r == best_r,
            )
        )
    return rows


#: per-sample figures summarised over a run (best restart of each sample)
SUMMARY_COLUMNS = ("mae_ratio", "mae_ratio_uniform", "feature_mae", "random_start_mae", "feature_mae_raw",
                   "feature_snr_db", "cosine_similarity", "best_loss", "iterations", "seconds")


def summarise(rows: list[dict[str, str]]) -> dict[str, dict[str, float]]:
    """Mean, sample std and count of each summary column over the best restart of every sample
    (rows as read back from metrics.csv, so a resumed run summarises all its samples)."""
    best = [r for r in rows if r["best"] == "True"]
    out = {}
    for col in SUMMARY_COLUMNS:
        # a column added after a resumed run began is empty in its older rows
        values = torch.tensor([float(r[col]) for r in best if r.get(col)], dtype=torch.float64)
        std = float(values.std()) if len(values) > 1 else 0.0
        out[col] = {"mean": float(values.mean()) if len(values) else math.nan, "std": std, "n": len(values)}
    return out
