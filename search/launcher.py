"""Start several workers on one storage and stop them together; knows nothing of attacks.

`--gpus 0,1` starts one worker per GPU with CUDA_VISIBLE_DEVICES set to it; `--workers N` starts N
CPU workers. Either way the machine's cores are split between workers (torch threads, OMP/MKL), since
oversubscribed OpenMP threads spin against each other and every worker gets slower. Workers run in
their own sessions, so Ctrl-C reaches only the launcher, which forwards SIGTERM to each (its running
trial is marked FAIL), waits, kills stragglers, and finally marks FAIL any trial still RUNNING under
one of its workers' pids.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import FrameType

import optuna
from rich.console import Console

from recon_core.errors import InputError
from search.options import DEFAULT_LOG_DIR, WorkerOptions
from search.spec import load_spec
from search.study import fail_running, open_study, progress

STOP_GRACE_S = 30.0
POLL_S = 2.0


@dataclass(frozen=True)
class Slot:
    """Where one worker runs: its index, extra environment and torch threads."""

    index: int
    env: dict[str, str]
    threads: int


def plan_slots(gpus: str | None, workers: int | None, cores: int | None = None) -> list[Slot]:
    """One slot per GPU id, or `workers` CPU slots; cores are shared out evenly (at least one each)."""
    if gpus is not None and workers is not None:
        raise InputError("give either --gpus or --workers, not both")
    cores = cores or os.cpu_count() or 1
    if gpus is not None:
        ids = [g.strip() for g in gpus.split(",") if g.strip()]
        if not ids or any(not g.isdigit() for g in ids) or len(set(ids)) != len(ids):
            raise InputError(f"--gpus {gpus!r} must be distinct GPU numbers separated by commas, e.g. 0,1,2,3")
        threads = max(1, cores // len(ids))
        return [Slot(k, {"CUDA_VISIBLE_DEVICES": g}, threads) for k, g in enumerate(ids)]
    n = 1 if workers is None else workers
    if n < 1:
        raise InputError(f"--workers {n} must be at least 1")
    return [Slot(k, {}, max(1, cores // n)) for k in range(n)]


def check_gpus(slots: list[Slot], count: int | None = None) -> None:
    """Refuse GPU ids this machine does not have, before any study or worker is started: a worker given a
    CUDA_VISIBLE_DEVICES naming no GPU would silently run on the CPU. The ids are the machine's (the
    launcher sets CUDA_VISIBLE_DEVICES per worker), so they are counted without CUDA_VISIBLE_DEVICES."""
    ids = [int(s.env["CUDA_VISIBLE_DEVICES"]) for s in slots if "CUDA_VISIBLE_DEVICES" in s.env]
    if not ids:
        return
    count = gpu_count() if count is None else count
    missing = [i for i in ids if i >= count]
    if missing:
        have = f"GPUs 0-{count - 1}" if count > 1 else ("GPU 0" if count == 1 else "no GPU")
        raise InputError(f"--gpus names GPU {', '.join(map(str, missing))}, but this machine has {have}")


def gpu_count() -> int:
    """GPUs on this machine: nvidia-smi's list (no CUDA context in the launcher), else torch's count of the
    devices visible with CUDA_VISIBLE_DEVICES unset, asked in a child process so this one stays CUDA-free."""
    try:
        listed = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=60)
        if listed.returncode == 0:
            return sum(line.startswith("GPU ") for line in listed.stdout.splitlines())
    except (OSError, subprocess.TimeoutExpired):
        pass
    env = {k: v for k, v in os.environ.items() if k != "CUDA_VISIBLE_DEVICES"}
    counted = subprocess.run([sys.executable, "-c", "import torch; print(torch.cuda.device_count())"],
                             capture_output=True, text=True, env=env, timeout=300)
    return int(counted.stdout.strip() or 0) if counted.returncode == 0 else 0


def worker_command(opts: WorkerOptions, slot: Slot, log_file: Path) -> list[str]:
    """The `python -m search.worker` line of one slot (also what scripts/launch_workers.sh runs)."""
    cmd = [sys.executable, "-m", "search.worker", str(opts.spec), "--worker-index", str(slot.index),
           "--threads", str(slot.threads), "--log-file", str(log_file), "--quiet", "--device", opts.device]
    for flag, value in (("--storage", opts.storage), ("--study-name", opts.study_name),
                        ("--n-trials", opts.n_trials), ("--timeout", opts.timeout),
                        ("--artifact-dir", opts.artifact_dir)):
        if value is not None:
            cmd += [flag, str(value)]
    return cmd


def launch(opts: WorkerOptions, slots: list[Slot], log_dir: Path = DEFAULT_LOG_DIR,
           console: Console | None = None) -> int:
    """Run one worker per slot until all exit; 0 when all succeeded, 130 after Ctrl-C / SIGTERM."""
    console = console or Console(stderr=True, log_path=False)
    spec = load_spec(opts.spec)
    check_gpus(slots)
    storage = opts.storage or spec.storage.url
    name = opts.study_name or spec.name
    study = open_study(spec, storage, name)  # created once here, so workers only ever join
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    opts = WorkerOptions(**{**opts.__dict__, "storage": storage, "study_name": name})
    stop = _StopFlag()
    procs: list[tuple[subprocess.Popen, Path]] = []
    try:
        for slot in slots:
            log_file = log_dir / name / f"{stamp}-w{slot.index}.log"
            log_file.parent.mkdir(parents=True, exist_ok=True)
            env = {**os.environ, **slot.env, "OMP_NUM_THREADS": str(slot.threads), "MKL_NUM_THREADS": str(slot.threads)}
            with log_file.open("ab") as out:  # the worker's stray stderr (tracebacks) lands in its own log
                proc = subprocess.Popen(worker_command(opts, slot, log_file), env=env, stdout=out,
                                        stderr=subprocess.STDOUT, start_new_session=True)
            procs.append((proc, log_file))
            where = slot.env.get("CUDA_VISIBLE_DEVICES", "cpu")
            console.log(f"worker {slot.index} pid {proc.pid} on {where}, {slot.threads} threads, log {log_file}")
        _watch(study, procs, stop, console)
    finally:
        _stop_all([p for p, _ in procs], console)
        failed = fail_running(study, socket.gethostname(), {p.pid for p, _ in procs}, "launcher stopped its workers")
        if failed:
            console.log(f"trials left running by stopped workers, marked failed: {failed}")
        stop.restore()
    codes = [p.returncode for p, _ in procs]
    console.log(f"study {name}: {progress(study).line()}; worker exit codes {codes}")
    if stop.signum is not None:
        return 130
    return 0 if all(c == 0 for c in codes) else 1


def _watch(study: optuna.Study, procs: list[tuple[subprocess.Popen, Path]], stop: _StopFlag, console: Console) -> None:
    last = ""
    while not stop.signum and any(p.poll() is None for p, _ in procs):
        line = progress(study).line()
        if line != last:
            console.log(f"study {study.study_name}: {line}")
            last = line
        stop.wait(POLL_S)
    for proc, log_file in procs:
        if proc.returncode not in (None, 0):
            console.log(f"[red]worker pid {proc.pid} exited with {proc.returncode}; see {log_file}")


def _stop_all(procs: list[subprocess.Popen], console: Console) -> None:
    alive = [p for p in procs if p.poll() is None]
    if not alive:
        return
    console.log(f"stopping {len(alive)} workers (SIGTERM)")
    for p in alive:
        p.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE_S
    for p in alive:
        try:
            p.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            console.log(f"worker pid {p.pid} did not stop in {STOP_GRACE_S:.0f} s; killed")
            p.kill()
            p.wait()


class _StopFlag:
    """Records SIGINT/SIGTERM instead of raising, so the launcher can stop its workers in order."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._old = {s: signal.signal(s, self._set) for s in (signal.SIGINT, signal.SIGTERM)}

    def _set(self, signum: int, frame: FrameType | None) -> None:
        self.signum = signum

    def wait(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while self.signum is None and time.monotonic() < end:
            time.sleep(0.1)

    def restore(self) -> None:
        for s, handler in self._old.items():
            signal.signal(s, handler)
