"""R restarts batched in one pass against the same R restarts run one after another.

Prints iterations per second of both and their ratio (target: >= 5x at R=8), measured side by side in one
process, and writes bench/results/restarts.json. Regenerate: `make bench` or `python -m bench.bench_restarts`.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from recon_core.attack import Attack, restart_seeds
from recon_core.case import build_case
from recon_core.config import AttackConfig, DataConfig, ModelConfig
from recon_core.data import load_selection
from recon_core.features import front_end_for
from recon_core.models.presets import build_model

RESULTS = Path(__file__).resolve().parent / "results"


def _seconds(case, cfg: AttackConfig, lr: float) -> float:
    attack = Attack(case, cfg, lr)
    state = attack.start(restart_seeds(cfg))
    start = time.perf_counter()
    attack.run(state)
    return time.perf_counter() - start


def measure(model: str, layers: str, restarts: int, iters: int, clip: str) -> dict[str, float | str | int]:
    net = build_model(ModelConfig(model=model))
    (utt,) = load_selection(DataConfig(ids=(clip,)))
    case = build_case(net, front_end_for(model), utt, layers, torch.device("cpu"))
    lr = AttackConfig().resolved_lr(model)
    batched_cfg = AttackConfig(max_iter=iters, patience=0, n_seeds=restarts)
    _seconds(case, batched_cfg.model_copy(update={"max_iter": 2}), lr)  # warm-up
    batched = _seconds(case, batched_cfg, lr)
    sequential = sum(
        _seconds(case, AttackConfig(max_iter=iters, patience=0, n_seeds=1, seed=s), lr) for s in range(restarts)
    )
    work = restarts * iters
    return {"model": model, "layers": layers, "restarts": restarts, "iterations": iters, "clip": clip,
            "frames": int(case.x_true.shape[0]), "batched_its_per_s": work / batched,
            "sequential_its_per_s": work / sequential, "throughput_ratio": sequential / batched}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--restarts", type=int, nargs="+", default=[1, 4, 8])
    parser.add_argument("--iters", type=int, default=10)
    parser.add_argument("--clip", default="cards-0-0001")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = [measure(m, layers, r, args.iters, args.clip) for r in args.restarts
            for m, layers in (("ds1", "output"), ("ds1", "all"), ("ds2", "output"), ("ds2", "all"))]
    print("R restarts batched vs sequential, restart-iterations per second (target >= 5x at R=8)")
    print(f"  {'model':5} {'layers':7} {'R':>2} {'batched':>8} {'sequential':>11} {'ratio':>6}")
    for r in rows:
        print(f"  {r['model']:5} {r['layers']:7} {r['restarts']:2d} {r['batched_its_per_s']:8.2f} "
              f"{r['sequential_its_per_s']:11.2f} {r['throughput_ratio']:6.2f}x")
    RESULTS.mkdir(exist_ok=True)
    meta = {"cpu": platform.processor() or platform.machine(), "threads": args.threads, "torch": torch.__version__}
    (RESULTS / "restarts.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
