"""Sweep packing: wall time of a local sweep of N runs on W workers against (sum of run times) / W.

    python -m bench.benchmarks.packing [--runs 8] [--workers 2] [key=value ...]

First each run alone, one after another, as the `rnnbench train` process a sweep would start
(same threads per run as a sweep worker gets), timing each whole process; then the same runs
as one sweep on W workers in a fresh store. Ratio = sweep wall / (sum of run walls / W).
"""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench import config as C
from bench.benchmarks.common import parser, table
from bench.store import Store
from bench.sweep import LocalExecutor

DEFAULT = ["task=adding", "task.T=20", "model.hidden_size=32", "trainer.max_steps=300",
           "trainer.val_every=100", "task.eval_size=256"]


def main(argv=None):
    ap = parser("packing", __doc__)
    ap.add_argument("--runs", type=int, default=8)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("overrides", nargs="*", help=f"config overrides (default: {' '.join(DEFAULT)})")
    a = ap.parse_args(argv)
    cfgs = [C.load(None, DEFAULT + a.overrides + [f"seed={s}"]) for s in range(a.runs)]
    threads = max(1, (os.cpu_count() or 1) // a.workers)
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    with tempfile.TemporaryDirectory() as d:
        alone = []
        for cfg in cfgs:
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-m", "bench.cli", "train", *C.to_overrides(cfg), "--store",
                            f"{d}/alone", "--wandb", "disabled"], env=env, check=True, capture_output=True)
            alone.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        states = LocalExecutor(Store(Path(d) / "sweep"), "packing", a.workers, threads, wandb_mode="disabled",
                               progress=False).run(cfgs)
        wall = time.perf_counter() - t0
    assert all(s == "done" for s in states.values()), states
    ideal = sum(alone) / a.workers
    print(f"sweep packing: {a.runs} runs ({' '.join(DEFAULT[:2] + a.overrides)}), {a.workers} workers, "
          f"{threads} thread(s) each, {os.cpu_count()} cores")
    print(table(["measure", "seconds"], [["sum of single-run process walls", f"{sum(alone):.1f}"],
                                         ["ideal = sum / workers", f"{ideal:.1f}"], ["sweep wall", f"{wall:.1f}"]]))
    print(f"ratio sweep / ideal = {wall / ideal:.3f} (target <= 1.10)")


if __name__ == "__main__":
    main()
