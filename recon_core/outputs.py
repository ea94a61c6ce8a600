"""The run folder: everything a run leaves behind, written so that a killed run loses nothing.

    run.log              timestamped log (the console's lines)
    config.yaml          the resolved RunConfig; `asr-recon run --config` of it repeats the run
    metrics.csv          one row per sample and restart, `best` flags the restart kept
    skipped.csv          clips that could not be attacked, with the reason
    checkpoints/<utt>.pt finished sample: reconstruction, truth, loss history, config, metrics
    checkpoints/<utt>.partial.pt  attack state of a half-done sample (deleted when it finishes)
    plots/<utt>.png      true vs reconstructed features and the loss curve
    audio/<utt>_{true,recon}.wav  Griffin-Lim resynthesis of both

Every file is written to a temporary name and renamed over the old one, and metrics.csv is written last
for a sample: a sample counts as done exactly when its rows are there.
"""

from __future__ import annotations

import csv
import io
import json
import logging
from datetime import datetime
from pathlib import Path

import torch
from rich.console import Console
from rich.logging import RichHandler
from rich.table import Table

from recon_core.atomic import atomic_text, atomic_write, remove_stale_temps
from recon_core.attack import AttackState
from recon_core.config import RunConfig, first_difference, load_run_config
from recon_core.data import Utterance
from recon_core.errors import InputError
from recon_core.features import front_end_for, write_wav
from recon_core.plots import plot_sample
from recon_core.results import RestartResult, SampleResult

#: columns of metrics.csv after the restart's own fields
SAMPLE_COLUMNS = ("duration_ms", "seconds", "peak_memory_mb", "device")


def default_run_dir(model: str, root: Path = Path("runs")) -> Path:
    return root / f"{model}_{datetime.now().strftime('%Y%m%d-%H%M%S')}"


def setup_logging(log_file: Path | None, console: Console | None = None) -> None:
    """Console (rich) and, with a file, the same records with timestamps; replaces earlier handlers."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()
    root.setLevel(logging.INFO)
    root.addHandler(RichHandler(console=console, show_path=False, rich_tracebacks=False))
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(log_file)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root.addHandler(handler)


def sample_rows(result: SampleResult) -> list[dict[str, object]]:
    extra = {"duration_ms": result.duration_ms, "seconds": result.seconds,
             "peak_memory_mb": result.peak_memory_mb, "device": result.device}
    return [{**r.row(), **extra} for r in result.restarts]


def read_metrics(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def _csv_text(rows: list[dict[str, object]], columns: list[str]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


class RunFolder:
    """The output folder of one run config; re-opening it with the same config resumes the run."""

    def __init__(self, path: Path, cfg: RunConfig):
        self.path, self.cfg = Path(path), cfg
        self.metrics = self.path / "metrics.csv"
        self.skipped = self.path / "skipped.csv"
        config_file = self.path / "config.yaml"
        if self.path.is_dir():
            remove_stale_temps(self.path)  # left by a run killed mid-write
        if config_file.is_file():
            # Compared after validation: settings added to the tool since the run began take their defaults.
            old = load_run_config(config_file).model_dump(mode="json")
            new = cfg.model_dump(mode="json")
            if old != new:
                change = first_difference(old, new)
                raise InputError(f"--out {self.path} holds a run of another config ({change}); choose another "
                                 f"--out, or repeat that run with --config {config_file}")
        atomic_text(config_file, cfg.to_yaml())

    @property
    def log_file(self) -> Path:
        return self.path / "run.log"

    def write_summary(self, summary: dict[str, dict[str, float]]) -> None:
        atomic_text(self.path / "summary.json", json.dumps(summary, indent=2) + "\n")

    def _checkpoint(self, utt_id: str, partial: bool = False) -> Path:
        return self.path / "checkpoints" / f"{utt_id}{'.partial' if partial else ''}.pt"

    def done_ids(self) -> set[str]:
        return {row["utt_id"] for row in read_metrics(self.metrics) + read_metrics(self.skipped)}

    def record_skip(self, utt: Utterance, reason: str) -> None:
        rows: list[dict[str, object]] = [*read_metrics(self.skipped), {"utt_id": utt.utt_id, "reason": reason}]
        atomic_text(self.skipped, _csv_text(rows, ["utt_id", "reason"]))

    def save_state(self, utt_id: str, state: AttackState) -> None:
        atomic_write(self._checkpoint(utt_id, partial=True), lambda tmp: torch.save(state.to_dict(), tmp))

    def load_state(self, utt_id: str, device: torch.device) -> AttackState | None:
        path = self._checkpoint(utt_id, partial=True)
        if not path.is_file():
            return None
        return AttackState.from_dict(torch.load(path, map_location="cpu", weights_only=False), device)

    def finish(self, result: SampleResult, model: str) -> None:
        """Write the sample's checkpoint, plot and audio, then its metrics rows (last: they mark it done)."""
        uid = result.utt_id
        checkpoint = {
            "utt_id": uid, "transcript": result.transcript, "config": self.cfg.model_dump(mode="json"),
            "x_true": result.x_true, "x_recon": result.x_recon, "loss_history": result.loss_history,
            "restarts": [r.row() for r in result.restarts],
        }
        atomic_write(self._checkpoint(uid), lambda tmp: torch.save(checkpoint, tmp))
        atomic_write(self.path / "plots" / f"{uid}.png", lambda tmp: plot_sample(result, tmp, model))
        front_end = front_end_for(model)
        for kind, x in (("true", result.x_true), ("recon", result.x_recon)):
            write_wav(self.path / "audio" / f"{uid}_{kind}.wav", front_end.to_audio(front_end.destandardise(x)))
        rows: list[dict[str, object]] = [*read_metrics(self.metrics), *sample_rows(result)]
        columns = [*RestartResult.__dataclass_fields__, *SAMPLE_COLUMNS]
        atomic_text(self.metrics, _csv_text(rows, columns))
        self._checkpoint(uid, partial=True).unlink(missing_ok=True)


def summary_table(summary: dict[str, dict[str, float]], title: str) -> Table:
    table = Table(title=title)
    for col in ("metric", "mean", "std", "samples"):
        table.add_column(col, justify="left" if col == "metric" else "right")
    for name, s in summary.items():
        table.add_row(name, f"{s['mean']:.4g}", f"{s['std']:.3g}", str(s["n"]))
    return table
