"""Recursive neural tensor network (Socher et al. 2013): the RNN composition plus a tensor term,
p = tanh(c^T V c + W c + b) with c = [c1; c2] and V of shape (H, 2H, 2H) (one slice a unit);
leaves are the word vectors; a softmax at every node."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from models.tree.base import TreeNet


class RNTN(TreeNet):
    tied_leaf = True

    def __init__(self, vocab_size, num_classes, model_cfg, embed_dropout=0.0, pad_id=0):
        super().__init__(vocab_size, num_classes, model_cfg, embed_dropout, pad_id)
        H = self.hidden_size
        self.W = nn.Linear(2 * H, H)
        self.V = nn.Parameter(torch.empty(H, 2 * H, 2 * H))
        nn.init.uniform_(self.V, -1 / (4 * math.sqrt(H)), 1 / (4 * math.sqrt(H)))

    def leaf(self, x):
        return (x,)

    def compose(self, children):
        (h,) = children                                   # (n, 2, H)
        c = h.flatten(1)                                  # (n, 2H)
        return (torch.tanh(F.bilinear(c, c, self.V) + self.W(c)),)
