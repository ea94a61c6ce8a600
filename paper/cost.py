"""Section 4: what an attack costs, per model and preset against clip duration, on the device named per row.

Each measurement runs in a fresh process (`python -m paper.cost JOB_JSON`) so that the CPU's peak resident
set belongs to that measurement alone (on a GPU it is CUDA's peak allocation). One restart, no early stop:
seconds per iteration over the measured iterations after the first (warm-up), the setup (model, features,
client gradient), the per-sample time those imply at the sweeps' iteration count, and the first iteration
whose best-so-far reconstruction reaches the target mae_ratio. Results are cached as JSON beside the tables and reused.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from recon_core.atomic import atomic_text
from recon_core.attack import Attack, restart_seeds
from recon_core.case import build_case
from recon_core.config import AttackConfig, DataConfig, ModelConfig
from recon_core.data import load_selection
from recon_core.features import front_end_for
from recon_core.metrics import mae
from recon_core.models.presets import build_model
from recon_core.runner import peak_memory_mb, resolve_device

COST_COLUMNS = ("model", "preset", "device", "utt_id", "duration_s", "frames", "iterations_measured",
                "seconds_per_iteration", "setup_seconds", "sample_iterations", "seconds_per_sample", "peak_memory_mb",
                "attack_memory_mb",
                "target_ratio", "iterations_to_target", "mae_ratio_last")
REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class CostJob:
    model: str
    preset: str
    utt_id: str
    data: str | None
    attack: dict[str, Any]  # the model's base AttackConfig fields
    iterations: int
    sample_iterations: int  # the sweeps' max_iter, for the per-sample estimate
    target_ratio: float
    device: str
    threads: int

    @property
    def name(self) -> str:
        return f"{self.model}-{self.preset}-{self.utt_id}"


def measure(job: CostJob) -> dict[str, Any]:
    """Time the attack of one clip; call in a fresh process (see module docstring)."""
    torch.set_num_threads(job.threads)
    dev = resolve_device(job.device)
    before = _resident_mb(dev)
    started = time.perf_counter()
    (utt,) = load_selection(DataConfig(data=job.data, ids=(job.utt_id,)))
    cfg = AttackConfig.model_validate({**job.attack, "max_iter": job.iterations, "n_seeds": 1, "patience": 0})
    net = build_model(ModelConfig(model=job.model, preset=job.preset)).to(dev)
    case = build_case(net, front_end_for(job.model), utt, cfg.layers, dev)
    attack = Attack(case, cfg, cfg.resolved_lr(job.model))
    state = attack.start(restart_seeds(cfg))
    setup = time.perf_counter() - started
    start_mae = mae(state.x_init[0], case.x_true)
    ratios: list[float] = []
    stamps = [time.perf_counter()]
    resident = [_resident_mb(dev)]

    def hook(iteration: int, st: Any) -> None:
        ratios.append(mae(st.best_x[0], case.x_true) / start_mae)
        stamps.append(time.perf_counter())
        resident.append(_resident_mb(dev))

    with torch.backends.cudnn.flags(enabled=False):
        attack.run(state, hook, every=1)
    # the first iteration carries one-off warm-up (allocations, lazy inits): left out when there are others
    timed = stamps[1:] if len(stamps) > 2 else stamps
    per_iteration = (timed[-1] - timed[0]) / (len(timed) - 1)
    reached = next((i + 1 for i, r in enumerate(ratios) if r <= job.target_ratio), None)
    return {
        "model": job.model, "preset": job.preset,
        "device": str(dev) if dev.type == "cpu" else torch.cuda.get_device_name(dev),
        "utt_id": job.utt_id, "duration_s": utt.duration_ms / 1000, "frames": int(case.x_true.shape[0]),
        "iterations_measured": job.iterations, "seconds_per_iteration": per_iteration, "setup_seconds": setup,
        "sample_iterations": job.sample_iterations, "seconds_per_sample": setup + per_iteration * job.sample_iterations,
        "peak_memory_mb": peak_memory_mb(dev), "attack_memory_mb": max(resident) - before,
        "target_ratio": job.target_ratio,
        "iterations_to_target": reached if reached is not None else "", "mae_ratio_last": ratios[-1],
    }


def _resident_mb(dev: torch.device) -> float:
    """Memory in use now: CUDA's allocation on a GPU, the resident set on a CPU (Linux /proc). The CPU's
    *peak* resident set is often reached while importing the libraries, before any attack; what the attack
    adds shows in the resident set sampled every iteration."""
    if dev.type == "cuda":
        return torch.cuda.max_memory_allocated(dev) / 2**20
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def cost_row(job: CostJob, cache_dir: Path) -> dict[str, Any]:
    """The job's row from its cache file, else measured in a fresh process and cached."""
    cache = cache_dir / f"{job.name}.json"
    if cache.is_file():
        stored = json.loads(cache.read_text())
        if stored["job"] == asdict(job) and set(COST_COLUMNS) <= set(stored["row"]):
            return stored["row"]
    env = {**os.environ, "OMP_NUM_THREADS": str(job.threads)}
    done = subprocess.run([sys.executable, "-m", "paper.cost", json.dumps(asdict(job))], capture_output=True,
                          text=True, env=env, cwd=REPO)
    if done.returncode != 0:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"cost measurement {job.name} failed: {tail}")
    row = json.loads(done.stdout.strip().splitlines()[-1])
    atomic_text(cache, json.dumps({"job": asdict(job), "row": row}, indent=1) + "\n")
    return row


if __name__ == "__main__":
    print(json.dumps(measure(CostJob(**json.loads(sys.argv[1])))))
