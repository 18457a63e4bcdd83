"""GRU cell, torch.nn.GRU layout (gate blocks r, z, n), with a hand-written BPTT scan."""
from __future__ import annotations

import torch
from torch import nn
from torch.autograd.function import once_differentiable

from models.cells import kernels
from models.cells.base import Cell, linear, loop_scan


class _GRUScan(torch.autograd.Function):
    """Recurrence of torch's GRU given the input projection xp (T, B, 3H) (b_ih + b_hr, b_hz folded)."""

    @staticmethod
    def forward(ctx, xp, h0, w_hh, b_hn, mask, keep=True):
        T, B, H3 = xp.shape
        H = H3 // 3
        S = xp.new_empty(T + 1, B, H)
        S[0] = h0
        # keep=False (no grad mode, inference): no history of the gates
        G = xp.new_empty(T if keep else 1, B, 4 * H)   # r, z, n, (R_n h + b_hn) per step
        wt = w_hh.t()
        bpad = torch.cat([b_hn.new_zeros(2 * H), b_hn])
        for t in range(T):
            gh = torch.addmm(bpad, S[t], wt)
            g = G[t if keep else 0]
            torch.add(xp[t, :, :2 * H], gh[:, :2 * H], out=g[:, :2 * H])
            g[:, :2 * H].sigmoid_()
            r, z = g[:, :H], g[:, H:2 * H]
            g[:, 3 * H:] = gh[:, 2 * H:]
            n = torch.addcmul(xp[t, :, 2 * H:], r, gh[:, 2 * H:]).tanh_()
            g[:, 2 * H:3 * H] = n
            h = torch.addcmul(n, z, S[t] - n)       # (1 - z) n + z h
            if mask is not None:
                h = torch.where(mask[t], h, S[t])
            S[t + 1] = h
        ctx.save_for_backward(S, G, w_hh, mask)
        return S[1:].clone(), S[T].clone()

    @staticmethod
    @once_differentiable
    def backward(ctx, dhs, dhT):
        S, G, w_hh, mask = ctx.saved_tensors
        T, B, H = dhs.shape
        dX = dhs.new_empty(T, B, 3 * H)
        dR = dhs.new_empty(T, B, 3 * H)
        dh = dhT
        for t in range(T - 1, -1, -1):
            dh = dh + dhs[t]
            if mask is not None:
                carry = torch.where(mask[t], 0.0, dh)
                dh = torch.where(mask[t], dh, 0.0)
            g = G[t]
            r, z, n, ghn = g[:, :H], g[:, H:2 * H], g[:, 2 * H:3 * H], g[:, 3 * H:]
            hp = S[t]
            dx, dr = dX[t], dR[t]
            torch.mul(dh * (1 - z), 1 - n * n, out=dx[:, 2 * H:])          # d n-pre
            dpn = dx[:, 2 * H:]
            torch.mul(dpn * ghn, r * (1 - r), out=dx[:, :H])                 # d r-pre
            torch.mul(dh * (hp - n), z * (1 - z), out=dx[:, H:2 * H])        # d z-pre
            dr[:, :2 * H] = dx[:, :2 * H]
            torch.mul(dpn, r, out=dr[:, 2 * H:])
            dh = torch.addmm(dh * z, dr, w_hh)
            if mask is not None:
                dh += carry
        dW = dR.reshape(-1, 3 * H).t() @ S[:T].reshape(-1, H)
        db_hn = dR[:, :, 2 * H:].sum((0, 1))
        return dX, dh, dW, db_hn, None, None


class GRUCell(Cell):
    r"""Gated recurrent unit (Cho et al. 2014), exactly torch.nn.GRU.

    In Greff et al.'s notation (W input weights, R recurrent weights, b biases; blocks r, z, n):

        r^t = sigma(W_r x^t + R_r y^{t-1} + b_r)
        u^t = sigma(W_u x^t + R_u y^{t-1} + b_u)                 (update gate, torch's z)
        n^t = tanh(W_n x^t + b_Wn + r^t * (R_n y^{t-1} + b_Rn))
        y^t = (1 - u^t) * n^t + u^t * y^{t-1}

    b_r, b_u are b_ih + b_hh of their blocks; b_Wn = bias_ih n-block, b_Rn = bias_hh n-block
    (inside the reset gate, as in torch/cuDNN). That is `model.reset_after: true`, the default.

    `model.reset_after: false` is the form of Cho et al. (2014) and the design documents: the
    reset gate acts on the state before the recurrent matmul,

        n^t = tanh(W_n x^t + R_n (r^t * y^{t-1}) + b_Wn + b_Rn)

    (torch/cuDNN cannot run it: custom path, a Python scan over `step`).
    """

    switches: set[str] = {"reset_after"}
    gates = 3
    torch_module = nn.GRU
    torch_kwargs: dict = {}

    def __init__(self, input_size, hidden_size, model_cfg=None):
        super().__init__(input_size, hidden_size, model_cfg)
        self.reset_after = bool(getattr(model_cfg, "reset_after", True))
        self.reset_parameters()

    @classmethod
    def fusable(cls, model_cfg) -> bool:
        return bool(getattr(model_cfg, "reset_after", True))

    @classmethod
    def block_names(cls, model_cfg):
        return ("r", "z", "n")

    def project(self, x):
        H = self.hidden_size
        if not self.reset_after:                    # every bias outside the reset gate
            return linear(x, self.weight_ih, self.bias_ih + self.bias_hh)
        b = self.bias_ih + torch.cat([self.bias_hh[:2 * H], self.bias_hh.new_zeros(H)])
        return linear(x, self.weight_ih, b)

    def step(self, xp_t, state):
        H = self.hidden_size
        h = state[0]
        gh = h @ self.weight_hh[:2 * H].t()
        r = torch.sigmoid(xp_t[:, :H] + gh[:, :H])
        z = torch.sigmoid(xp_t[:, H:2 * H] + gh[:, H:2 * H])
        if self.reset_after:
            n = torch.tanh(xp_t[:, 2 * H:] + r * (h @ self.weight_hh[2 * H:].t() + self.bias_hh[2 * H:]))
        else:
            n = torch.tanh(xp_t[:, 2 * H:] + (r * h) @ self.weight_hh[2 * H:].t())
        return ((1 - z) * n + z * h,)

    def scan(self, xp, state, mask=None):
        if not self.reset_after:
            return loop_scan(self, xp, state, mask)
        dt = xp.dtype                               # e.g. bf16 under autocast: one dtype inside
        scan = kernels.GRUScan if kernels.usable(xp) else _GRUScan      # C++ scan on CPU
        hs, hT = scan.apply(xp, state[0].to(dt), self.weight_hh.to(dt),
                            self.bias_hh[2 * self.hidden_size:].to(dt), mask, torch.is_grad_enabled())
        return hs, (hT,)
