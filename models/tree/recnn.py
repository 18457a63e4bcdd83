"""Recursive neural network (Socher et al. 2011): leaves are the word vectors, each internal
node p = tanh(W [c1; c2] + b) from its two children; a softmax at every node."""
from __future__ import annotations

import torch
from torch import nn

from models.tree.base import TreeNet


class RecNN(TreeNet):
    tied_leaf = True

    def __init__(self, vocab_size, num_classes, model_cfg, embed_dropout=0.0, pad_id=0):
        super().__init__(vocab_size, num_classes, model_cfg, embed_dropout, pad_id)
        H = self.hidden_size
        self.W = nn.Linear(2 * H, H)
        if model_cfg.tree_init == "socher":
            self.socher_init()

    def leaf(self, x):
        return (x,)

    def compose(self, children):
        (h,) = children                                   # (n, 2, H)
        return (torch.tanh(self.W(h.flatten(1))),)
