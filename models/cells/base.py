"""Shared machinery of the cells in this package (not itself a cell).

A cell is one layer, one direction. It owns torch-shaped parameters (`weight_ih` (G*H, I),
`weight_hh` (G*H, H), `bias_ih`, `bias_hh`, gate blocks in torch order) plus its extras, and
runs a whole sequence in two steps:

* `project(x)`: the input projection of all time steps in one matmul, (T, B, I) -> (T, B, G*H),
  with every bias that can be folded in;
* `scan(xp, state, mask)`: the recurrence only, time-major; returns the per-step hidden states
  (T, B, H) and the final state tuple. `mask` (T, B, 1) bool, optional: a step where it is
  False leaves the state unchanged (its output is zeroed by the caller).

The base `scan` is a plain autograd loop over `step`; cells override it with a hand-written
BPTT (`torch.autograd.Function`) where speed matters, and keep `step` as the reference.
"""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from models.cells import kernels


class Cell(nn.Module):
    switches: set[str] = set()
    gates: int = 1
    torch_module: type | None = None   # the torch.nn class of the fused path
    torch_kwargs: dict = {}

    def __init__(self, input_size: int, hidden_size: int, model_cfg=None):
        super().__init__()
        self.input_size, self.hidden_size = input_size, hidden_size
        self.blocks = self.block_names(model_cfg)
        g = len(self.blocks)
        self.weight_ih = nn.Parameter(torch.empty(g * hidden_size, input_size))
        self.weight_hh = nn.Parameter(torch.empty(g * hidden_size, hidden_size))
        self.bias_ih = nn.Parameter(torch.empty(g * hidden_size))
        self.bias_hh = nn.Parameter(torch.empty(g * hidden_size))

    # ------------------------------------------------------------------ description
    @classmethod
    def fusable(cls, model_cfg) -> bool:
        return True

    @classmethod
    def block_names(cls, model_cfg) -> tuple[str, ...]:
        """Names of the gate blocks of weight_ih/weight_hh, in order."""
        raise NotImplementedError

    @property
    def state_size(self) -> int:
        """Number of state tensors (1: (h,), 2: (h, c), ...)."""
        return 1

    def state_widths(self) -> list[int]:
        """Feature width of each state tensor."""
        return [self.hidden_size] * self.state_size

    def reset_parameters(self) -> None:
        """torch.nn.RNN/LSTM/GRU default: every parameter ~ U(-1/sqrt(H), 1/sqrt(H))."""
        k = 1.0 / math.sqrt(self.hidden_size)
        with torch.no_grad():
            for p in self.parameters():
                p.uniform_(-k, k)

    # ------------------------------------------------------------------ computation
    def project(self, x: torch.Tensor) -> torch.Tensor:
        """(T, B, I) -> (T, B, G*H): W_ih x_t + b_ih + b_hh for every step in one matmul."""
        return linear(x, self.weight_ih, self.bias_ih + self.bias_hh)

    def step(self, xp_t: torch.Tensor, state: tuple) -> tuple:
        """One step (reference implementation, autograd): -> new state; its [0] is h_t."""
        raise NotImplementedError

    def scan(self, xp: torch.Tensor, state: tuple, mask: torch.Tensor | None = None):
        return loop_scan(self, xp, state, mask)


class _Linear(torch.autograd.Function):
    """F.linear whose backward computes its two matmuls transposed when the input is narrow
    (I < 32: copy/adding inputs): MKL is several times slower at (N x G)(G x I) and
    (G x N)(N x I) with a small I than at the transposed products (same numbers, other order)."""

    @staticmethod
    def forward(ctx, x, w, b):
        ctx.save_for_backward(x, w)
        return F.linear(x, w, b)

    @staticmethod
    def backward(ctx, g):
        x, w = ctx.saved_tensors
        g2, x2 = g.reshape(-1, g.shape[-1]), x.reshape(-1, x.shape[-1])
        dx = (w.t() @ g2.t()).t().reshape(x.shape) if ctx.needs_input_grad[0] else None
        dw = (x2.t() @ g2).t() if ctx.needs_input_grad[1] else None
        return dx, dw, g2.sum(0)


def linear(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """F.linear(x, w, b), with the faster backward of `_Linear` for narrow inputs on CPU."""
    if (x.shape[-1] < 32 and x.device.type == "cpu" and torch.is_grad_enabled()
            and not torch.is_autocast_enabled("cpu") and kernels.enabled()):
        return _Linear.apply(x, w, b)
    return F.linear(x, w, b)


def loop_scan(cell: Cell, xp: torch.Tensor, state: tuple, mask: torch.Tensor | None = None):
    """Autograd loop over `cell.step` (the reference the hand-written backward is tested against)."""
    outs = []
    for t in range(xp.shape[0]):
        new = cell.step(xp[t], state)
        if mask is not None:
            new = tuple(torch.where(mask[t], n, s) for n, s in zip(new, state))
        state = new
        outs.append(state[0])
    return torch.stack(outs), state
