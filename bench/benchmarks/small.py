"""Recurrences at the sizes the sweeps run (hidden 40-128, T 30-120, batch 20-64), against fused nn.LSTM.

    python -m bench.benchmarks.small --quick        # the two issue-14 shapes, < 2 minutes
    python -m bench.benchmarks.small                # + the shapes of the default and paper sweeps

One process, all entries of a shape interleaved: each repeat runs every entry once, the table
shows medians of CPU time (time.process_time, one torch thread by default: robust to other jobs on
a shared machine) and, beside it, of wall time. A timed call is what a training step does with the
recurrence: forward of a one-layer models.recurrent.Recurrent (batch-first, input width of the
task: 10 for copy, 2 for adding; the input needs no gradient) plus `out.sum().backward()`;
gradients are cleared outside the timing. Every ratio is against fused nn.LSTM of the same
hidden size (oneDNN on CPU), the first entry of each shape.

Paths: `fused` = torch.nn.LSTM/GRU/RNN; `custom` = the custom path with its C++ scans
(models/cells/kernels.py); `custom-py` = the same path with the Python scans (what the custom
path was before the C++ scans). `auto` in the last column: what `model.impl=auto` picks.
Targets (issue 14): custom LSTM variants <= 1.5x; GRU and RNN (the path auto picks) <= 1.0x.
FGR's recurrent matmul is (B x 4H)(4H x 4H), [y, i, f, o]^{t-1} times R and the 9 gate-to-gate
matrices: 4x the LSTM's, so it is summarised apart from the other variants.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import torch

from bench.schema import build
from models.cells import kernels
from models.config import ModelConfig
from models.recurrent import Recurrent

# (name, hidden, T, batch, input width): the issue's two shapes first, then the sweeps'
SHAPES = [
    ("paper_copy LSTM (issue)", 40, 120, 20, 10),
    ("default sweep (issue)", 64, 30, 64, 10),
    ("paper_greff_cpu adding", 48, 30, 32, 2),
    ("paper_jozefowicz_cpu", 64, 50, 32, 2),
    ("paper_copy GRU", 47, 120, 20, 10),
    ("paper_copy / orthinit RNN", 80, 120, 20, 10),
    ("paper_adding / greff", 128, 100, 20, 2),
]
GREFF = ["lstm_vanilla", "lstm_nig", "lstm_nfg", "lstm_nog", "lstm_niaf", "lstm_noaf", "lstm_np",
         "lstm_cifg", "lstm_fgr"]
# (cell, path, target ratio or None)
ENTRIES = ([("lstm", "fused", None), ("lstm", "custom", 1.5)] + [(c, "custom", 1.5) for c in GREFF]
           + [("lstm_vanilla", "custom-py", None)]
           + [(c, p, 1.0 if p == "custom" else None) for c in ("gru", "rnn_tanh", "rnn_relu")
              for p in ("fused", "custom", "custom-py")])


def make(cell, path, H, I):
    impl = "fused" if path == "fused" else "custom"
    net = Recurrent(I, build(ModelConfig, {"cell": cell, "hidden_size": H, "impl": impl}, "model."))
    auto = Recurrent(I, build(ModelConfig, {"cell": cell, "hidden_size": H}, "model.")).implementation
    return net, auto


def time_shape(entries, x, repeats, warmup):
    def call(net, path):
        kernels.set_enabled(path != "custom-py")
        net.zero_grad(set_to_none=True)
        out = net(x)[0]
        out.sum().backward()

    for key, (net, path) in entries.items():
        for _ in range(warmup):
            call(net, path)
    cpu = {k: [] for k in entries}
    wall = {k: [] for k in entries}
    for _ in range(repeats):
        for key, (net, path) in entries.items():
            c0, t0 = time.process_time(), time.perf_counter()
            call(net, path)
            wall[key].append(time.perf_counter() - t0)
            cpu[key].append(time.process_time() - c0)
    kernels.set_enabled(True)
    return ({k: statistics.median(v) * 1e3 for k, v in cpu.items()},
            {k: statistics.median(v) * 1e3 for k, v in wall.items()})


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.benchmarks.small", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="the two issue shapes only, fewer repeats")
    ap.add_argument("--repeats", type=int, default=None, help="timed repeats per entry (default 7, quick 5)")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    repeats = args.repeats or (5 if args.quick else 7)
    shapes = SHAPES[:2] if args.quick else SHAPES
    if not kernels.available():
        print("# C++ scans NOT available here: `custom` rows run the Python scans")
    print(f"# bench_small: forward + backward of one Recurrent layer, float32; torch {torch.__version__}, "
          f"{torch.get_num_threads()} thread(s), {os.cpu_count()} CPUs, {platform.machine()}, "
          f"CPU capability {torch.backends.cpu.get_cpu_capability()}; {repeats} interleaved repeats, median")
    print()
    print("| shape (hidden, T, batch, input) | cell | path | CPU ms | ÷ fused LSTM (CPU) | wall ms | "
          "÷ fused LSTM (wall) | target | met | auto |")
    print("|---|---|---|---:|---:|---:|---:|---:|:---:|:---:|")
    summary = []
    for name, H, T, B, I in shapes:
        entries, autos, targets = {}, {}, {}
        for cell, path, target in ENTRIES:
            net, auto = make(cell, path, H, I)
            entries[(cell, path)] = (net, path)
            autos[(cell, path)], targets[(cell, path)] = auto, target
        x = torch.randn(B, T, I)
        cpu, wall = time_shape(entries, x, repeats, args.warmup)
        ref = ("lstm", "fused")
        for key in entries:
            cell, path = key
            r, rw = cpu[key] / cpu[ref], wall[key] / wall[ref]
            t = targets[key]
            met = "" if t is None else ("yes" if r <= t else "no")
            pick = "<-" if path == autos[key] else ""
            print(f"| {name} ({H}, {T}, {B}, {I}) | {cell} | {path} | {cpu[key]:.2f} | {r:.2f}x | "
                  f"{wall[key]:.2f} | {rw:.2f}x | {'' if t is None else f'<= {t:.1f}x'} | {met} | {pick} |")
            if t is not None:
                summary.append((name, cell, path, r, t))
    print()
    worst = {}
    for name, cell, path, r, t in summary:
        group = ("custom LSTM variants except FGR" if cell.startswith("lstm") and cell != "lstm_fgr"
                 else "lstm_fgr (4H x 4H recurrent matmul)" if cell == "lstm_fgr" else f"{cell} (auto path)")
        worst.setdefault((name, group), []).append((r, cell))
    print("| shape | group | worst ratio (CPU) | cell | target met |")
    print("|---|---|---:|---|:---:|")
    for (name, group), vals in worst.items():
        r, cell = max(vals)
        t = 1.5 if group.startswith("custom") or cell == "lstm_fgr" else 1.0
        print(f"| {name} | {group} | {r:.2f}x | {cell} | {'yes' if r <= t else 'no'} |")
    print(f"\nload average at the end: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()
