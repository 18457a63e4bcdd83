"""Forward+backward time of every registry cell against the matching torch.nn reference.

    python -m bench.benchmarks.cells [--batch 64] [--T 100] [--hidden 256] [--repeats 7] [--threads N]

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

import os
import platform
import time

import torch
from torch import nn

from bench.benchmarks.common import add_threads_and_seed, cell_list, median_ms, parser, setup, spread, table
from bench.schema import build
from models.config import ModelConfig
from models.recurrent import Recurrent
from models.registry import CELLS, FEEDBACK_ONLY, cell_class


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


def entries_for(cells: list[str], H: int) -> tuple[dict, dict]:
    """{key: (module, reference key, (cell, path))} for every cell's paths and each torch reference."""
    entries, refs = {}, {}
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
    return entries, refs


def time_entries(entries: dict, x: torch.Tensor, warmup: int, repeats: int) -> tuple[dict, dict]:
    """Wall and CPU seconds per entry: warm-up calls, then `repeats` rounds running every entry once."""
    def call(m):
        out = m(x)[0]
        out.sum().backward()
        if x.is_cuda:  # CUDA is asynchronous: time the work, not its launch
            torch.cuda.synchronize()

    def clear(m):
        x.grad = None
        for q in m.parameters():
            q.grad = None

    for m, _, _ in entries.values():
        for _ in range(warmup):
            call(m)
            clear(m)
    times = {k: [] for k in entries}
    cpu = {k: [] for k in entries}
    for _ in range(repeats):
        for k, (m, _, _) in entries.items():
            clear(m)
            c0, t0 = time.process_time(), time.perf_counter()
            call(m)
            times[k].append(time.perf_counter() - t0)
            cpu[k].append(time.process_time() - c0)
    return times, cpu


def met(path: str, ratio: float) -> str:
    if path == "fused":
        return "~" if abs(ratio - 1) <= 0.1 else "no"
    return "yes" if ratio <= 1.3 else "no"


def report(entries: dict, refs: dict, times: dict, cpu: dict, H: int) -> None:
    med = {k: median_ms(v) for k, v in times.items()}
    cmed = {k: median_ms(v) for k, v in cpu.items()}
    rows = []
    for k, (m, rkey, (c, p)) in entries.items():
        if p == "reference":
            continue
        ratio, cratio = med[k] / med[rkey], cmed[k] / cmed[rkey]
        ref_gates = {nn.LSTM: 4, nn.GRU: 3}.get(type(refs[rkey]), 1)
        target = "1.00x" if p == "fused" else "<=1.30x"
        rows.append([c, p, rkey, f"{med[k]:.1f}", f"{spread(times[k]):.0%}", f"{ratio:.2f}x", f"{cmed[k]:.1f}",
                     f"{cratio:.2f}x", target, f"{met(p, cratio)}/{met(p, ratio)}",
                     f"{matmul_flops(m, ref_gates, H, H):.2f}x"])
    print(table(["cell", "path", "reference", "wall ms", "spread", "wall ratio", "CPU ms", "CPU ratio", "target",
                 "met (CPU/wall)", "matmul FLOPs vs ref"], rows,
                ["---"] * 3 + ["---:"] * 6 + [":---:", "---:"]))
    print()
    for rkey in refs:
        print(f"reference {rkey}: wall {med[rkey]:.1f} ms (spread {spread(times[rkey]):.0%}), CPU {cmed[rkey]:.1f} ms")
    print("met: fused '~' = within 10% of the reference (same kernel); custom 'yes' = ratio <= 1.30")
    print(f"load average at the end: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")


def main(argv=None) -> None:
    ap = parser("cells", __doc__)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--T", type=int, default=100, help="sequence length")
    ap.add_argument("--hidden", type=int, default=256, help="hidden size (= input size)")
    ap.add_argument("--repeats", type=int, default=7, help="timed repeats per entry (median)")
    ap.add_argument("--warmup", type=int, default=1, help="untimed calls per entry first")
    ap.add_argument("--cells", default=",".join(c for c in CELLS if c not in FEEDBACK_ONLY),
                    help="comma-separated registry cells (jordan: bench.benchmarks.scaling's feedback table)")
    ap.add_argument("--device", default="cpu", help="cpu or cuda (synchronised timing, TF32 off; the CPU "
                    "columns then time the host side only)")
    add_threads_and_seed(ap)
    args = ap.parse_args(argv)
    setup(args.threads, args.seed)
    B, T, H = args.batch, args.T, args.hidden
    dev = torch.device(args.device)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise SystemExit("--device cuda: no CUDA device visible")
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    entries, refs = entries_for(cell_list(args.cells), H)
    for m, _, _ in entries.values():
        m.to(dev)
    x = torch.randn(B, T, H, device=dev, requires_grad=True)
    times, cpu = time_entries(entries, x, args.warmup, args.repeats)
    print(f"# bench_cells: forward+backward, batch {B}, T {T}, hidden {H} (input {H}), 1 layer, float32")
    where = torch.cuda.get_device_name(dev) if dev.type == "cuda" else platform.processor() or platform.machine()
    print(f"# torch {torch.__version__}, device {dev} ({where}), threads {torch.get_num_threads()}, "
          f"{os.cpu_count()} CPUs; {args.repeats} interleaved repeats, median; "
          f"spread = (max - min) / median")
    print()
    report(entries, refs, times, cpu, H)


if __name__ == "__main__":
    main()
