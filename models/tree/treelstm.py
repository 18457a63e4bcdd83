"""Tree-LSTMs (Tai et al. 2015), constituency form: word inputs at the leaves only, a forget
gate per child. A leaf: i, o, u = W x + b; c = sigma(i) * tanh(u); h = sigma(o) * tanh(c).

* child-sum (`treelstm_childsum`), any number of children, order-free:
  h~ = sum_k h_k; i, o, u = U h~ + b; f_k = sigma(U_f h_k + b_f); c = sigma(i) * tanh(u) + sum_k f_k * c_k
* binary N-ary (`treelstm_nary`, N = 2), children in order, each with its own weights:
  i, o, u = U [h_1; h_2] + b; f_k = sigma(U_f^k [h_1; h_2] + b_f^k); c = sigma(i) * tanh(u) + f_1 c_1 + f_2 c_2
and h = sigma(o) * tanh(c) for both. A softmax at every node reads h.
"""
from __future__ import annotations

import torch
from torch import nn

from models.tree.base import TreeNet


class _TreeLSTM(TreeNet):
    state_size = 2

    def __init__(self, vocab_size, num_classes, model_cfg, embed_dropout=0.0, pad_id=0):
        super().__init__(vocab_size, num_classes, model_cfg, embed_dropout, pad_id)
        self.W_iou = nn.Linear(model_cfg.embedding_size, 3 * self.hidden_size)

    def _cell(self, iou, fc):
        i, o, u = iou.chunk(3, dim=-1)
        c = torch.sigmoid(i) * torch.tanh(u) + fc
        return torch.sigmoid(o) * torch.tanh(c), c

    def leaf(self, x):
        return self._cell(self.W_iou(x), 0.0)


class ChildSumTreeLSTM(_TreeLSTM):
    max_children = 0

    def __init__(self, vocab_size, num_classes, model_cfg, embed_dropout=0.0, pad_id=0):
        super().__init__(vocab_size, num_classes, model_cfg, embed_dropout, pad_id)
        H = self.hidden_size
        self.U_iou = nn.Linear(H, 3 * H)
        self.U_f = nn.Linear(H, H)

    def compose(self, children):
        h, c = children                                   # (n, K, H); missing children are zeros
        f = torch.sigmoid(self.U_f(h))
        return self._cell(self.U_iou(h.sum(1)), (f * c).sum(1))


class NaryTreeLSTM(_TreeLSTM):
    max_children = 2

    def __init__(self, vocab_size, num_classes, model_cfg, embed_dropout=0.0, pad_id=0):
        super().__init__(vocab_size, num_classes, model_cfg, embed_dropout, pad_id)
        H = self.hidden_size
        self.U_iou = nn.Linear(2 * H, 3 * H)
        self.U_f = nn.Linear(2 * H, 2 * H)                # f_1, f_2 each from [h_1; h_2]

    def compose(self, children):
        h, c = children                                   # (n, 2, H)
        hh = h.flatten(1)
        f = torch.sigmoid(self.U_f(hh)).view_as(c)
        return self._cell(self.U_iou(hh), (f * c).sum(1))
