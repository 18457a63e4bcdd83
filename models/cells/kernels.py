"""The C++ CPU scans of the custom path (models/cells/csrc/scan.cpp), built on first use.

`available()` is True when the extension could be built and loaded (torch.utils.cpp_extension:
a C++ compiler and ninja; the build is cached under TORCH_EXTENSIONS_DIR, by default
~/.cache/torch_extensions, one directory per checkout (`build_directory`), and reused by every
later process). `RNNBENCH_CPU_KERNELS=0` turns
the kernels off: the Python scans and F.linear run, and `auto` keeps torch's fused GRU/RNN, i.e.
every config computes exactly as before the C++ scans (to reproduce a stored run bit for bit).
The kernels need an x86-64 CPU with AVX2 (torch's `get_cpu_capability()` AVX2 or AVX512).
`usable(*tensors)` says whether a call can take them: CPU, float32 or float64.
A failed build is a warning, never an error: the Python scans are the same equations.
"""
from __future__ import annotations

import functools
import hashlib
import os
import shutil
import sys
import warnings
from pathlib import Path

import torch
from torch.autograd.function import once_differentiable
from torch.utils import cpp_extension

_SRC = Path(__file__).parent / "csrc" / "scan.cpp"
_state: dict = {}


def available() -> bool:
    """The C++ scans are built and loaded (building them on the first call), and not switched
    off by RNNBENCH_CPU_KERNELS=0."""
    if os.environ.get("RNNBENCH_CPU_KERNELS", "1") == "0":
        return False
    if "ok" not in _state:
        _state["ok"] = _load()
    return _state["ok"]


def _load() -> bool:
    return load_extension("rnnbench_scan", _SRC, "lstm_forward", "C++ scans",
                          "; the custom path runs its Python scans")


def load_extension(name: str, src: Path, probe: str, what: str, fallback: str = "") -> bool:
    """Build (once, in this checkout's build directory) and load the AVX2 C++ extension `name`
    from `src`; True when its op `probe` is there. A failed build is a warning naming `what`."""
    if torch.backends.cpu.get_cpu_capability() not in ("AVX2", "AVX512"):
        return False                            # built for AVX2 (Sleef's AVX2 exp/tanh)
    try:
        cpp_extension.load(name=name, sources=[str(src)], extra_cflags=["-O3", "-mavx2", "-mfma"],
                           is_python_module=False, verbose=False, build_directory=build_directory(name, src))
        return hasattr(getattr(torch.ops, name), probe)
    except Exception as e:                      # no compiler / ninja / headers: the Python paths
        warnings.warn(f"rnnbench: {what} not available ({type(e).__name__}: {str(e)[:200]}){fallback}")
        return False


def build_directory(name: str, src: Path) -> str:
    """The build directory of extension `name` for this checkout's source `src`: one per source
    path (and Python), under torch's extensions root. With one shared directory, checkouts of
    the project on one machine (git worktrees) rebuild each other's build at every process
    start, since ninja rebuilds whenever build.ninja names another source file."""
    key = hashlib.sha1(str(src.resolve()).encode()).hexdigest()[:10]
    root = os.environ.get("TORCH_EXTENSIONS_DIR") or cpp_extension.get_default_build_root()
    d = Path(root) / f"{name}-py{sys.version_info[0]}{sys.version_info[1]}-{key}"
    d.mkdir(parents=True, exist_ok=True)
    return str(d)


def set_enabled(on: bool) -> None:
    """Turn the kernels off (False) or back on for this process (tests, benchmarks)."""
    _state["off"] = not on


def buildable() -> bool:
    """Whether the C++ extensions can be (or are) built here, without building them: kernels on,
    a CPU with AVX2, ninja and a C++ compiler (CXX or c++) on the PATH. Cheap: what --pack auto asks."""
    if not enabled() or torch.backends.cpu.get_cpu_capability() not in ("AVX2", "AVX512"):
        return False
    return _toolchain(os.environ.get("CXX", "c++"))


@functools.lru_cache(None)
def _toolchain(cxx: str) -> bool:
    """ninja (a `ninja --version` subprocess) and the compiler `cxx` found; once per process and compiler."""
    return cpp_extension.is_ninja_available() and shutil.which(cxx) is not None


def enabled() -> bool:
    """Kernels not switched off (RNNBENCH_CPU_KERNELS=0 or set_enabled(False)); builds nothing.
    Off, the custom path computes exactly as before the C++ scans (Python scans, F.linear)."""
    return not _state.get("off") and os.environ.get("RNNBENCH_CPU_KERNELS", "1") != "0"


def usable(*tensors) -> bool:
    return (enabled() and all(t.device.type == "cpu" and t.dtype in (torch.float32, torch.float64)
                for t in tensors if t is not None) and available())


def ops():
    return torch.ops.rnnbench_scan


def _none(t):
    return None if t is None or t.numel() == 0 else t


def _mask(mask, like):
    return like.new_empty(0, dtype=torch.bool) if mask is None else mask.reshape(mask.shape[0], -1)


def _e(t, like):
    return like.new_empty(0) if t is None else t


class LSTMScan(torch.autograd.Function):
    """models.cells.lstm._LSTMScan in C++: same inputs, outputs and saved buffers."""

    @staticmethod
    def forward(ctx, xp, h0, c0, a0, w_rec, w_ci, w_cf, w_co, mask, spec, keep=True):
        H = h0.shape[-1]
        m = _mask(mask, xp)
        S, C, A, HC = ops().lstm_forward(xp, h0, c0, _e(a0, xp), w_rec, _e(w_ci, xp), _e(w_cf, xp),
                                         _e(w_co, xp), m, spec, keep)
        ctx.spec = spec
        ctx.fgr = a0 is not None
        ctx.save_for_backward(S, C, A, HC, w_rec, _e(w_ci, xp), _e(w_cf, xp), _e(w_co, xp), m)
        T = xp.shape[0]
        aT = S[T, :, H:].clone() if a0 is not None else xp.new_zeros(0)
        return S[1:, :, :H].clone(), S[T, :, :H].clone(), C[T if keep else T % 2].clone(), aT

    @staticmethod
    @once_differentiable
    def backward(ctx, dhs, dhT, dcT, daT):
        S, C, A, HC, w_rec, w_ci, w_cf, w_co, m = ctx.saved_tensors
        z = lambda g, ref: torch.zeros_like(ref) if g is None else g
        H = C.shape[-1]
        dhs = z(dhs, S[1:, :, :H])
        dA, dh, dc, da, dW, dci, dcf, dco = ops().lstm_backward(
            dhs, z(dhT, S[0, :, :H]), z(dcT, C[0]), z(daT, S[0, :, H:]) if ctx.fgr else dhs.new_empty(0),
            S, C, A, HC, w_rec, w_ci, w_cf, w_co, m, ctx.spec)
        return (dA, dh, dc, _none(da), dW, _none(dci), _none(dcf), _none(dco), None, None, None)


class GRUScan(torch.autograd.Function):
    """models.cells.gru._GRUScan in C++."""

    @staticmethod
    def forward(ctx, xp, h0, w_hh, b_hn, mask, keep=True):
        m = _mask(mask, xp)
        S, G = ops().gru_forward(xp, h0, w_hh, b_hn, m, keep)
        ctx.save_for_backward(S, G, w_hh, m)
        return S[1:].clone(), S[-1].clone()

    @staticmethod
    @once_differentiable
    def backward(ctx, dhs, dhT):
        S, G, w_hh, m = ctx.saved_tensors
        dhs = torch.zeros_like(S[1:]) if dhs is None else dhs
        dhT = torch.zeros_like(S[0]) if dhT is None else dhT
        dX, dh, dW, db = ops().gru_backward(dhs, dhT, S, G, w_hh, m)
        return dX, dh, dW, db, None, None


class ElmanScan(torch.autograd.Function):
    """models.cells.rnn._ElmanScan in C++."""

    @staticmethod
    def forward(ctx, xp, h0, w_hh, mask, relu: bool):
        m = _mask(mask, xp)
        (S,) = ops().elman_forward(xp, h0, w_hh, m, relu)
        ctx.save_for_backward(S, w_hh, m)
        ctx.relu = relu
        return S[1:].clone(), S[-1].clone()

    @staticmethod
    @once_differentiable
    def backward(ctx, dhs, dhT):
        S, w_hh, m = ctx.saved_tensors
        dhs = torch.zeros_like(S[1:]) if dhs is None else dhs
        dhT = torch.zeros_like(S[0]) if dhT is None else dhT
        dA, dh, dW = ops().elman_backward(dhs, dhT, S, w_hh, m, ctx.relu)
        return dA, dh, dW, None, None


def lstm_spec(spec: dict) -> list[int]:
    """The int list the C++ LSTM scan takes for a cell's `spec` dict (-1 = gate absent)."""
    off = lambda k: -1 if spec[k] is None else spec[k]
    sig = list(spec["sig"]) + [-1] * (3 - len(spec["sig"]))
    return [off("i"), off("f"), off("g"), off("o"), int(spec["peepholes"]), int(spec["fgr"]),
            int(spec["coupled"]), int(spec["input_activation"]), int(spec["output_activation"]),
            len(spec["sig"]), *sig]
