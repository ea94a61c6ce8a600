"""Search benchmark: trials/hour with 1 vs 2 workers, and attack iterations saved by the plateau pruner.

    python bench/bench_search.py [--trials 8] [--max-iter 60] [--threads 1]

Every run is a real `asr-recon study launch` on a fresh SQLite file. Throughput: the same spec with one
worker (all cores) and with two (cores split). Pruning: the same seeded study with the pruner off and
on; the saving is counted in attack iterations, and both best values are printed so a saving that cost
accuracy shows. Trials/hour is given over the whole launch (process start-up included) and between the
first trial's start and the last one's end. Writes bench/results/search.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna
import yaml
from optuna.trial import TrialState

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "results" / "search.json"


def spec(max_iter: int, pruner: dict) -> dict:
    return {"name": "bench", "data": {"ids": ["cards-0-0001"]}, "attack": {"max_iter": max_iter},
            "search": {"lr": {"type": "float", "low": 1e-4, "high": 1.0, "log": True},
                       "top_grad_percentage": {"type": "float", "low": 0.2, "high": 1.0}},
            "sampler": {"seed": 0, "n_startup_trials": 3}, "pruner": pruner}


def run_study(raw: dict, workers: int, trials: int, folder: Path, threads: int | None) -> dict:
    """Launch `workers` workers on a fresh SQLite file; wall time and what the trials cost and found."""
    folder.mkdir(parents=True)
    path = folder / "spec.yaml"
    path.write_text(yaml.safe_dump(raw))
    storage = f"sqlite:///{folder / 'studies.db'}"
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import sys, cli; sys.exit(cli.main())", "study", "launch", str(path),
                    "--storage", storage, "--workers", str(workers), "--n-trials", str(trials),
                    "--artifact-dir", str(folder / "artifacts"), "--log-dir", str(folder / "logs"),
                    *(["--threads", str(threads)] if threads else [])],
                   cwd=ROOT, check=True, capture_output=True)
    wall = time.perf_counter() - started
    done = optuna.load_study(study_name="bench", storage=storage).get_trials()
    finished = [t for t in done if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    span = max(t.datetime_complete for t in finished) - min(t.datetime_start for t in finished)
    return {
        "workers": workers, "threads_per_worker": threads or "cores split", "trials": len(finished),
        "wall_seconds": round(wall, 2),
        "trials_per_hour": round(3600 * len(finished) / wall, 1),
        "trials_per_hour_between_first_start_and_last_end": round(3600 * len(finished) / span.total_seconds(), 1),
        "pruned": sum(t.state == TrialState.PRUNED for t in done),
        "iterations": sum(int(t.user_attrs.get("iterations", 0)) for t in finished),
        "best_mae_ratio": min((t.value for t in done if t.state == TrialState.COMPLETE), default=None),
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--trials", type=int, default=8)
    p.add_argument("--max-iter", type=int, default=60)
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads per worker (default: the launcher splits the cores; 1 is steadier on a "
                        "busy machine, where oversubscribed OpenMP threads stall)")
    args = p.parse_args()
    off = {"type": "none", "report_every": 5}
    on = {"type": "plateau", "patience": 2, "min_delta": 0.01, "n_startup_trials": 2, "report_every": 5}
    with tempfile.TemporaryDirectory(prefix="bench-search-") as tmp:
        root = Path(tmp)
        one = run_study(spec(args.max_iter, off), 1, args.trials, root / "one", args.threads)
        two = run_study(spec(args.max_iter, off), 2, args.trials, root / "two", args.threads)
        pruned = run_study(spec(args.max_iter, on), 1, args.trials, root / "pruned", args.threads)
    saved = one["iterations"] - pruned["iterations"]
    result = {
        "spec": {"model": "ds1 tiny", "clips": 1, "max_iter": args.max_iter, "trials": args.trials,
                 "cores": os.cpu_count(), "load_average_after": os.getloadavg()[0]},
        "throughput": {"one_worker": one, "two_workers": two,
                       "speedup": round(two["trials_per_hour"] / one["trials_per_hour"], 2)},
        "pruning": {"off": one, "on": pruned, "iterations_saved": saved,
                    "fraction_saved": round(saved / one["iterations"], 3) if one["iterations"] else None},
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(result, indent=2) + "\n")
    steady = "trials_per_hour_between_first_start_and_last_end"
    print(f"trials/hour (target >= 1.7x): 1 worker {one['trials_per_hour']}, 2 workers {two['trials_per_hour']} "
          f"= x{result['throughput']['speedup']} over the whole launch (start-up included); "
          f"x{two[steady] / one[steady]:.2f} between the first trial's start and the last one's end")
    print(f"pruning (target >= 40 % at equal best): {pruned['pruned']} of {pruned['trials']} trials pruned, {saved} of "
          f"{one['iterations']} iterations saved ({result['pruning']['fraction_saved']:.0%}); best mae_ratio "
          f"{one['best_mae_ratio']:.4f} without, {pruned['best_mae_ratio']:.4f} with pruning")
    print(f"written to {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
