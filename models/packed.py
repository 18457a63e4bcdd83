"""Packed recurrences: K models of one shape run as one batched model (one bmm per step over K).

    out = packed_recurrent(rnns, x, mode)  # rnns: K `Recurrent` layers, x (K, B, T, I) -> (K, B, T, H)
    y = packed_linear(linears, h)          # K `nn.Linear` heads, h (K, ..., H) -> (K, ..., O)

The members keep their own parameters (each an ordinary `Recurrent`, built and initialised as an
unpacked run builds it); every forward stacks them into (K, ...) tensors, so autograd hands each
member exactly the gradient of its own loss (losses summed over members do not mix) and each
member's parameters, optimizer and checkpoint stay those of its unpacked run. `mode="members"`
runs each member's own recurrence instead (see `recurrence`): the rest of the step stays packed.

Packable variants (`packable_model`): the cells torch.nn.RNN/LSTM/GRU express -- `rnn_tanh`,
`rnn_relu`, `irnn`, `gru` and `lstm` without Greff switches (any init: `recurrent_init`,
`input_init`, `forget_bias`, `init_range`), unidirectional, any number of layers, no residual
connections and no dropout (dropout masks come from the process-wide RNG). The equations are
torch's, gate blocks in torch order (LSTM i, f, g, o; GRU r, z, n with b_hn inside the reset gate).
"""
from __future__ import annotations

import os
from typing import Optional, Sequence

import torch
from torch import nn

from models.registry import cell_class

PACKABLE_CELLS = ("rnn_tanh", "rnn_relu", "irnn", "gru", "lstm")
RECURRENCES = ("bmm", "members")


def packable_model(model_cfg) -> Optional[str]:
    """None when K models of this config can be packed; else why not (one line)."""
    m = model_cfg
    if m.cell not in PACKABLE_CELLS:
        return f"model.cell={m.cell} (packable: {', '.join(PACKABLE_CELLS)})"
    if not cell_class(m.cell).fusable(m):
        return "an LSTM variant with Greff switches"
    for key, ok in (("bidirectional", not m.bidirectional), ("residual", not m.residual),
                    ("dropout", m.dropout == 0), ("output_feedback", m.output_feedback == "none")):
        if not ok:
            return f"model.{key}={getattr(m, key)}"
    return None


def _kind(rnn) -> str:
    cls = rnn.cell_cls
    if cls.torch_module is nn.RNN:
        return "rnn_" + cls.torch_kwargs.get("nonlinearity", "tanh")
    return "lstm" if cls.torch_module is nn.LSTM else "gru"


def layer_params(rnn, layer: int) -> tuple:
    """(weight_ih, weight_hh, bias_ih, bias_hh) of one layer, on the fused or the custom path."""
    if rnn.fused:
        m = rnn.rnns[0]
        return tuple(getattr(m, f"{n}_l{layer}") for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"))
    c = rnn.layers[layer][0]
    return c.weight_ih, c.weight_hh, c.bias_ih, c.bias_hh


def _stack(rnns, layer):
    return [torch.stack(ps) for ps in zip(*(layer_params(r, layer) for r in rnns))]


def recurrence(device) -> str:
    """How a packed group runs its recurrence on `device`: `bmm` (one batched matmul per step over
    the K members) on CUDA; on CPU `members` (each member's own kernel, C++ scan or oneDNN, one
    after another), which bench/benchmarks/packed.py measured faster there: a bmm over K small distinct
    weights does the same FLOPs as K gemms, and elementwise ops on gate slices of (K, B, G*H) cost
    more than the members' fused kernels. RNNBENCH_PACKED_RECURRENCE=bmm|members overrides."""
    env = os.environ.get("RNNBENCH_PACKED_RECURRENCE")
    if env in RECURRENCES:
        return env
    return "bmm" if torch.device(device).type == "cuda" else "members"


def packed_recurrent(rnns: Sequence, x: torch.Tensor, mode: str = "bmm") -> torch.Tensor:
    """K unidirectional `Recurrent` modules of one shape on x (K, B, T, I) -> outputs (K, B, T, H)."""
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
        xp = torch.baddbmm(b_in.unsqueeze(1), inp.reshape(K, B * T, -1), w_ih.transpose(1, 2))
        xp = xp.view(K, B, T, -1).permute(2, 0, 1, 3).contiguous()       # (T, K, B, G*H)
        hs = _scan(kind, xp, w_hh, b_rec, H)
        inp = hs.permute(1, 2, 0, 3)                                      # (K, B, T, H)
    return inp


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


def packed_linear(linears: Sequence[nn.Linear], h: torch.Tensor) -> torch.Tensor:
    """K linear layers on h (K, ..., F) -> (K, ..., O), one bmm."""
    w = torch.stack([m.weight for m in linears])                          # (K, O, F)
    b = torch.stack([m.bias for m in linears]).unsqueeze(1)               # (K, 1, O)
    K, shape = h.shape[0], h.shape[1:-1]
    out = torch.baddbmm(b, h.reshape(K, -1, h.shape[-1]), w.transpose(1, 2))
    return out.view(K, *shape, -1)
