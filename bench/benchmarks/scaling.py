"""Time and memory of training (full BPTT) and streaming inference versus sequence length T.

    python -m bench.benchmarks.scaling [--cells lstm,lstm_vanilla] [--T 64,128,256,512,1024] ...

Per cell and T:
* train: one forward over the whole (B, T, I) batch + `out.sum().backward()` (full BPTT).
* stream: inference under no_grad over the same T steps in chunks of `--chunk` steps, the state
  carried from chunk to chunk (outputs of a chunk are dropped before the next).
Time: median of `--repeats` runs (cells and T interleaved per repeat).
Memory, measured on CPU (no allocator statistics there), two ways:
* `peak MB`: peak of live tensor storage bytes allocated by torch ops during the call, tracked
  by a TorchDispatchMode that records every op's new output storages (outputs aliasing an
  input -- views, in-place, out= -- are not new) and drops them when their storage is freed
  (StorageWeakRef). Tensors that exist before the call (inputs, parameters) are not counted;
  scratch memory inside a kernel (e.g. oneDNN workspaces) is not seen.
* `saved MB` (train only): bytes of the distinct storages saved for backward, via
  torch.autograd.graph.saved_tensors_hooks (the activation memory of BPTT).
The memory runs are separate from the timed runs (the tracker slows ops down).
Fits: least squares line y = a + b*T over the T values, slope b and R^2.

`--feedback`: the "BPTT h(x, y*)" row (Solberg slides' complexity table) instead: training of the
output-feedback models (models/feedback.py, `--classes` outputs fed back one-hot) against T, for
* `jordan h(x,y*)`: the Jordan network teacher-forced, h^t = tanh(U x^t + W y*^{t-1} + b): the
  state depends on x and y* only, so every step is computed at once (parallel over time);
* `rnn h(x,s,y*)`: the usual recurrence beside the same feedback, rnn_tanh teacher-forced, one
  whole-sequence call whose scan is serial over t;
* `jordan h(x,y^)`: the Jordan network free-running (its own previous prediction), step by step.
Serial steps: calls of the recurrence's tanh in the forward, counted by a TorchDispatchMode with
the Python scans (the C++ scans are opaque to it); one call covers all steps it is given, so the
count is the number of steps that must wait for the previous one. Memory: saved for backward and
peak, as above. Ratios: each model over `jordan h(x,y*)`.
"""
from __future__ import annotations

import os
import time

import torch
from torch.multiprocessing.reductions import StorageWeakRef
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from bench.benchmarks.common import add_threads_and_seed, cell_list, median_ms, parser, setup, table
from bench.schema import build
from models.cells import kernels
from models.config import ModelConfig
from models.feedback import OutputFeedback
from models.recurrent import Recurrent


class PeakMemory(TorchDispatchMode):
    """Peak bytes of live tensor storages created by torch ops while active."""

    def __init__(self):
        super().__init__()
        self.live: dict[int, tuple] = {}
        self.current = self.peak = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        # outputs sharing storage with an input (views, in-place, out=) are not new allocations
        inputs = {t.untyped_storage().data_ptr() for t in tree_flatten((args, kwargs))[0]
                  if isinstance(t, torch.Tensor)}
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor) and t.device.type == "cpu":
                s = t.untyped_storage()
                key = s.data_ptr()
                if key in inputs:
                    continue
                old = self.live.get(key)
                if old is not None and old[0].expired():
                    self.current -= old[1]
                    old = None
                if old is None and s.nbytes() > 0:
                    self.live[key] = (StorageWeakRef(s), s.nbytes())
                    self.current += s.nbytes()
        self.peak = max(self.peak, self.current)
        for key in [k for k, (w, _) in self.live.items() if w.expired()]:
            self.current -= self.live.pop(key)[1]
        return out


class SavedBytes:
    """Bytes of the distinct storages autograd saves for backward while active."""

    def __init__(self):
        self.seen: dict[int, int] = {}

    def pack(self, t):
        s = t.untyped_storage()
        self.seen[s.data_ptr()] = s.nbytes()
        return t

    def __enter__(self):
        self._ctx = torch.autograd.graph.saved_tensors_hooks(self.pack, lambda t: t)
        self._ctx.__enter__()
        return self

    def __exit__(self, *exc):
        self._ctx.__exit__(*exc)

    @property
    def total(self) -> int:
        return sum(self.seen.values())


def linfit(xs, ys):
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    b = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx
    a = my - b * mx
    ss_res = sum((y - a - b * x) ** 2 for x, y in zip(xs, ys))
    ss_tot = sum((y - my) ** 2 for y in ys)
    return b, (1 - ss_res / ss_tot) if ss_tot > 0 else float("nan")


def train(net, x):
    """Full BPTT: one forward over the whole batch, `out.sum().backward()`."""
    xg = x.requires_grad_(True)
    out = net(xg)[0]
    out.sum().backward()
    xg.grad = None
    for p in net.parameters():
        p.grad = None


def stream(net, x, chunk: int):
    """Inference under no_grad in chunks of `chunk` steps, the state carried between chunks."""
    with torch.no_grad():
        state = None
        for s in range(0, x.shape[1], chunk):
            out, state = net(x[:, s:s + chunk], state=state)
            del out


def time_modes(nets: dict, xs: dict, modes: dict, repeats: int) -> dict:
    """{(cell, mode, T): [seconds]}, after one warm-up call per cell and mode; T and cells interleaved."""
    for net in nets.values():
        for fn in modes.values():
            fn(net, next(iter(xs.values())))
    times = {(c, m, T): [] for c in nets for m in modes for T in xs}
    for _ in range(repeats):
        for T, x in xs.items():
            for c, net in nets.items():
                for m, fn in modes.items():
                    t0 = time.perf_counter()
                    fn(net, x)
                    times[(c, m, T)].append(time.perf_counter() - t0)
    return times


def measure_memory(nets: dict, xs: dict, modes: dict) -> tuple[dict, dict]:
    """Peak live bytes per (cell, mode, T) and bytes saved for backward per (cell, T)."""
    peak, saved = {}, {}
    for T in xs:
        for c, net in nets.items():
            for m, fn in modes.items():
                x = xs[T].detach()
                if m == "train":
                    x.requires_grad_(True)
                    with PeakMemory() as pm:
                        with SavedBytes() as sb:
                            out = net(x)[0]
                        out.sum().backward()
                        del out
                    saved[(c, T)] = sb.total
                    x.grad = None
                    for p in net.parameters():
                        p.grad = None
                else:
                    with PeakMemory() as pm:
                        fn(net, x)
                peak[(c, m, T)] = pm.peak
    return peak, saved


def report(nets: dict, Ts: list[int], modes: dict, times: dict, peak: dict, saved: dict) -> None:
    MB = 1e6
    rows = []
    for c, net in nets.items():
        for m in modes:
            for T in Ts:
                sv = f"{saved[(c, T)] / MB:.1f}" if m == "train" else "-"
                rows.append([c, "fused" if net.fused else "custom", m, T, f"{median_ms(times[(c, m, T)]):.1f}",
                             f"{peak[(c, m, T)] / MB:.1f}", sv])
    print(table(["cell", "path", "mode", "T", "time ms", "peak MB", "saved MB"], rows, ["---"] * 3 + ["---:"] * 4))
    print()
    rows = []
    for c in nets:
        for m in modes:
            tb, tr = linfit(Ts, [median_ms(times[(c, m, T)]) for T in Ts])
            pb, pr = linfit(Ts, [peak[(c, m, T)] / MB for T in Ts])
            sv = ["-", "-"]
            if m == "train":
                sb_, sr = linfit(Ts, [saved[(c, T)] / MB for T in Ts])
                sv = [f"{sb_:.4f}", f"{sr:.4f}"]
            rows.append([c, m, f"{tb:.3f}", f"{tr:.4f}", f"{pb:.4f}", f"{pr:.4f}"] + sv)
    print(table(["cell", "mode", "time slope ms/step", "time R^2", "peak slope MB/step", "peak R^2",
                 "saved slope MB/step", "saved R^2"], rows, ["---"] * 2 + ["---:"] * 6))
    print("R^2 of a flat series (stream memory) is meaningless: its slope is the number to read.")


class CountTanh(TorchDispatchMode):
    """Calls of aten.tanh / tanh_ while active (the serial steps of a tanh recurrence)."""

    def __init__(self):
        super().__init__()
        self.calls = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.overloadpacket in (torch.ops.aten.tanh, torch.ops.aten.tanh_):
            self.calls += 1
        return func(*args, **(kwargs or {}))


FEEDBACK_MODELS = {"jordan h(x,y*)": ("jordan", 1.0), "rnn h(x,s,y*)": ("rnn_tanh", 1.0),
                   "jordan h(x,y^)": ("jordan", 0.0)}


def feedback_train(entry, xy) -> None:
    """Forward (fed as the entry's ratio says) + `logits.sum().backward()`."""
    (net, ratio), (x, y) = entry, xy
    net.decode(x, y, ratio)[0].sum().backward()
    for p in net.parameters():
        p.grad = None


def feedback_counts(nets: dict, xys: dict) -> tuple[dict, dict, dict]:
    """Serial steps (tanh calls, Python scans), saved-for-backward and peak bytes per (model, T)."""
    serial, saved, peak = {}, {}, {}
    on = kernels.enabled()
    kernels.set_enabled(False)
    try:
        for T, (x, y) in xys.items():
            for name, (net, ratio) in nets.items():
                with CountTanh() as ct, torch.no_grad():
                    net.decode(x, y, ratio)
                serial[(name, T)] = ct.calls
    finally:
        kernels.set_enabled(on)
    for T, (x, y) in xys.items():
        for name, (net, ratio) in nets.items():
            with PeakMemory() as pm:
                with SavedBytes() as sb:
                    logits = net.decode(x, y, ratio)[0]
                logits.sum().backward()
                del logits
            saved[(name, T)], peak[(name, T)] = sb.total, pm.peak
            for p in net.parameters():
                p.grad = None
    return serial, saved, peak


def feedback_main(args, Ts: list[int]) -> None:
    B, I, C = args.batch, args.input, args.classes
    nets = {}
    for name, (cell, ratio) in FEEDBACK_MODELS.items():
        cfg = build(ModelConfig, {"cell": cell, "hidden_size": args.hidden, "impl": "custom",
                                  "output_feedback": "teacher" if ratio else "prediction"}, "model.")
        nets[name] = (OutputFeedback(I, C, cfg), ratio)
    xys = {T: (torch.randn(B, T, I), torch.randint(0, C, (B, T))) for T in Ts}
    times = time_modes(nets, xys, {"train": feedback_train}, args.repeats)
    serial, saved, peak = feedback_counts(nets, xys)
    ref = next(iter(nets))
    print(f"# bench_scaling --feedback: BPTT h(x, y*): batch {B}, input {I}, hidden {args.hidden}, "
          f"{C} classes fed back one-hot, 1 layer, float32, custom path")
    print(f"# torch {torch.__version__}, threads {torch.get_num_threads()}, {os.cpu_count()} CPUs; "
          f"time = median of {args.repeats} interleaved runs of forward + backward")
    print("# serial = tanh calls of the forward (Python scans): steps that wait for the previous one;")
    print(f"# saved/peak MB as in the main table; x ref = over {ref}")
    print()
    MB, rows = 1e6, []
    for T in Ts:
        t_ref, s_ref = median_ms(times[(ref, "train", T)]), saved[(ref, T)]
        for name in nets:
            t = median_ms(times[(name, "train", T)])
            rows.append([T, name, serial[(name, T)], f"{t:.1f}", f"{t / t_ref:.2f}", f"{saved[(name, T)] / MB:.2f}",
                         f"{saved[(name, T)] / s_ref:.2f}", f"{peak[(name, T)] / MB:.2f}"])
    print(table(["T", "model", "serial steps", "time ms", "time x ref", "saved MB", "saved x ref", "peak MB"],
                rows, ["---:", "---"] + ["---:"] * 6))
    print()
    rows = []
    for name in nets:
        sl = [linfit(Ts, [f(name, T) for T in Ts])[0] for f in
              (lambda n, T: serial[(n, T)], lambda n, T: median_ms(times[(n, "train", T)]),
               lambda n, T: saved[(n, T)] / MB)]
        rows.append([name, f"{sl[0]:.2f}", f"{sl[1]:.3f}", f"{sl[2]:.4f}"])
    print(table(["model", "serial steps per step of T", "time slope ms/step", "saved slope MB/step"],
                rows, ["---"] + ["---:"] * 3))


def main(argv=None) -> None:
    ap = parser("scaling", __doc__)
    ap.add_argument("--cells", default="lstm,lstm_vanilla", help="comma-separated registry cells")
    ap.add_argument("--impl", default="auto", choices=("auto", "custom"))
    ap.add_argument("--T", default="64,128,256,512,1024", help="comma-separated sequence lengths")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--input", type=int, default=64, help="input features")
    ap.add_argument("--chunk", type=int, default=64, help="streaming chunk length")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--feedback", action="store_true", help="the BPTT h(x, y*) table (output feedback)")
    ap.add_argument("--classes", type=int, default=16, help="--feedback: output classes fed back")
    add_threads_and_seed(ap)
    args = ap.parse_args(argv)
    setup(args.threads, args.seed)
    Ts = [int(t) for t in args.T.split(",")]
    if args.feedback:
        return feedback_main(args, Ts)
    B, I = args.batch, args.input
    nets = {c: Recurrent(I, build(ModelConfig, {"cell": c, "hidden_size": args.hidden, "impl": args.impl},
                                  "model.")) for c in cell_list(args.cells)}
    xs = {T: torch.randn(B, T, I) for T in Ts}
    modes = {"train": train, "stream": lambda net, x: stream(net, x, args.chunk)}
    times = time_modes(nets, xs, modes, args.repeats)
    peak, saved = measure_memory(nets, xs, modes)
    print(f"# bench_scaling: batch {B}, input {I}, hidden {args.hidden}, 1 layer, float32, impl {args.impl}, "
          f"stream chunk {args.chunk}")
    print(f"# torch {torch.__version__}, threads {torch.get_num_threads()}, {os.cpu_count()} CPUs; "
          f"time = median of {args.repeats} interleaved runs")
    print("# memory: peak = peak live bytes of tensor storages allocated by torch ops during the call "
          "(TorchDispatchMode + StorageWeakRef; inputs/parameters allocated before the call excluded);")
    print("#         saved = bytes of distinct storages saved for backward (saved_tensors_hooks), train only")
    print()
    report(nets, Ts, modes, times, peak, saved)


if __name__ == "__main__":
    main()
