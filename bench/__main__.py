"""`make bench`: every benchmark in turn, each printing its ratios next to its target and writing JSON to
bench/results/. One thread per process unless a benchmark splits cores itself."""

from __future__ import annotations

import subprocess
import sys
import time

BENCHES = (
    ["-m", "bench.bench_step"],
    ["-m", "bench.bench_restarts"],
    ["bench/bench_search.py"],
)


def main() -> int:
    for args in BENCHES:
        print(f"== {' '.join(args)}", flush=True)
        start = time.perf_counter()
        done = subprocess.run([sys.executable, *args])
        print(f"   ({time.perf_counter() - start:.0f} s)", flush=True)
        if done.returncode:
            return done.returncode
    return 0


if __name__ == "__main__":
    sys.exit(main())
