"""Packed recurrences: K models of one shape run as one batched model (one bmm per step over K).

    out = packed_recurrent(rnns, x, mode)  # rnns: K `Recurrent` layers, x (K, B, T, I) -> (K, B, T, H)
    y = packed_linear(linears, h)          # K `nn.Linear` heads, h (K, ..., H) -> (K, ..., O)

The members keep their own parameters (each an ordinary `Recurrent`, built and initialised as an
unpacked run builds it); every forward stacks them into (K, ...) tensors, so autograd hands each
member exactly the gradient of its own loss (losses summed over members do not mix) and each
member's parameters, optimizer and checkpoint stay those of its unpacked run. `mode="members"`
runs each member's own recurrence instead (see `recurrence`): the rest of the step stays packed.
`mode="cpp"` runs each layer of the K members in one C++ call (models/cells/packed_kernels.py).

Packable variants (`packable_model`): every sequence cell, unidirectional, any number of layers, no
residual connections and no dropout (dropout masks come from the process-wide RNG). The batched
recurrences (`bmm`, `cpp`) take the cells torch.nn.RNN/LSTM/GRU express (`BATCHED_CELLS`: `rnn_tanh`,
`rnn_relu`, `irnn`, `gru` and `lstm` without Greff switches, any init); the others (Greff LSTM
variants, the ladder, leaky and deep-transition cells, ...) always run `members` (each member's own
module: exact by construction). The equations are torch's, gate blocks in torch order (LSTM i, f,
g, o; GRU r, z, n with b_hn inside the reset gate).
"""
from __future__ import annotations

import os
from typing import Optional, Sequence

import torch
from torch import nn

from models.cells import kernels, packed_kernels
from models.registry import TREE_CELLS, cell_class

BATCHED_CELLS = ("rnn_tanh", "rnn_relu", "irnn", "gru", "lstm")
RECURRENCES = ("bmm", "members", "cpp")


def packable_model(model_cfg) -> Optional[str]:
    """None when K models of this config can be packed; else why not (one line)."""
    m = model_cfg
    if m.cell in TREE_CELLS:
        return f"model.cell={m.cell} (a tree cell)"
    for key, ok in (("bidirectional", not m.bidirectional), ("residual", not m.residual),
                    ("dropout", m.dropout == 0), ("output_feedback", m.output_feedback == "none")):
        if not ok:
            return f"model.{key}={getattr(m, key)}"
    return None


def batched(model_cfg) -> bool:
    """Whether the batched recurrences (`bmm`, `cpp`) can run this (packable) config."""
    return model_cfg.cell in BATCHED_CELLS and cell_class(model_cfg.cell).fusable(model_cfg)


def config_kind(model_cfg) -> Optional[str]:
    """rnn_tanh / rnn_relu / gru / lstm for a batched config, else None (members only)."""
    if not batched(model_cfg):
        return None
    cls = cell_class(model_cfg.cell)
    if cls.torch_module is nn.RNN:
        return "rnn_" + cls.torch_kwargs.get("nonlinearity", "tanh")
    return "lstm" if cls.torch_module is nn.LSTM else "gru"


def has_packed_kernel(model_cfg) -> bool:
    """Whether the C++ packed scans (models/cells/packed_kernels.py `KINDS`) cover this config's
    cell and can be built here (a compiler and ninja: models.cells.kernels.buildable): the CPU
    packs that beat their runs alone (`--pack auto` packs only these on CPU; without a compiler a
    pack would run member after member, about 1x)."""
    return config_kind(model_cfg) in packed_kernels.KINDS and kernels.buildable()


def _kind(rnn) -> Optional[str]:
    return config_kind(rnn.cfg)


def layer_params(rnn, layer: int) -> tuple:
    """(weight_ih, weight_hh, bias_ih, bias_hh) of one layer, on the fused or the custom path."""
    if rnn.fused:
        m = rnn.rnns[0]
        return tuple(getattr(m, f"{n}_l{layer}") for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"))
    c = rnn.layers[layer][0]
    return c.weight_ih, c.weight_hh, c.bias_ih, c.bias_hh


def _stack(rnns, layer):
    return [torch.stack(ps) for ps in zip(*(layer_params(r, layer) for r in rnns))]


def recurrence(device, rnn=None) -> str:
    """How a packed group runs its recurrence on `device`: `bmm` (one batched matmul per step over
    the K members, autograd) on CUDA; on CPU `cpp` (models/cells/packed_kernels.py: the K members'
    scans, forward and BPTT, in one C++ call) for the tanh/ReLU RNN and the GRU where the C++
    kernels are built, else `members` (each member's own kernel, C++ scan or oneDNN, one after
    another), which bench/benchmarks/packed.py measured faster on CPU than `bmm`: a bmm over K
    small distinct weights does the same FLOPs as K gemms, and elementwise ops on gate slices of
    (K, B, G*H) cost more than the members' fused kernels. RNNBENCH_PACKED_RECURRENCE=bmm|members|cpp
    overrides (`cpp` falls back to `bmm` for a cell it has no kernel for)."""
    env = os.environ.get("RNNBENCH_PACKED_RECURRENCE")
    if env in RECURRENCES and (rnn is None or _kind(rnn) is not None):
        return env
    kind = _kind(rnn) if rnn is not None else None
    if rnn is not None and kind is None:
        return "members"
    if torch.device(device).type == "cuda":
        return "bmm"
    return "cpp" if kind in packed_kernels.KINDS and packed_kernels.available() else "members"


def packed_recurrent(rnns: Sequence, x: torch.Tensor, mode: str = "bmm") -> torch.Tensor:
    """K unidirectional `Recurrent` modules of one shape on x (K, B, T, I) -> outputs (K, B, T, H)."""
    if _kind(rnns[0]) is None:
        mode = "members"
    if mode == "cpp":
        return packed_recurrent_tm(rnns, x.transpose(1, 2), mode).transpose(1, 2)
    if mode == "members":
        return torch.stack([r(x[k])[0] for k, r in enumerate(rnns)])
    kind = _kind(rnns[0])
    K, B, T, _ = x.shape
    H = rnns[0].hidden_size
    inp = x
    for layer in range(rnns[0].num_layers):
        w_ih, w_hh, b_ih, b_hh = _stack(rnns, layer)
        if kind == "gru":   # b_hn stays inside the reset gate
            b_in = b_ih + torch.cat([b_hh[:, :2 * H], torch.zeros_like(b_hh[:, 2 * H:])], 1)
            b_rec = torch.cat([torch.zeros_like(b_hh[:, :2 * H]), b_hh[:, 2 * H:]], 1)
        else:
            b_in, b_rec = b_ih + b_hh, None
        xp = PackedLinear.apply(inp.reshape(K, B * T, -1), w_ih, b_in)
        xp = xp.view(K, B, T, -1).permute(2, 0, 1, 3).contiguous()       # (T, K, B, G*H)
        hs = _scan(kind, xp, w_hh, b_rec, H)
        inp = hs.permute(1, 2, 0, 3)                                      # (K, B, T, H)
    return inp


def packed_recurrent_tm(rnns: Sequence, x, mode: str = "cpp", ids=None) -> torch.Tensor:
    """As `packed_recurrent`, time-major: x (K, T, B, I) -> (K, T, B, H). `cpp`: each layer one
    C++ call over the K members (models/cells/packed_kernels.py), where it takes the cell and
    dtype; else `bmm`. x may be a function that returns it, and `ids` (K, T, B) the tokens of
    one-hot inputs, which the C++ layer reads instead (a gather in place of W x)."""
    kind = _kind(rnns[0])
    if callable(x):
        if mode == "cpp" and kind is not None and ids is not None and packed_kernels.usable(kind, ids_dtype(rnns[0])):
            out = packed_kernels.packed_layer(kind, None, *_stack(rnns, 0), ids=ids)
            for layer in range(1, rnns[0].num_layers):
                out = packed_kernels.packed_layer(kind, out, *_stack(rnns, layer))
            return out
        x = x()
    if kind is None:
        mode = "members"
    if mode != "cpp" or not packed_kernels.usable(kind, x):
        return packed_recurrent(rnns, x.transpose(1, 2), "bmm" if mode == "cpp" else mode).transpose(1, 2)
    inp = x
    for layer in range(rnns[0].num_layers):
        inp = packed_kernels.packed_layer(kind, inp, *_stack(rnns, layer))
    return inp


def ids_dtype(rnn) -> torch.Tensor:
    """An empty tensor of the layer's parameter dtype and device (what the kernels' `usable` checks)."""
    return next(rnn.parameters()).new_empty(0, 1, 1)


def _scan(kind, xp, w_hh, b_rec, H) -> torch.Tensor:
    """The recurrence over time-major xp (T, K, B, G*H), zero initial state -> (T, K, B, H), by
    autograd (measured faster on CPU at the sweeps' sizes than a hand-written BPTT on gate slices)."""
    _, K, B, _ = xp.shape
    w_t = w_hh.transpose(1, 2)
    h = xp.new_zeros(K, B, H)
    c = xp.new_zeros(K, B, H) if kind == "lstm" else None
    outs = []
    for x_t in xp.unbind(0):   # one backward node for all steps (indexing xp[t] costs O(T) each)
        if kind == "rnn_tanh":
            h = torch.tanh(torch.baddbmm(x_t, h, w_t))
        elif kind == "rnn_relu":
            h = torch.relu(torch.baddbmm(x_t, h, w_t))
        elif kind == "lstm":
            g = torch.baddbmm(x_t, h, w_t)
            i, f, o = torch.sigmoid(g[..., :H]), torch.sigmoid(g[..., H:2 * H]), torch.sigmoid(g[..., 3 * H:])
            c = torch.addcmul(f * c, i, torch.tanh(g[..., 2 * H:3 * H]))
            h = o * torch.tanh(c)
        else:
            gh = torch.baddbmm(b_rec.unsqueeze(1), h, w_t)
            rz = torch.sigmoid(x_t[..., :2 * H] + gh[..., :2 * H])
            r, z = rz[..., :H], rz[..., H:]
            n = torch.tanh(torch.addcmul(x_t[..., 2 * H:], r, gh[..., 2 * H:]))
            h = torch.addcmul(n, z, h - n)                                # (1 - z) n + z h
        outs.append(h)
    return torch.stack(outs)


class PackedLinear(torch.autograd.Function):
    """y = b + x W^T over K members, x (K, N, F), w (K, O, F), b (K, O) -> (K, N, O). Its backward
    forms the weight gradient as g^T x (K, O, F), as nn.Linear does: autograd's bmm backward forms
    it as x^T g (K, F, O), an output O wide, which MKL's batched gemm ran 4x slower at the heads'
    shapes (O = 1-10 classes; bench/benchmarks/packed.py). No autocast: groups pack 32-true and
    64-true runs only (bench.packed)."""

    @staticmethod
    def forward(ctx, x, w, b):
        ctx.save_for_backward(x, w)
        return _bmm(x, w.transpose(1, 2), b)

    @staticmethod
    def backward(ctx, g):
        x, w = ctx.saved_tensors
        g = g.contiguous()   # a loss's gradient comes strided: one copy, not one per member's gemm
        gx = _bmm(g, w) if ctx.needs_input_grad[0] else None
        gw = _bmm(g.transpose(1, 2), x) if ctx.needs_input_grad[1] else None
        gb = _sum(g) if ctx.needs_input_grad[2] else None
        return gx, gw, gb


def _bmm(a: torch.Tensor, b: torch.Tensor, bias: Optional[torch.Tensor] = None) -> torch.Tensor:
    """a @ b (+ bias (K, O)) over the K members: one gemm per member on CPU, whose values then do not depend on K
    (MKL's batched gemm rounds some shapes, e.g. a 1-wide output, differently for K > 1 than for
    K = 1, so a group resumed in smaller groups drifted by 1e-8); one bmm on CUDA. (`_scan`, the
    `bmm` recurrence, still batches its steps: CUDA's default, on CPU only by override.)"""
    if a.device.type == "cpu":
        out = a.new_empty(a.shape[0], a.shape[1], b.shape[2])
        for k in range(a.shape[0]):
            if bias is None:
                torch.mm(a[k], b[k], out=out[k])
            else:
                torch.addmm(bias[k], a[k], b[k], out=out[k])
        return out
    return torch.bmm(a, b) if bias is None else torch.baddbmm(bias.unsqueeze(1), a, b)


def _sum(g: torch.Tensor) -> torch.Tensor:
    """g (K, N, O) summed over N, member by member on CPU (a batched reduction over many threads
    splits N differently than one member's)."""
    if g.device.type == "cpu":
        out = g.new_empty(g.shape[0], g.shape[2])
        for k in range(g.shape[0]):
            torch.sum(g[k], 0, out=out[k])
        return out
    return g.sum(1)


def packed_linear(linears: Sequence[nn.Linear], h: torch.Tensor) -> torch.Tensor:
    """K linear layers on h (K, ..., F) -> (K, ..., O), one bmm."""
    w = torch.stack([m.weight for m in linears])                          # (K, O, F)
    b = torch.stack([m.bias for m in linears])                            # (K, O)
    K, shape = h.shape[0], h.shape[1:-1]
    out = PackedLinear.apply(h.reshape(K, -1, h.shape[-1]), w, b)
    return out.view(K, *shape, -1)
