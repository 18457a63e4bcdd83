"""Elman RNN cells (tanh and ReLU), torch.nn.RNN layout, with a hand-written BPTT scan."""
from __future__ import annotations

import torch
from torch import nn
from torch.autograd.function import once_differentiable

from models.cells import kernels
from models.cells.base import Cell


class _ElmanScan(torch.autograd.Function):
    """h_t = act(xp_t + R h_{t-1}); forward under no_grad, backward = BPTT by hand."""

    @staticmethod
    def forward(ctx, xp, h0, w_hh, mask, relu: bool):
        T, B, H = xp.shape
        S = xp.new_empty(T + 1, B, H)
        S[0] = h0
        wt = w_hh.t()
        for t in range(T):
            h = torch.addmm(xp[t], S[t], wt)
            h = h.relu_() if relu else h.tanh_()
            if mask is not None:
                h = torch.where(mask[t], h, S[t])
            S[t + 1] = h
        ctx.save_for_backward(S, w_hh, mask)
        ctx.relu = relu
        return S[1:].clone(), S[T].clone()

    @staticmethod
    @once_differentiable
    def backward(ctx, dhs, dhT):
        S, w_hh, mask = ctx.saved_tensors
        T = S.shape[0] - 1
        dA = torch.empty_like(dhs)
        dh = dhT
        for t in range(T - 1, -1, -1):
            dh = dh + dhs[t]
            h = S[t + 1]
            if mask is not None:
                carry = torch.where(mask[t], 0.0, dh)
                dh = torch.where(mask[t], dh, 0.0)
            if ctx.relu:
                torch.mul(dh, h > 0, out=dA[t])
            else:
                torch.mul(dh, 1 - h * h, out=dA[t])
            dh = dA[t] @ w_hh
            if mask is not None:
                dh += carry
        H = S.shape[-1]
        dW = dA.reshape(-1, H).t() @ S[:T].reshape(-1, H)
        return dA, dh, dW, None, None


class TanhRNNCell(Cell):
    r"""Elman RNN (torch.nn.RNN, nonlinearity tanh).

    In Greff et al.'s notation (W input weights, R recurrent weights, b bias):

        y^t = tanh(W x^t + R y^{t-1} + b),   b = b_ih + b_hh.

    Parameters: `weight_ih` (H, I) = W, `weight_hh` (H, H) = R, `bias_ih`, `bias_hh` (H).
    """

    switches: set[str] = set()
    gates = 1
    torch_module = nn.RNN
    nonlinearity = "tanh"
    torch_kwargs = {"nonlinearity": "tanh"}

    def __init__(self, input_size, hidden_size, model_cfg=None):
        super().__init__(input_size, hidden_size, model_cfg)
        self.reset_parameters()

    @classmethod
    def block_names(cls, model_cfg):
        return ("h",)

    def step(self, xp_t, state):
        pre = xp_t + state[0] @ self.weight_hh.t()
        return (torch.relu(pre) if self.nonlinearity == "relu" else torch.tanh(pre),)

    def scan(self, xp, state, mask=None):
        dt = xp.dtype                               # e.g. bf16 under autocast: one dtype inside
        scan = kernels.ElmanScan if kernels.usable(xp) else _ElmanScan  # C++ scan on CPU
        hs, hT = scan.apply(xp, state[0].to(dt), self.weight_hh.to(dt), mask, self.nonlinearity == "relu")
        return hs, (hT,)


class ReLURNNCell(TanhRNNCell):
    r"""Elman RNN with ReLU (torch.nn.RNN, nonlinearity relu; IRNN = identity recurrent init).

        y^t = max(0, W x^t + R y^{t-1} + b),   b = b_ih + b_hh.
    """

    nonlinearity = "relu"
    torch_kwargs = {"nonlinearity": "relu"}
