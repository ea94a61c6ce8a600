"""Command-line options of a search worker, shared by `study run`, `study launch` and `python -m search.worker`.

Kept free of torch and Optuna imports so that building the CLI parser stays fast.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

#: where workers log when no --log-file / --log-dir is given
DEFAULT_LOG_DIR = Path("results/logs")


@dataclass(frozen=True)
class WorkerOptions:
    """What the command line may override of a spec, plus where this worker runs and logs."""

    spec: Path
    storage: str | None = None
    study_name: str | None = None
    n_trials: int | None = None
    timeout: float | None = None
    artifact_dir: str | None = None
    device: str = "auto"
    worker_index: int = 0
    threads: int | None = None
    log_file: Path | None = None
    quiet: bool = False



def add_worker_arguments(p: argparse.ArgumentParser) -> None:
    """The flags `study run`, `study launch` and the worker share."""
    p.add_argument("spec", type=Path, help="study spec YAML (studies/*.yaml)")
    p.add_argument("--storage", default=None,
                   help="SQLAlchemy URL, FILE.db, or journal:FILE / FILE.log (default: the spec's)")
    p.add_argument("--study-name", default=None, help="default: the spec's name")
    p.add_argument("--n-trials", type=positive(int), default=None, help="finished trials in the whole study")
    p.add_argument("--timeout", type=positive(float), default=None, help="seconds per worker")
    p.add_argument("--artifact-dir", default=None, help="artifact store folder (default: the spec's)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    p.add_argument("--threads", type=positive(int), default=None, help="torch threads (default: torch's choice)")


def options_from(args: argparse.Namespace) -> WorkerOptions:
    return WorkerOptions(
        spec=args.spec, storage=args.storage, study_name=args.study_name, n_trials=args.n_trials,
        timeout=args.timeout, artifact_dir=args.artifact_dir, device=args.device,
        worker_index=getattr(args, "worker_index", 0), threads=args.threads,
        log_file=getattr(args, "log_file", None), quiet=getattr(args, "quiet", False),
    )


def positive(kind: type) -> Callable[[str], int | float]:
    def parse(text: str) -> int | float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a {kind.__name__}") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"{text!r} must be positive")
        return value

    parse.__name__ = kind.__name__
    return parse
