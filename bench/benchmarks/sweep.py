"""Sweep overhead: wall time of a local sweep against the runs' own training time.

    python -m bench.benchmarks.sweep [SWEEP.yaml] [--workers 2] [--quick] [--wandb offline] [key=value ...]

Runs the sweep (default: bench/sweeps/default.yaml, the README's main job) in a fresh store with
the local executor, as `rnnbench sweep` does (W&B offline by default, as the main job), and
prints wall / (sum of in-process training time / workers), the training time being each run's
`wall_time_s` (Lightning's Timer around `trainer.fit`). Everything else a run costs (process
start and imports, building data and model, W&B, testing, the executor's bookkeeping, idle
workers at the end) is the overhead; target <= 1.10. `--quick`: 8 runs spread over the grid.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from bench.store import Store
from bench.sweep import LocalExecutor, expand

DEFAULT = Path(__file__).resolve().parents[1] / "sweeps" / "default.yaml"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("file", nargs="?", default=str(DEFAULT))
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="8 runs spread over the grid")
    ap.add_argument("--wandb", choices=("offline", "disabled"), default="offline")
    ap.add_argument("overrides", nargs="*", help="key=value applied to every run")
    a = ap.parse_args(argv)
    name, cfgs = expand(a.file, a.overrides)
    if a.quick:
        cfgs = cfgs[::max(1, len(cfgs) // 8)][:8]
    with tempfile.TemporaryDirectory() as d:
        store = Store(Path(d) / "results")
        old = os.environ.get("WANDB_DIR")
        os.environ.setdefault("WANDB_DIR", d)  # W&B's own files into the temp dir, not the cwd
        try:
            t0 = time.perf_counter()
            ex = LocalExecutor(store, name, a.workers, wandb_mode=a.wandb, progress=False)
            states = ex.run(cfgs)
            wall = time.perf_counter() - t0
        finally:  # run in-process (tests): leave no WANDB_DIR behind for later runs
            if old is None:
                os.environ.pop("WANDB_DIR", None)
        train = [store.result(c.hash)["wall_time_s"] for c in cfgs]
    bad = {h: s for h, s in states.items() if s != "done"}
    print(f"sweep overhead: {name}, {len(cfgs)} runs, {a.workers} workers x {ex.threads} thread(s), "
          f"{os.cpu_count()} cores, W&B {a.wandb}" + (f"; not done: {bad}" if bad else ""))
    ideal = sum(train) / a.workers
    print(f"| measure | seconds |\n|---|---|\n| sweep wall | {wall:.1f} |\n| sum of in-process training time | "
          f"{sum(train):.1f} |\n| ideal = sum / workers | {ideal:.1f} |\n"
          f"| overhead per run = (wall x workers - sum) / runs | {(wall * a.workers - sum(train)) / len(cfgs):.2f} |")
    print(f"ratio wall / ideal = {wall / ideal:.3f} (target <= 1.10)")


if __name__ == "__main__":
    main()
