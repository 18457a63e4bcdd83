"""Leaky-integrator RNN cell (exponential trace memory), on the Python scan path."""
from __future__ import annotations

import math

import torch
from torch import nn

from models.cells.base import Cell


class LeakyRNNCell(Cell):
    r"""Leaky integrator / exponential trace memory (Mozer 1989; the Beauferris slides).

    An Elman tanh-RNN whose state decays towards its new value with a per-unit time constant:

        h^t = alpha * h^{t-1} + (1 - alpha) * tanh(W x^t + R h^{t-1} + b),   b = b_ih + b_hh

    alpha in (0, 1), one per unit: `model.leak` for every unit, fixed (a buffer, `alpha`), or,
    with `model.leak_learned: true`, learned: alpha = sigmoid(`leak_logit`), `leak_logit`
    initialised to logit(`model.leak`). Parameters: `weight_ih` (H, I) = W, `weight_hh`
    (H, H) = R, `bias_ih`, `bias_hh` (H) [+ `leak_logit` (H)]. No torch.nn equivalent: custom
    path (a Python scan over `step`).
    """

    switches: set[str] = {"leak", "leak_learned"}
    gates = 1
    torch_module = nn.RNN                       # the benchmarks' reference only: never fused
    torch_kwargs = {"nonlinearity": "tanh"}

    def __init__(self, input_size, hidden_size, model_cfg=None):
        super().__init__(input_size, hidden_size, model_cfg)
        self.reset_parameters()
        a = float(getattr(model_cfg, "leak", 0.5))
        if getattr(model_cfg, "leak_learned", False):
            self.leak_logit = nn.Parameter(torch.full((hidden_size,), math.log(a / (1 - a))))
        else:
            self.register_buffer("alpha", torch.full((hidden_size,), a))

    @classmethod
    def fusable(cls, model_cfg) -> bool:
        return False

    @classmethod
    def block_names(cls, model_cfg):
        return ("h",)

    def leak(self) -> torch.Tensor:
        """alpha (H,), the fraction of h^{t-1} kept at each step."""
        return torch.sigmoid(self.leak_logit) if hasattr(self, "leak_logit") else self.alpha

    def step(self, xp_t, state):
        h, a = state[0], self.leak().to(xp_t.dtype)
        return (a * h + (1 - a) * torch.tanh(xp_t + h @ self.weight_hh.t()),)
