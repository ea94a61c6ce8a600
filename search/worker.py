"""One search worker: joins (or creates) a study and runs trials until the study's budget is spent.

`asr-recon study run` is this in the foreground; `asr-recon study launch` and scripts/launch_workers.sh
start several as `python -m search.worker SPEC ...` sharing one storage. The budget (n_trials) is the
study's, not the worker's: each worker checks the shared count before it starts a trial, and while the
only missing trials are running elsewhere it waits, so that a trial whose worker dies (heartbeat stale,
then queued again) is picked up rather than lost.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from types import FrameType

import optuna
import torch
from rich.console import Console
from rich.logging import RichHandler

from recon_core.errors import InputError
from recon_core.runner import resolve_device
from search.artifacts import artifact_store
from search.objective import Objective, TrialFailed
from search.options import DEFAULT_LOG_DIR, WorkerOptions, add_worker_arguments, options_from
from search.spec import load_spec
from search.storage import display_url, heartbeat_timings, parse_storage
from search.study import fail_running, open_study, progress

log = logging.getLogger("search.worker")


def default_log_file(study_name: str, worker_index: int, log_dir: Path = DEFAULT_LOG_DIR) -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return log_dir / study_name / f"{stamp}-w{worker_index}-{os.getpid()}.log"


def run_worker(opts: WorkerOptions) -> int:
    """Run trials until the study has n_trials finished ones or this worker's timeout is over."""
    spec = load_spec(opts.spec)
    storage = opts.storage or spec.storage.url
    name = opts.study_name or spec.name
    n_trials = opts.n_trials or spec.n_trials
    timeout = opts.timeout or spec.timeout
    device = resolve_device(opts.device)
    study = open_study(spec, storage, name, opts.worker_index)  # refuses a changed spec before any log file
    _setup_logging(opts.log_file or default_log_file(name, opts.worker_index), opts.quiet)
    if opts.threads:
        torch.set_num_threads(opts.threads)
    objective = Objective(spec, device, artifact_store(opts.artifact_dir or spec.storage.artifact_dir),
                          opts.worker_index)
    poll = min(1.0, float(heartbeat_timings(spec.storage)[0])) if parse_storage(storage).has_heartbeat else 0.0
    log.info("worker %d (pid %d, %s, %d threads) joined study %r in %s", opts.worker_index, os.getpid(),
             device, torch.get_num_threads(), name, display_url(storage))
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        ran = _loop(study, objective, n_trials, timeout, poll)
    except KeyboardInterrupt:
        failed = fail_running(study, socket.gethostname(), {os.getpid()}, "worker stopped (interrupt or SIGTERM)")
        log.warning("worker %d stopped; trials marked failed: %s", opts.worker_index, failed or "none")
        raise
    log.info("worker %d done after %d trials; study: %s", opts.worker_index, ran, progress(study).line())
    return 0


def _loop(study: optuna.Study, objective: Objective, n_trials: int | None, timeout: float | None,
          poll: float) -> int:
    deadline = time.monotonic() + timeout if timeout else None
    ran = 0
    while deadline is None or time.monotonic() < deadline:
        optuna.storages.fail_stale_trials(study)
        state = progress(study)
        if n_trials is not None and state.finished >= n_trials:
            break
        if n_trials is not None and state.finished + state.running >= n_trials and not state.waiting:
            if not poll:
                break  # no heartbeats: nobody could revive a dead worker's trial, so waiting could be forever
            time.sleep(poll)  # the rest is running elsewhere; stay in case one of them dies
            continue
        study.optimize(objective, n_trials=1, catch=(TrialFailed,))
        ran += 1
        log.info("study %s: %s", study.study_name, progress(study).line())
    return ran


def _interrupt(signum: int, frame: FrameType | None) -> None:
    """SIGTERM behaves as Ctrl-C: Optuna then marks the running trial FAIL before the worker exits."""
    raise KeyboardInterrupt(f"signal {signum}")


def _setup_logging(log_file: Path, quiet: bool) -> None:
    """Timestamped records to the worker's own file; to the console too unless a launcher collects them."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    root.setLevel(logging.INFO)
    log_file.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(log_file)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.addHandler(handler)
    if not quiet:
        root.addHandler(RichHandler(console=Console(stderr=True), show_path=False))
    optuna.logging.disable_default_handler()
    optuna.logging.enable_propagation()
    log.info("log file %s", log_file)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m search.worker", description=__doc__.splitlines()[0])
    add_worker_arguments(p)
    p.add_argument("--worker-index", type=int, default=0, help="k: sampler seed + k, log file name")
    p.add_argument("--log-file", type=Path, default=None)
    p.add_argument("--quiet", action="store_true", help="log to the file only")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return run_worker(options_from(args))
    except InputError as exc:
        print(f"search.worker: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
