"""Sections 1 and 2: attack every sweep point into its run folder (finished clips are skipped, half-done ones
resume), then one table row per point: mean and std over clips *and* restarts, beside the original's number.
"""

from __future__ import annotations

import logging
import statistics
from functools import cache
from pathlib import Path

import torch
from rich.progress import Progress

from paper.plan import Point
from paper.reference import reference_for
from paper.starts import random_start, truth
from paper.tables import Row
from recon_core.config import RunConfig
from recon_core.data import load_selection
from recon_core.errors import InputError
from recon_core.features import front_end_for
from recon_core.metrics import mae, summarise
from recon_core.outputs import RunFolder, read_metrics
from recon_core.runner import reconstruct

log = logging.getLogger(__name__)

SWEEP_COLUMNS = ("model", "preset", "sweep", "value", "run", "clips", "restarts", "mae_ratio_mean", "mae_ratio_std",
                 "mae_ratio_uniform_mean", "mae_ratio_uniform_std",
                 "feature_mae_raw_mean", "feature_mae_raw_std", "random_start_mae_raw_mean", "feature_snr_db_mean",
                 "feature_snr_db_std", "iterations_mean", "seconds_per_sample", "ref_feature_mae_raw",
                 "ref_random_start_mae_raw", "ref_mae_ratio", "device")


def distinct_runs(points: list[Point]) -> dict[str, RunConfig]:
    runs: dict[str, RunConfig] = {}
    for p in points:
        if runs.setdefault(p.run, p.cfg) != p.cfg:
            raise RuntimeError(f"run name {p.run} stands for two configs")  # a bug in run_name, not bad input
    return runs


def ensure_runs(runs: dict[str, RunConfig], runs_dir: Path, device: torch.device, progress: Progress) -> None:
    """Attack what is not finished yet; a duration bucket without clips is left out (logged)."""
    task = progress.add_task("sweep runs", total=len(runs))
    for name, cfg in runs.items():
        try:
            utts = load_selection(cfg.data)
        except InputError as exc:
            log.info("%s: nothing to attack (%s)", name, exc)
            progress.advance(task)
            continue
        folder = RunFolder(runs_dir / name, cfg)
        todo = [u for u in utts if u.utt_id not in folder.done_ids()]
        if todo:
            log.info("%s: attacking %d of %d clips", name, len(todo), len(utts))
            _attack(cfg, folder, device, progress, name, len(todo))
        progress.advance(task)
    progress.remove_task(task)


def _attack(cfg: RunConfig, folder: RunFolder, device: torch.device, progress: Progress, name: str, n: int) -> None:
    steps = progress.add_task(name, total=n * cfg.attack.max_iter)
    done = len(folder.done_ids())

    def on_step(step: int, loss: float, ratio: float) -> None:
        progress.update(steps, completed=step - done * cfg.attack.max_iter)

    for result in reconstruct(cfg, device=device, folder=folder, on_step=on_step):
        log.info("%s %s: mae_ratio %.3f, %.1f s", name, result.utt_id, result.best.mae_ratio, result.seconds)
    progress.remove_task(steps)


def point_row(point: Point, runs_dir: Path) -> Row:
    """The point's row; clips 0 and empty numbers where the bucket had no clip."""
    ref = reference_for(point.model, point.sweep, point.value)
    row: Row = {"model": point.model, "preset": point.cfg.model.preset, "sweep": point.sweep, "value": point.value,
                "run": point.run, "ref_feature_mae_raw": ref.feature_mae_raw if ref else "",
                "ref_random_start_mae_raw": ref.random_start_mae_raw if ref else "",
                "ref_mae_ratio": ref.mae_ratio if ref else ""}
    run_dir = runs_dir / point.run
    rows = read_metrics(run_dir / "metrics.csv")
    if not rows:
        return {**row, "clips": 0, "restarts": 0}
    # summarise() keeps the best restart per clip; the paper's spread is over clips and restarts alike.
    stats = summarise([{**r, "best": "True"} for r in rows])
    starts = [_random_start_mae_raw(point.cfg, run_dir, r["utt_id"], int(r["seed"])) for r in rows]
    return {
        **row,
        "clips": len({r["utt_id"] for r in rows}), "restarts": len(rows),
        **{f"{c}_{k}": stats[c][k] for c in ("mae_ratio", "mae_ratio_uniform", "feature_mae_raw", "feature_snr_db")
           for k in ("mean", "std")},
        "random_start_mae_raw_mean": statistics.fmean(starts),
        "iterations_mean": stats["iterations"]["mean"], "seconds_per_sample": stats["seconds"]["mean"],
        "device": ", ".join(sorted({r["device"] for r in rows})),
    }


def _random_start_mae_raw(cfg: RunConfig, run_dir: Path, utt_id: str, seed: int) -> float:
    x = _truth(run_dir, utt_id)
    front_end = front_end_for(cfg.model.model)
    start = random_start(cfg.attack, tuple(x.shape), seed)
    return mae(front_end.destandardise(start), front_end.destandardise(x))


@cache
def _truth(run_dir: Path, utt_id: str) -> torch.Tensor:
    return truth(run_dir, utt_id)
