"""Packed seeds: K runs as one packed group (bench/packed.py) against the same K runs one by one
(bench.train, each a whole Lightning run), per cell, at paper_copy's shape.

    python -m bench.benchmarks.packed [--quick] [--k 8] [--steps N] [--repeats R] [--cells gru,rnn_tanh,lstm]
                                          [--impl auto|fused|custom]

Shape (bench/sweeps/paper_copy.yaml): copy T=100, batch 20, RMSProp lr 1e-3 alpha 0.9, clip 1;
hidden 80 (rnn_tanh), 40 (lstm), 47 (gru), or --hidden H for every cell. Each run trains --steps
steps, validates and checkpoints once at the end and tests on a small eval set (--eval-size), so
the training step dominates. Both sides run in this process, interleaved (per repeat: the K runs,
then the group, cell by cell); figures are medians over repeats.

The group runs twice, once per recurrence of models.packed (`bmm`: one batched matmul per step
over the K members; `members`: each member's own kernel, the CPU default).
Throughput ratio = (sum of the K runs' times) / (the group's time), twice: the whole call (set-up,
training, validation, test and every file written) and the training time each result records
(`wall_time_s`: Lightning's Timer for a run, the group's training loop for a packed one).
--quick: 20 steps, 1 repeat (about 2 minutes on 2 busy cores).
"""
from __future__ import annotations

import os
import statistics
import tempfile
import time

import torch

from bench import config as C
from bench.benchmarks.common import parser
from bench.packed import run_group
from bench.train import run
from models.packed import RECURRENCES

HIDDEN = {"rnn_tanh": 80, "irnn": 80, "lstm": 40, "gru": 47}


def configs(cell: str, k: int, steps: int, hidden: int | None, eval_size: int, impl: str = "auto") -> list:
    ov = ["task=copy", "task.T=100", "task.batch_size=20", f"task.eval_size={eval_size}", f"model.cell={cell}",
          f"model.hidden_size={hidden or HIDDEN[cell]}", "optim.name=rmsprop", "optim.lr=0.001", "optim.alpha=0.9",
          "optim.grad_clip=1.0", f"trainer.max_steps={steps}", f"trainer.val_every={steps}", f"model.impl={impl}"]
    return [C.load(None, ov + [f"seed={s}"]) for s in range(k)]


def measure(cfgs: list, root: str) -> dict:
    """Seconds for the K runs one by one and for one packed group: whole calls and training time."""
    t0 = time.perf_counter()
    alone = [run(c, f"{root}/alone", wandb_mode="disabled") for c in cfgs]
    out = {"alone": time.perf_counter() - t0, "alone_train": sum(r["wall_time_s"] for r in alone)}
    for mode in RECURRENCES:
        os.environ["RNNBENCH_PACKED_RECURRENCE"] = mode
        t0 = time.perf_counter()
        packed = run_group(cfgs, f"{root}/{mode}", wandb_mode="disabled")
        out[mode], out[mode + "_train"] = time.perf_counter() - t0, packed[0]["wall_time_s"]
        assert all(r["status"] == "done" for r in alone + packed), [r.get("error") for r in alone + packed]
    os.environ.pop("RNNBENCH_PACKED_RECURRENCE")
    return out


def main(argv=None):
    ap = parser("packed", __doc__)
    ap.add_argument("--quick", action="store_true", help="20 steps, 1 repeat")
    ap.add_argument("--k", type=int, default=8, help="runs per packed group")
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--hidden", type=int, default=None, help="one hidden size for every cell")
    ap.add_argument("--eval-size", type=int, default=100)
    ap.add_argument("--cells", default="gru,rnn_tanh,lstm")
    ap.add_argument("--impl", default="auto", choices=("auto", "fused", "custom"),
                    help="model.impl of the K runs alone (a packed group ignores it)")
    a = ap.parse_args(argv)
    steps, repeats = (20, 1) if a.quick else (a.steps, a.repeats)
    cells = a.cells.split(",")
    print(f"# packed seeds: K={a.k}, copy T=100 batch 20, {steps} steps, {repeats} repeat(s), "
          f"runs alone with model.impl={a.impl}; torch "
          f"{torch.__version__}, {torch.get_num_threads()} thread(s), {os.cpu_count()} CPUs")
    got = {c: [] for c in cells}
    with tempfile.TemporaryDirectory() as d:  # warm-up: first-use builds (C++ scans) out of the timings
        for cell in cells:
            measure(configs(cell, 2, 2, a.hidden, 20), d + "/" + cell)
    for rep in range(repeats):
        for cell in cells:
            with tempfile.TemporaryDirectory() as d:
                got[cell].append(measure(configs(cell, a.k, steps, a.hidden, a.eval_size, a.impl), d))
    print(f"| cell | hidden | recurrence of the group | {a.k} runs (s) | packed (s) | throughput × (whole runs) | "
          f"{a.k} runs training (s) | packed training (s) | throughput × (training) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for cell in cells:
        med = {k: statistics.median(m[k] for m in got[cell]) for k in got[cell][0]}
        for mode in RECURRENCES:
            print(f"| {cell} | {a.hidden or HIDDEN[cell]} | {mode} | {med['alone']:.1f} | {med[mode]:.1f} | "
                  f"{med['alone'] / med[mode]:.2f} | {med['alone_train']:.1f} | {med[mode + '_train']:.1f} | "
                  f"{med['alone_train'] / med[mode + '_train']:.2f} |")
    print("target: >= 4x for gru and rnn_tanh; lstm as measured")


if __name__ == "__main__":
    main()
