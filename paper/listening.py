"""Section 5: does the reconstruction sound like the utterance? Feature SNR, and STOI of the Griffin-Lim
audio of the reconstruction against the Griffin-Lim audio of the true features (the run folder writes both),
beside the same numbers for the random start, so that a STOI is read against what no attack gives.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import soundfile as sf
from pystoi import stoi

from paper.starts import random_start, truth
from paper.tables import Row
from recon_core.config import RunConfig
from recon_core.data import SAMPLE_RATE
from recon_core.features import front_end_for
from recon_core.metrics import snr_db
from recon_core.outputs import read_metrics

LISTENING_COLUMNS = ("model", "setting", "run", "utt_id", "feature_snr_db", "feature_snr_db_random_start", "stoi",
                     "stoi_random_start", "wav_true", "wav_recon")


def intelligibility(reference: np.ndarray, degraded: np.ndarray) -> float:
    """STOI (pystoi, not extended) over the common length of two 16 kHz signals."""
    n = min(len(reference), len(degraded))
    return float(stoi(reference[:n], degraded[:n], SAMPLE_RATE, extended=False))


def listening_rows(model: str, setting: str, run: str, cfg: RunConfig, runs_dir: Path, audio_dir: Path,
                   copies_left: int) -> list[Row]:
    """One row per clip of the run (its best restart); the first `copies_left` WAV pairs are copied."""
    run_dir, front_end = runs_dir / run, front_end_for(model)
    rows = []
    for metrics in (r for r in read_metrics(run_dir / "metrics.csv") if r["best"] == "True"):
        uid = metrics["utt_id"]
        wavs = {kind: run_dir / "audio" / f"{uid}_{kind}.wav" for kind in ("true", "recon")}
        true_audio, recon_audio = (sf.read(wavs[k], dtype="float32")[0] for k in ("true", "recon"))
        x = truth(run_dir, uid)
        start = random_start(cfg.attack, tuple(x.shape), int(metrics["seed"]))
        start_audio = front_end.to_audio(front_end.destandardise(start)).numpy()
        copied = {}
        if len(rows) < copies_left:
            for kind, src in wavs.items():
                dest = audio_dir / f"{run}__{src.name}"
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(src, dest)
                copied[f"wav_{kind}"] = f"{audio_dir.name}/{dest.name}"
        rows.append({"model": model, "setting": setting, "run": run, "utt_id": uid,
                     "feature_snr_db": float(metrics["feature_snr_db"]),
                     "feature_snr_db_random_start": snr_db(x, start),
                     "stoi": intelligibility(true_audio, recon_audio),
                     "stoi_random_start": intelligibility(true_audio, start_audio), **copied})
    return rows
