"""Packed seeds: the cost of a training step of K runs as one packed group (bench/packed.py) against
the same K runs one by one (bench.train, each a whole Lightning run), per cell, at the shapes of
the sweeps that have several seeds a variant.

    python -m bench.benchmarks.packed [--shapes paper_copy,orthinit,greff,ladder] [--steps 30]
                                      [--k 8] [--repeats 1] [--cells gru,rnn_tanh,lstm]
    python -m bench.benchmarks.packed --head [--k 8]   # the packed head + loss alone, two backwards

Shapes (bench/sweeps/paper_*.yaml; K = --k for paper_copy, else the sweep's seeds a variant):
  paper_copy  copy T=100, batch 20, RMSProp lr 1e-3 alpha 0.9, clip 1; rnn_tanh 80, gru 47, lstm 40
  orthinit    paper_orthinit: rnn_tanh 80 with orthogonal recurrent init, copy and adding T=100 (K=5)
  greff       paper_greff's adding half: adding T=100, batch 32, 128 units, Adam lr 2e-3, clip 1;
              lstm_vanilla (peepholes) and lstm_cifg (K=10; packed: each member's own recurrence)
  ladder      paper_ladder: copy T=100, batch 20, 128 units, RMSProp; ladder_forget, ladder_output (K=5)

Kernel ceiling (`cpp` rows): the packed recurrence alone, forward + backward of the K members'
C++ scan on one batch, timed by itself; K x (a run's step alone) / (that time) is the throughput a
packed group would reach if everything else in its step (head, loss, optimizer, clipping, data,
bookkeeping) cost nothing: the most packing can give at that shape with these kernels.

Head (`--head`): the copy loss forward and the backward of it and of the packed linear head, at
paper_copy's widths (T=120, batch 20, 9 classes), with autograd's bmm backward (weight gradient x^T g, an
output 9 wide) against models.packed's PackedLinear (g^T x, as nn.Linear); interleaved, medians.

A step's cost is a difference, so that set-up, validation, test and file writes cancel: every run
(and every group) trains `--steps` and 2 x `--steps` steps (validating once, on one batch), and
cost = (time of the long one - time of the short one) / steps. Two clocks: wall time and this
process's CPU time (user + system; less disturbed by other processes on a shared machine). Both
sides run in this process, one thread, side by side (per repeat: the K runs alone, then the group),
medians over repeats. Throughput ratio = K x (a run's step alone) / (the group's step).
"""
from __future__ import annotations

import os
import resource
import statistics
import tempfile
import time

import torch

from bench import config as C
from bench.benchmarks.common import parser
from bench.packed import packable, run_group
from bench.train import run
from models.packed import PackedLinear, packed_recurrent_tm, recurrence
from tasks.registry import task_class

COPY = ["task=copy", "task.T=100", "task.batch_size=20", "optim.name=rmsprop", "optim.lr=0.001",
        "optim.alpha=0.9", "optim.grad_clip=1.0"]
ADDING = ["task=adding", "task.T=100", "task.batch_size=20", *COPY[3:]]
SHAPES = {   # shape -> [(label, overrides, K or None for --k)]
    "paper_copy": [(c, COPY + [f"model.cell={c}", f"model.hidden_size={h}"], None)
                   for c, h in (("rnn_tanh", 80), ("gru", 47), ("lstm", 40))],
    "orthinit": [(f"rnn_tanh orthogonal {t}", (COPY if t == "copy" else ADDING) +
                  ["model.cell=rnn_tanh", "model.hidden_size=80", "model.recurrent_init=orthogonal"], 5)
                 for t in ("copy", "adding")],
    "greff": [(c, ["task=adding", "task.T=100", "task.batch_size=32", f"model.cell={c}", "model.hidden_size=128",
                   "optim.name=adam", "optim.lr=0.002", "optim.grad_clip=1.0"], 10)
              for c in ("lstm_vanilla", "lstm_cifg")],
    "ladder": [(c, COPY + [f"model.cell={c}", "model.hidden_size=128"], 5) for c in ("ladder_forget", "ladder_output")],
}


def _clocks() -> tuple[float, float]:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return time.perf_counter(), r.ru_utime + r.ru_stime


def _timed(fn) -> tuple[float, float]:
    (w0, c0), _ = _clocks(), fn()
    w1, c1 = _clocks()
    return w1 - w0, c1 - c0


def configs(overrides: list, k: int, steps: int) -> list:
    ov = overrides + ["task.eval_size=20", f"trainer.max_steps={steps}", f"trainer.val_every={steps}",
                      "trainer.limit_val_batches=1"]
    return [C.load(None, ov + [f"seed={s}"]) for s in range(k)]


def per_step(overrides: list, k: int, steps: int, root: str) -> dict:
    """Seconds a step (wall, cpu): one run alone (mean over the K runs) and the packed group."""
    out = {}
    for side in ("alone", "packed"):
        t = {}
        for n in (steps, 2 * steps):
            cfgs = configs(overrides, k, n)
            d = f"{root}/{side}{n}"
            if side == "alone":
                t[n] = _timed(lambda: [run(c, d, wandb_mode="disabled") for c in cfgs])
            else:
                t[n] = _timed(lambda: run_group(cfgs, d, wandb_mode="disabled"))
        div = steps * (k if side == "alone" else 1)
        out[side] = tuple((t[2 * steps][i] - t[steps][i]) / div for i in range(2))
    return out


def kernel_step(overrides: list, k: int, repeats: int = 20) -> tuple[float, float]:
    """Seconds (wall, cpu) of one forward + backward of the K members' packed C++ recurrence alone,
    on one batch of the shape's task (its tokens), median of `repeats` after a warm-up."""
    cfgs = configs(overrides, k, 1)
    task = task_class(cfgs[0].task.name)(cfgs[0])
    rnns = [_rnn(c) for c in cfgs]
    x, _ = task.make(cfgs[0].task.batch_size, torch.Generator().manual_seed(0))
    ids = x.t().unsqueeze(0).expand(k, -1, -1).contiguous()          # (K, T, B) time-major tokens
    times = []
    for i in range(repeats + 3):
        t = _timed(lambda: packed_recurrent_tm(rnns, lambda: None, "cpp", ids=ids).sum().backward())
        if i >= 3:
            times.append(t)
    return tuple(statistics.median(t[j] for t in times) for j in range(2))


def head_step(k: int, repeats: int = 30) -> None:
    """Print ms (CPU) of the loss forward + the loss and head backward: autograd bmm against PackedLinear."""
    T, B, O = 120, 20, 9
    print("| width | autograd bmm (ms, cpu) | PackedLinear (ms, cpu) | ratio |\n|---|---|---|---|")
    for H in (80, 47, 40, 128):
        h = torch.randn(k, T, B, H, requires_grad=True)
        w, b = torch.randn(k, O, H, requires_grad=True), torch.randn(k, O, requires_grad=True)
        y = torch.randint(0, O, (k, B, T))
        heads = {"bmm": lambda: torch.baddbmm(b.unsqueeze(1), h.reshape(k, -1, H), w.transpose(1, 2)),
                 "fn": lambda: PackedLinear.apply(h.reshape(k, -1, H), w, b)}
        times = {name: [] for name in heads}
        for _ in range(repeats):
            for name, f in heads.items():
                logits = f().view(k, T, B, O).transpose(1, 2)
                t = _timed(lambda: torch.autograd.grad(torch.nn.functional.cross_entropy(
                    logits.permute(0, 3, 1, 2), y, reduction="none").flatten(1).mean(1).sum(), [h, w, b]))
                times[name].append(t[1])
        m = {name: statistics.median(v) * 1e3 for name, v in times.items()}
        print(f"| {H} | {m['bmm']:.2f} | {m['fn']:.2f} | {m['bmm'] / m['fn']:.2f} |")


def main(argv=None):
    ap = parser("packed", __doc__)
    ap.add_argument("--shapes", default="paper_copy,orthinit,greff,ladder")
    ap.add_argument("--cells", default=None, help="paper_copy's cells (default rnn_tanh,gru,lstm)")
    ap.add_argument("--k", type=int, default=8, help="runs per packed group at paper_copy's shape")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--head", action="store_true", help="only the packed head + loss: autograd bmm's backward against PackedLinear's (ignores the other options but --k)")
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    if a.head:
        return head_step(a.k)
    print(f"# packed seeds: {a.steps} and {2 * a.steps} steps a side, {a.repeats} repeat(s), torch {torch.__version__}, "
          f"1 thread, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} at start")
    with tempfile.TemporaryDirectory() as d:   # warm-up: first-use builds (C++ scans) out of the timings
        per_step(COPY + ["model.cell=gru", "model.hidden_size=8"], 2, 2, d)
    print("| shape | cell | K | recurrence | step alone (ms, wall / cpu) | packed step (ms, wall / cpu) | "
          "throughput × (wall) | throughput × (cpu) | packed kernel alone (ms, cpu) | ceiling × (cpu) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for shape in a.shapes.split(","):
        for label, ov, k in SHAPES[shape]:
            if a.cells and shape == "paper_copy" and label not in a.cells.split(","):
                continue
            k = k or a.k
            cfg = configs(ov, 1, 1)[0]
            if packable(cfg) is not None:
                print(f"| {shape} | {label} | {k} | not packable: {packable(cfg)} | | | | |")
                continue
            got = []
            for _ in range(a.repeats):
                with tempfile.TemporaryDirectory() as d:
                    got.append(per_step(ov, k, a.steps, d))
            med = {s: [statistics.median(g[s][i] for g in got) for i in range(2)] for s in ("alone", "packed")}
            al, pk = med["alone"], med["packed"]
            rec = recurrence("cpu", _rnn(cfg))
            ceil = ""
            if rec == "cpp" and task_class(cfg.task.name).one_hot:
                kc = kernel_step(ov, k)[1]
                ceil = f" {kc * 1e3:.1f} | {k * al[1] / kc:.2f} |"
            print(f"| {shape} | {label} | {k} | {rec} | {al[0] * 1e3:.1f} / {al[1] * 1e3:.1f} | "
                  f"{pk[0] * 1e3:.1f} / {pk[1] * 1e3:.1f} | {k * al[0] / pk[0]:.2f} | {k * al[1] / pk[1]:.2f} |"
                  + (ceil or " | |"), flush=True)
    print(f"load average {os.getloadavg()[0]:.2f} at the end; target at paper_copy: >= 4x for gru and rnn_tanh, "
          "lstm as measured")


def _rnn(cfg):
    return task_class(cfg.task.name)(cfg).module(None).rnn


if __name__ == "__main__":
    main()
