"""Jordan network cell (Jordan 1986): the state depends on the previous output only."""
from __future__ import annotations

import torch
from torch import nn

from models.cells.base import Cell, loop_scan


class JordanCell(Cell):
    r"""Jordan network (Jordan 1986; Solberg slides: S^t = h(X^t, Y^{t-1}), no S^{t-1} term).

    The hidden state has no hidden-to-hidden weight; its recurrence is the network's previous
    output y^{t-1}, which `models.feedback.OutputFeedback` (`model.output_feedback`) puts beside
    x^t in the input of the first layer, u^t = [x^t ; y^{t-1}]:

        h^t = tanh(U x^t + W y^{t-1} + b),   [U W] = weight_ih,   b = b_ih + b_hh
        y^t = output layer of h^t            (the task's head, in OutputFeedback)

    So a layer maps each step's input on its own: under teacher forcing (y^{t-1} = y*^{t-1},
    known beforehand) every step of the sequence is computed at once, one matmul and one tanh
    over (T, B) (`scan`), with no loop over time; free-running, the loop is OutputFeedback's,
    one step at a time. Parameters: `weight_ih` (H, I), `bias_ih`, `bias_hh` (H), and
    `weight_hh` (H, 0): no hidden-to-hidden weight, kept empty for the four-tensor torch layout.
    Custom path only (no torch.nn equivalent); needs `model.output_feedback` (models.config).
    """

    switches: set[str] = set()
    gates = 1
    torch_module = nn.RNN                       # the benchmarks' reference only: never fused
    torch_kwargs = {"nonlinearity": "tanh"}

    def __init__(self, input_size, hidden_size, model_cfg=None):
        super().__init__(input_size, hidden_size, model_cfg)
        self.weight_hh = nn.Parameter(torch.empty(hidden_size, 0))
        self.reset_parameters()

    @classmethod
    def fusable(cls, model_cfg) -> bool:
        return False

    @classmethod
    def block_names(cls, model_cfg):
        return ("h",)

    def step(self, xp_t, state):
        return (torch.tanh(xp_t),)

    def scan(self, xp, state, mask=None):
        """All steps at once, (T, B, H): h^t does not depend on h^{t-1}."""
        if mask is not None:        # the final state is each sequence's last valid step
            return loop_scan(self, xp, state, mask)
        hs = torch.tanh(xp)
        return hs, (hs[-1],)
