"""Deep transition RNN cell (Pascanu et al. 2014), on the Python scan path."""
from __future__ import annotations

import torch
from torch import nn

from models.cells.base import Cell

class DeepTransitionCell(Cell):
    r"""Deep transition RNN, DT-RNN (Pascanu, Gulcehre, Cho & Bengio 2014, "How to construct deep
    recurrent neural networks"; Solberg slides: "let h be a multilayer perceptron").

    The state transition is an MLP of L = `model.transition_layers` tanh layers:

        a_1^t = tanh(W x^t + R h^{t-1} + b),   b = b_ih + b_hh
        a_k^t = tanh(V_k a_{k-1}^t + c_k),     k = 2 .. L
        h^t   = a_L^t

    L = 1 is the Elman tanh-RNN. Parameters: `weight_ih` (H, I) = W, `weight_hh` (H, H) = R,
    `bias_ih`, `bias_hh` (H), `weight_tr` (L-1, H, H) = V_2..V_L, `bias_tr` (L-1, H) = c_2..c_L (none when L = 1);
    all U(-1/sqrt(H), 1/sqrt(H)) (torch.nn.RNN's default), the first four per `models.init`.
    No torch.nn equivalent: custom path (a Python scan over `step`).
    """

    switches: set[str] = {"transition_layers"}
    gates = 1
    torch_module = nn.RNN                       # the benchmarks' reference only: never fused
    torch_kwargs = {"nonlinearity": "tanh"}

    def __init__(self, input_size, hidden_size, model_cfg=None):
        super().__init__(input_size, hidden_size, model_cfg)
        self.extra = int(getattr(model_cfg, "transition_layers", 1)) - 1
        if self.extra:
            self.weight_tr = nn.Parameter(torch.empty(self.extra, hidden_size, hidden_size))
            self.bias_tr = nn.Parameter(torch.empty(self.extra, hidden_size))
        self.reset_parameters()

    @classmethod
    def fusable(cls, model_cfg) -> bool:
        return False

    @classmethod
    def block_names(cls, model_cfg):
        return ("h",)

    def step(self, xp_t, state):
        a = torch.tanh(xp_t + state[0] @ self.weight_hh.t())
        for k in range(self.extra):
            a = torch.tanh(torch.addmm(self.bias_tr[k], a, self.weight_tr[k].t()))
        return (a,)
