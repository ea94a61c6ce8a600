"""Figures of one attacked sample: what the client had, what the attacker got, how the matching went."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 - the backend must be chosen first

from recon_core.results import SampleResult  # noqa: E402


def plot_sample(result: SampleResult, path: Path, model: str) -> None:
    """True and reconstructed (standardised) features on one colour scale, and each restart's loss curve."""
    fig, axes = plt.subplots(3, 1, figsize=(9, 8), height_ratios=(1, 1, 0.8))
    lo, hi = (float(v) for v in result.x_true.quantile(result.x_true.new_tensor([0.01, 0.99])))
    kind = "MFCC" if model == "ds1" else "spectrogram bin"
    best = result.best
    titles = (f"{result.utt_id}: client features (standardised)",
              f"best reconstruction (restart {best.restart}): mae_ratio {best.mae_ratio:.3f}, "
              f"SNR {best.feature_snr_db:.2f} dB")
    for ax, x, title in zip(axes[:2], (result.x_true, result.x_recon), titles, strict=True):
        im = ax.imshow(x.T.numpy(), origin="lower", aspect="auto", vmin=lo, vmax=hi, cmap="magma")
        ax.set_title(title, fontsize=9)
        ax.set_ylabel(kind)
        fig.colorbar(im, ax=ax, pad=0.01)
    axes[1].set_xlabel("frame")
    history = result.loss_history.numpy()
    for r in range(history.shape[1]):
        axes[2].semilogy(history[:, r], lw=1.5 if r == best.restart else 0.7, label=f"restart {r}")
    axes[2].set_xlabel("iteration")
    axes[2].set_ylabel("matching loss")
    if history.shape[1] <= 8:
        axes[2].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90, format="png")
    plt.close(fig)
