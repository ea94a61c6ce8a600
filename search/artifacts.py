"""Per-trial artifacts in Optuna's artifact store: what optuna-dashboard shows beside a trial's numbers.

For every attacked clip: a PNG of the true vs reconstructed features (with the loss curves) and WAVs of
the true and reconstructed audio, so a reader sees and hears how good a trial was, not just its mae_ratio.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import optuna
from optuna.artifacts import FileSystemArtifactStore, upload_artifact

from recon_core.features import front_end_for, write_wav
from recon_core.plots import plot_sample
from recon_core.results import SampleResult


def artifact_store(folder: str | Path) -> FileSystemArtifactStore:
    path = Path(folder)
    path.mkdir(parents=True, exist_ok=True)
    return FileSystemArtifactStore(path)


def upload_sample(trial: optuna.Trial, store: FileSystemArtifactStore, result: SampleResult, model: str) -> list[str]:
    """Upload the plot and both WAVs of one clip; returns the artifact ids (kept in a user attr)."""
    front_end = front_end_for(model)
    ids = []
    with tempfile.TemporaryDirectory(prefix="asr-recon-artifacts-") as tmp:
        folder = Path(tmp)
        png = folder / f"{result.utt_id}.png"
        plot_sample(result, png, model)
        files = [(png, "image/png")]
        for kind, x in (("true", result.x_true), ("recon", result.x_recon)):
            wav = folder / f"{result.utt_id}_{kind}.wav"
            write_wav(wav, front_end.to_audio(front_end.destandardise(x)))
            files.append((wav, "audio/wav"))
        for path, mimetype in files:
            ids.append(upload_artifact(artifact_store=store, file_path=str(path), study_or_trial=trial,
                                       mimetype=mimetype))
    return ids
