"""Forward+backward time of every registry cell against the matching torch.nn reference.

    python -m bench.bench_cells [--batch 64] [--T 100] [--hidden 256] [--repeats 7] [--threads N]

One process, all entries interleaved: each repeat runs every entry once (references included),
the table shows medians. A timed call is one forward (batch-first, one layer, input size =
hidden) plus `out.sum().backward()` with the input requiring grad; gradients are cleared
between calls, outside the timing. Paths: `fused` = torch.nn.RNN/LSTM/GRU through
models.recurrent (variants torch can express), `custom` = the custom path (impl=custom).
Two clocks per call: wall (time.perf_counter) and CPU time of this process (time.process_time;
with one thread that is the compute of the call alone, robust to other jobs on a shared machine).
Targets: fused 1.00x (it is the same kernel; differences are noise), custom <= 1.30x; `met` is
judged on the CPU-time ratio and the wall ratio separately.
"matmul FLOPs" is the variant's per-step matmul work, as implemented, relative to the reference
(NIG/NFG/NOG/CIFG drop a gate block; FGR multiplies [y, i, f, o]^{t-1} (4H) by a (4H x 4H)
matrix holding R and the 9 gate-to-gate matrices, zeros in the block-input rows).
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import torch
from torch import nn

from bench.schema import build
from models.config import ModelConfig
from models.recurrent import Recurrent
from models.registry import CELLS, cell_class


def reference_for(cell: str):
    cls = cell_class(cell)
    return cls.torch_module, dict(cls.torch_kwargs)


def ref_name(module, kwargs) -> str:
    extra = ",".join(f"{k}={v}" for k, v in kwargs.items())
    return f"torch.nn.{module.__name__}" + (f"({extra})" if extra else "")


def matmul_flops(net: Recurrent, ref_gates: int, I: int, H: int) -> float:
    """Per-step matmul FLOPs of the variant's layer relative to the torch reference's."""
    if net.fused:
        return 1.0
    cell = net.layers[0][0]
    rec = cell.recurrent_matrix() if hasattr(cell, "recurrent_matrix") else cell.weight_hh
    return (cell.weight_ih.numel() + rec.numel()) / (ref_gates * H * (I + H))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.bench_cells", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--T", type=int, default=100, help="sequence length")
    ap.add_argument("--hidden", type=int, default=256, help="hidden size (= input size)")
    ap.add_argument("--repeats", type=int, default=7, help="timed repeats per entry (median)")
    ap.add_argument("--warmup", type=int, default=1, help="untimed calls per entry first")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--cells", default=",".join(CELLS), help="comma-separated registry cells")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    B, T, H = args.batch, args.T, args.hidden
    cells = [c.strip() for c in args.cells.split(",") if c.strip()]
    for c in cells:
        if c not in CELLS:
            raise SystemExit(f"--cells: unknown cell {c!r}; allowed: {', '.join(CELLS)}")

    entries = {}   # key -> (module, reference key, label tuple)
    refs = {}
    for c in cells:
        mod, kw = reference_for(c)
        rkey = ref_name(mod, kw)
        if rkey not in refs:
            refs[rkey] = mod(H, H, batch_first=True, **kw)
            entries[rkey] = (refs[rkey], rkey, (rkey, "reference"))
        paths = ["fused", "custom"] if cell_class(c).fusable(build(ModelConfig, {"cell": c}, "model.")) else ["custom"]
        for p in paths:
            cfg = build(ModelConfig, {"cell": c, "hidden_size": H, "impl": p}, "model.")
            net = Recurrent(H, cfg)
            assert net.fused == (p == "fused")
            entries[f"{c}/{p}"] = (net, rkey, (c, p))

    x = torch.randn(B, T, H, requires_grad=True)

    def call(m):
        out = m(x)[0]
        out.sum().backward()

    def clear(m):
        x.grad = None
        for q in m.parameters():
            q.grad = None

    for m, _, _ in entries.values():
        for _ in range(args.warmup):
            call(m)
            clear(m)
    times = {k: [] for k in entries}
    cpu = {k: [] for k in entries}
    for _ in range(args.repeats):
        for k, (m, _, _) in entries.items():
            clear(m)
            c0, t0 = time.process_time(), time.perf_counter()
            call(m)
            times[k].append(time.perf_counter() - t0)
            cpu[k].append(time.process_time() - c0)
    med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
    cmed = {k: statistics.median(v) * 1e3 for k, v in cpu.items()}

    print(f"# bench_cells: forward+backward, batch {B}, T {T}, hidden {H} (input {H}), 1 layer, float32")
    print(f"# torch {torch.__version__}, threads {torch.get_num_threads()}, {os.cpu_count()} CPUs, "
          f"{platform.processor() or platform.machine()}; {args.repeats} interleaved repeats, median; "
          f"spread = (max - min) / median")
    print()
    def met(p, ratio):
        if p == "fused":
            return "~" if abs(ratio - 1) <= 0.1 else "no"
        return "yes" if ratio <= 1.3 else "no"

    print("| cell | path | reference | wall ms | spread | wall ratio | CPU ms | CPU ratio | target | met (CPU/wall) | matmul FLOPs vs ref |")
    print("|---|---|---|---:|---:|---:|---:|---:|---:|:---:|---:|")
    for k, (m, rkey, (c, p)) in entries.items():
        if p == "reference":
            continue
        ratio, cratio = med[k] / med[rkey], cmed[k] / cmed[rkey]
        ref_gates = {nn.LSTM: 4, nn.GRU: 3}.get(type(refs[rkey]), 1)
        spread = (max(times[k]) - min(times[k])) * 1e3 / med[k]
        target = "1.00x" if p == "fused" else "<=1.30x"
        print(f"| {c} | {p} | {rkey} | {med[k]:.1f} | {spread:.0%} | {ratio:.2f}x | {cmed[k]:.1f} | {cratio:.2f}x | "
              f"{target} | {met(p, cratio)}/{met(p, ratio)} | {matmul_flops(m, ref_gates, H, H):.2f}x |")
    print()
    for rkey in refs:
        spread = (max(times[rkey]) - min(times[rkey])) * 1e3 / med[rkey]
        print(f"reference {rkey}: wall {med[rkey]:.1f} ms (spread {spread:.0%}), CPU {cmed[rkey]:.1f} ms")
    print("met: fused '~' = within 10% of the reference (same kernel); custom 'yes' = ratio <= 1.30")
    print(f"load average at the end: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()
