"""Packed recurrences: K models of one shape run as one batched model (one bmm per step over K).

    out = packed_recurrent(rnns, x)        # rnns: K `Recurrent` layers, x (K, B, T, I) -> (K, B, T, H)
    y = packed_linear(linears, h)          # K `nn.Linear` heads, h (K, ..., H) -> (K, ..., O)

The members keep their own parameters (each an ordinary `Recurrent`, built and initialised as an
unpacked run builds it); every forward stacks them into (K, ...) tensors, so autograd hands each
member exactly the gradient of its own loss (losses summed over members do not mix) and each
member's parameters, optimizer and checkpoint stay those of its unpacked run.

Packable variants (`packable_model`): the cells torch.nn.RNN/LSTM/GRU express -- `rnn_tanh`,
`rnn_relu`, `irnn`, `gru` and `lstm` without Greff switches (any init: `recurrent_init`,
`input_init`, `forget_bias`, `init_range`), unidirectional, any number of layers, no residual
connections and no dropout (dropout masks come from the process-wide RNG). The equations are
torch's, gate blocks in torch order (LSTM i, f, g, o; GRU r, z, n with b_hn inside the reset gate).
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import nn
from torch.autograd.function import once_differentiable

from models.registry import cell_class

PACKABLE_CELLS = ("rnn_tanh", "rnn_relu", "irnn", "gru", "lstm")


def packable_model(model_cfg) -> Optional[str]:
    """None when K models of this config can be packed; else why not (one line)."""
    m = model_cfg
    if m.cell not in PACKABLE_CELLS:
        return f"model.cell={m.cell} (packable: {', '.join(PACKABLE_CELLS)})"
    if not cell_class(m.cell).fusable(m):
        return "an LSTM variant with Greff switches"
    for key, ok in (("bidirectional", not m.bidirectional), ("residual", not m.residual),
                    ("dropout", m.dropout == 0)):
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


def packed_recurrent(rnns: Sequence, x: torch.Tensor) -> torch.Tensor:
    """K unidirectional `Recurrent` modules of one shape on x (K, B, T, I) -> outputs (K, B, T, H)."""
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
    """The recurrence over time-major xp (T, K, B, G*H), zero initial state -> (T, K, B, H)."""
    if kind == "lstm":
        return _LSTMScan.apply(xp, w_hh)
    if kind == "gru":
        return _GRUScan.apply(xp, w_hh, b_rec)
    return _ElmanScan.apply(xp, w_hh, kind == "rnn_relu")


def reference_scan(kind, xp, w_hh, b_rec, H) -> torch.Tensor:
    """`_scan` by autograd, step by step (what the hand-written backward passes are tested against)."""
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


_sig_bwd = torch.ops.aten.sigmoid_backward.grad_input      # g * s * (1 - s), one kernel
_tanh_bwd = torch.ops.aten.tanh_backward.grad_input         # g * (1 - t^2), one kernel


def _weight_grad(dA, S):
    """sum over steps and batch of dA^T S, per member: (T, K, B, G) x (T, K, B, H) -> (K, G, H)."""
    T, K, B, G = dA.shape
    return torch.bmm(dA.permute(1, 3, 0, 2).reshape(K, G, T * B), S.permute(1, 0, 2, 3).reshape(K, T * B, -1))


class _ElmanScan(torch.autograd.Function):
    """h_t = act(xp_t + R_k h_{t-1}) for K members at once; BPTT by hand (one bmm per step)."""

    @staticmethod
    def forward(ctx, xp, w_hh, relu: bool):
        T, K, B, H = xp.shape
        S = xp.new_zeros(T + 1, K, B, H)
        wt = w_hh.transpose(1, 2)
        for t in range(T):
            h = torch.baddbmm(xp[t], S[t], wt, out=S[t + 1])
            h.relu_() if relu else h.tanh_()
        ctx.save_for_backward(S, w_hh)
        ctx.relu = relu
        return S[1:].clone()

    @staticmethod
    @once_differentiable
    def backward(ctx, dhs):
        S, w_hh = ctx.saved_tensors
        dA = torch.empty_like(dhs)
        dh = torch.zeros_like(dhs[0])
        for t in range(dhs.shape[0] - 1, -1, -1):
            dh += dhs[t]
            h = S[t + 1]
            if ctx.relu:
                torch.mul(dh, h > 0, out=dA[t])
            else:
                _tanh_bwd(dh, h, grad_input=dA[t])
            dh = torch.bmm(dA[t], w_hh)
        return dA, _weight_grad(dA, S[:-1]), None


class _GRUScan(torch.autograd.Function):
    """torch's GRU recurrence for K members given xp (T, K, B, 3H) (b_ih + b_hr, b_hz folded) and
    b_rec (K, 3H) = [0, 0, b_hn]; BPTT by hand."""

    @staticmethod
    def forward(ctx, xp, w_hh, b_rec):
        T, K, B, H3 = xp.shape
        H = H3 // 3
        S = xp.new_zeros(T + 1, K, B, H)
        G = xp.new_empty(T, K, B, 4 * H)             # r, z, n, (R_n h + b_hn) per step
        wt, b = w_hh.transpose(1, 2), b_rec.unsqueeze(1)
        for t in range(T):
            gh = torch.baddbmm(b, S[t], wt)
            g = G[t]
            torch.add(xp[t, ..., :2 * H], gh[..., :2 * H], out=g[..., :2 * H])
            g[..., :2 * H].sigmoid_()
            r, z = g[..., :H], g[..., H:2 * H]
            g[..., 3 * H:] = gh[..., 2 * H:]
            n = torch.addcmul(xp[t, ..., 2 * H:], r, gh[..., 2 * H:]).tanh_()
            g[..., 2 * H:3 * H] = n
            torch.addcmul(n, z, S[t] - n, out=S[t + 1])   # (1 - z) n + z h
        ctx.save_for_backward(S, G, w_hh)
        return S[1:].clone()

    @staticmethod
    @once_differentiable
    def backward(ctx, dhs):
        S, G, w_hh = ctx.saved_tensors
        T, K, B, H = dhs.shape
        dX = dhs.new_empty(T, K, B, 3 * H)
        dR = dhs.new_empty(T, K, B, 3 * H)
        dh = torch.zeros_like(dhs[0])
        for t in range(T - 1, -1, -1):
            dh = dh + dhs[t]
            g = G[t]
            r, z, n, ghn = g[..., :H], g[..., H:2 * H], g[..., 2 * H:3 * H], g[..., 3 * H:]
            dx, dr = dX[t], dR[t]
            _tanh_bwd(dh * (1 - z), n, grad_input=dx[..., 2 * H:])            # d n-pre
            dpn = dx[..., 2 * H:]
            _sig_bwd(dpn * ghn, r, grad_input=dx[..., :H])                    # d r-pre
            _sig_bwd(dh * (S[t] - n), z, grad_input=dx[..., H:2 * H])         # d z-pre
            dr[..., :2 * H] = dx[..., :2 * H]
            torch.mul(dpn, r, out=dr[..., 2 * H:])
            dh = torch.baddbmm(dh * z, dr, w_hh)
        db = dR.sum((0, 2))
        db[:, :2 * H] = 0
        return dX, _weight_grad(dR, S[:-1]), db


class _LSTMScan(torch.autograd.Function):
    """torch's LSTM recurrence for K members given xp (T, K, B, 4H) (both biases folded), gate
    blocks i, f, g, o; BPTT by hand with fused sigmoid/tanh backward kernels."""

    @staticmethod
    def forward(ctx, xp, w_hh):
        T, K, B, H4 = xp.shape
        H = H4 // 4
        S = xp.new_zeros(T + 1, K, B, H)
        C = xp.new_zeros(T + 1, K, B, H)
        A = xp.new_empty(T, K, B, H4)
        HC = xp.new_empty(T, K, B, H)
        wt = w_hh.transpose(1, 2)
        for t in range(T):
            a = torch.baddbmm(xp[t], S[t], wt, out=A[t])
            a[..., :2 * H].sigmoid_()
            a[..., 2 * H:3 * H].tanh_()
            a[..., 3 * H:].sigmoid_()
            c = torch.mul(a[..., :H], a[..., 2 * H:3 * H], out=C[t + 1]).addcmul_(a[..., H:2 * H], C[t])
            torch.mul(a[..., 3 * H:], torch.tanh(c, out=HC[t]), out=S[t + 1])
        ctx.save_for_backward(S, C, A, HC, w_hh)
        return S[1:].clone()

    @staticmethod
    @once_differentiable
    def backward(ctx, dhs):
        S, C, A, HC, w_hh = ctx.saved_tensors
        T, K, B, H = dhs.shape
        dA = torch.empty_like(A)
        dh = torch.zeros_like(dhs[0])
        dc = torch.zeros_like(dhs[0])
        for t in range(T - 1, -1, -1):
            dh = dh + dhs[t]
            a, d = A[t], dA[t]
            i, f, g, o = a[..., :H], a[..., H:2 * H], a[..., 2 * H:3 * H], a[..., 3 * H:]
            _sig_bwd(dh * HC[t], o, grad_input=d[..., 3 * H:])
            dc = dc + torch.ops.aten.tanh_backward(dh * o, HC[t])
            _sig_bwd(dc * g, i, grad_input=d[..., :H])
            _sig_bwd(dc * C[t], f, grad_input=d[..., H:2 * H])
            _tanh_bwd(dc * i, g, grad_input=d[..., 2 * H:3 * H])
            dc = dc * f
            dh = torch.bmm(d, w_hh)
        return dA, _weight_grad(dA, S[:-1])


def packed_linear(linears: Sequence[nn.Linear], h: torch.Tensor) -> torch.Tensor:
    """K linear layers on h (K, ..., F) -> (K, ..., O), one bmm."""
    w = torch.stack([m.weight for m in linears])                          # (K, O, F)
    b = torch.stack([m.bias for m in linears]).unsqueeze(1)               # (K, 1, O)
    K, shape = h.shape[0], h.shape[1:-1]
    out = torch.baddbmm(b, h.reshape(K, -1, h.shape[-1]), w.transpose(1, 2))
    return out.view(K, *shape, -1)
