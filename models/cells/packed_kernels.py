"""The C++ packed scans (models/cells/csrc/packed_scan.cpp): one layer of K members in one call.

    hs = packed_layer(kind, x, w_ih, w_hh, b_ih, b_hh)   # x (K, T, B, I) time-major -> hs (K, T, B, H)
    hs = packed_layer(kind, None, ..., ids=tokens)       # one-hot inputs by their tokens (K, T, B)

`kind` is rnn_tanh, rnn_relu or gru (torch's equations and weight layout; parameters stacked
over the K members, e.g. w_ih (K, G*H, I)); zero initial state. The input projection is one
bmm; the recurrence, forward and BPTT, is C++ (one register-blocked matmul per step on weights
that stay in cache); every parameter gets a gradient tensor of its own (b_ih and b_hh never share
one, so per-member in-place clipping scales each once). Built on first use, as models/cells/kernels.py
builds the single-run scans, under its own name (`rnnbench_packed`); `available()` is False where
those are off (RNNBENCH_CPU_KERNELS=0) or cannot be built, and the packed group takes its
autograd recurrence (models.packed `bmm`).
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch.autograd.function import once_differentiable

from models.cells import kernels

_SRC = Path(__file__).parent / "csrc" / "packed_scan.cpp"
KINDS = ("rnn_tanh", "rnn_relu", "gru")
_state: dict = {}


def available() -> bool:
    """Built and loaded (building on the first call), and the C++ kernels not switched off."""
    if not kernels.enabled():
        return False
    if "ok" not in _state:
        _state["ok"] = _load()
    return _state["ok"]


def _load() -> bool:
    return kernels.load_extension("rnnbench_packed", _SRC, "gru_forward", "C++ packed scans")


def usable(kind: str, x: torch.Tensor) -> bool:
    return (kind in KINDS and x.device.type == "cpu" and x.dtype in (torch.float32, torch.float64)
            and x.shape[1] >= 1 and available())


def _ops():
    return torch.ops.rnnbench_packed


_ws: dict = {}


def _workspace(name: str, shape, like: torch.Tensor) -> torch.Tensor:
    """A buffer reused call after call (fresh multi-MB tensors cost a page fault per 4 kB), for
    the tensors a call consumes before it returns (xp in forward, dxp in backward), never for
    one that outlives it."""
    key = (name, tuple(shape), like.dtype, like.device)
    buf = _ws.get(key)
    if buf is None:
        if len(_ws) > 16:
            _ws.clear()
        buf = _ws[key] = like.new_empty(shape)
    return buf


class _Layer(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, w_ih, w_hh, b_ih, b_hh, kind: str, ids=None):
        K, G, I = w_ih.shape
        T, B = (ids if x is None else x).shape[1:3]
        H = w_hh.shape[-1]
        if kind == "gru":   # b_hn stays inside the reset gate
            b_in = b_ih + torch.cat([b_hh[:, :2 * H], torch.zeros_like(b_hh[:, 2 * H:])], 1)
        else:
            b_in = b_ih + b_hh
        none = w_hh.new_empty(0)
        if x is None:       # one-hot inputs: the kernel reads W's column at each token (W x, exactly)
            ids = ids.contiguous()
            args = (none, ids, w_ih.transpose(1, 2).contiguous(), b_in)
        else:
            xp = torch.baddbmm(b_in.unsqueeze(1), x.reshape(K, T * B, I), w_ih.transpose(1, 2),
                               out=_workspace("xp", (K, T * B, G), w_hh)).view(K, T, B, G)
            ids = torch.empty(0, dtype=torch.long)
            args = (xp, ids, none, none)
        if kind == "gru":
            hs, gates = _ops().gru_forward(args[0], w_hh, b_hh[:, 2 * H:], *args[1:])
            ctx.save_for_backward(x if x is not None else none, ids, w_ih, w_hh, hs, gates)
        else:
            (hs,) = _ops().elman_forward(args[0], w_hh, kind == "rnn_relu", *args[1:])
            ctx.save_for_backward(x if x is not None else none, ids, w_ih, w_hh, hs)
        ctx.kind, ctx.onehot = kind, x is None
        return hs

    @staticmethod
    @once_differentiable
    def backward(ctx, dhs):
        x, ids, w_ih, w_hh, hs, *rest = ctx.saved_tensors
        K, G, I = w_ih.shape
        T, B, H = hs.shape[1:]
        none = hs.new_empty(0)
        dxp = none if ctx.onehot else _workspace("dxp", (K, T, B, G), hs)
        dwt = hs.new_zeros(K, I, G) if ctx.onehot else none
        if ctx.kind == "gru":
            dw_hh, db_ih, db_hn = _ops().gru_backward(dhs, hs, rest[0], w_hh, dxp, ids, dwt)
            db_hh = torch.cat([db_ih[:, :2 * H], db_hn], 1)
        else:
            dw_hh, db_ih = _ops().elman_backward(dhs, hs, w_hh, ctx.kind == "rnn_relu", dxp, ids, dwt)
            db_hh = db_ih.clone()
        if ctx.onehot:
            return None, dwt.transpose(1, 2), dw_hh, db_ih, db_hh, None, None
        flat = dxp.view(K, T * B, G)
        dw_ih = torch.bmm(x.reshape(K, T * B, I).transpose(1, 2), flat).transpose(1, 2)   # x^T dxp: the small one transposed
        dx = torch.bmm(flat, w_ih).view(K, T, B, I) if ctx.needs_input_grad[0] else None
        return dx, dw_ih, dw_hh, db_ih, db_hh, None, None


def packed_layer(kind, x, w_ih, w_hh, b_ih, b_hh, ids=None) -> torch.Tensor:
    """One layer; `ids` (K, T, B) int64 instead of x: one-hot inputs given by their tokens."""
    return _Layer.apply(x, w_ih, w_hh, b_ih, b_hh, kind, ids)
