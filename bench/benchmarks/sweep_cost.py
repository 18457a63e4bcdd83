"""Cost of a full sweep on this machine, extrapolated from a few timed steps of each of its variants.

    python -m bench.benchmarks.sweep_cost bench/sweeps/paper_copy.yaml [...] [--steps 20] [--workers 2] [--pack 8]
    python -m bench.benchmarks.sweep_cost bench/sweeps/paper_orthinit.yaml --quick   # --steps 5, about a minute (too noisy on a loaded machine)

For every variant of the sweep (its configs minus `seed`) a run trains `--steps` and 2 x `--steps`
steps alone, validating once on one batch (`trainer.limit_val_batches=1`), in a temporary store,
with one torch thread (what a worker gets with --workers 2 on 2 cores); the difference of the two
training times (Lightning's Timer) / steps is the variant's seconds a step. Where the
variant is packable, a packed group of its seeds (at most `--pack`) is timed the same way. Estimate = sum over runs of
seconds/step x max_steps, divided by --workers (packed: over groups of K seeds). Validation is
left out (10 to 20 passes over eval_size sequences, about 2% of the steps of these sweeps), and so
are early stops (`trainer.stop_when_solved`): the figures are the cost of every run to its last step.
"""
from __future__ import annotations

import math
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import torch

from bench import config as C
from bench.benchmarks.common import parser, table
from bench.packed import packable, run_group
from bench.sweep import expand
from bench.train import run


def variants(cfgs: list) -> dict:
    """Variant (config minus seed, as overrides) -> its configs."""
    out = defaultdict(list)
    for c in cfgs:
        key = tuple(o for o in C.to_overrides(c) if not o.startswith("seed="))
        out[key].append(c)
    return out


def _train_s(key: tuple, steps: int, seeds: int, root: Path) -> float:
    """Training seconds (Lightning's Timer; packed: the group's) of a run of `steps` steps
    (seeds > 1: a packed group of that many seeds)."""
    short = list(key) + [f"trainer.max_steps={steps}", f"trainer.val_every={steps}", "trainer.limit_val_batches=1"]
    cfgs = [C.load(None, short + [f"seed={s}"]) for s in range(seeds)]
    r = run(cfgs[0], root, wandb_mode="disabled") if seeds == 1 else run_group(cfgs, root, wandb_mode="disabled")[0]
    return r["wall_time_s"]


def timed(key: tuple, steps: int, pack: int, root: Path) -> tuple[float, float | None]:
    """(seconds a step alone, seconds a step of a packed group of `pack` seeds, or None): the
    difference of a 2*steps and a steps run, so that the first steps' costs cancel."""
    per_step = lambda seeds, tag: (_train_s(key, 2 * steps, seeds, root / f"{tag}2") -
                                   _train_s(key, steps, seeds, root / f"{tag}1")) / steps
    cfg = C.load(None, list(key))
    return per_step(1, "a"), per_step(pack, "p") if pack > 1 and packable(cfg) is None else None


def estimate(path: str, steps: int, workers: int, pack: int) -> tuple[list, float, float]:
    """Rows per variant, and the sweep's hours alone and packed (packed = alone where not packable)."""
    name, cfgs = expand(path)
    rows, alone_s, packed_s = [], 0.0, 0.0
    vs = variants(cfgs)
    varying = {o for k in vs for o in k if any(o not in k2 for k2 in vs)}
    with tempfile.TemporaryDirectory() as d:
        for i, (key, cs) in enumerate(vs.items()):
            k = min(pack, len(cs))   # a variant's seeds pack together
            a, p = timed(key, steps, k, Path(d) / str(i))
            total = sum(c.trainer.max_steps for c in cs)
            alone_s += a * total
            packed_s += p * cs[0].trainer.max_steps * math.ceil(len(cs) / k) if p else a * total
            rows.append([" ".join(o for o in key if o in varying) or "-",
                         len(cs), cs[0].trainer.max_steps, f"{a * 1000:.1f}", f"{p * 1000:.1f}" if p else "-"])
    return rows, alone_s / workers / 3600, packed_s / workers / 3600


def main(argv=None):
    ap = parser("sweep_cost", __doc__)
    ap.add_argument("sweeps", nargs="+", help="sweep files")
    ap.add_argument("--steps", type=int, default=20, help="timed steps a variant (default 20)")
    ap.add_argument("--workers", type=int, default=2, help="parallel runs the estimate assumes (default 2)")
    ap.add_argument("--pack", type=int, default=8, help="seeds a packed group (default 8; 1 = no packed figure)")
    ap.add_argument("--quick", action="store_true", help="--steps 5")
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    steps = 5 if a.quick else a.steps
    summary = []
    for path in a.sweeps:
        t0 = time.perf_counter()
        rows, alone_h, packed_h = estimate(path, steps, a.workers, a.pack)
        print(f"\n{path} ({steps} steps a variant, timed in {time.perf_counter() - t0:.0f} s)", flush=True)
        print(table(["variant", "runs", "max_steps", "ms/step alone", "ms/step of a packed group of its seeds"], rows), flush=True)
        summary.append([path, sum(r[1] for r in rows), f"{alone_h:.1f}", f"{packed_h:.1f}"])
    print(f"\nEstimated wall hours on {a.workers} workers:")
    print(table(["sweep", "runs", "hours alone", f"hours --pack {a.pack}"], summary))


if __name__ == "__main__":
    main()
