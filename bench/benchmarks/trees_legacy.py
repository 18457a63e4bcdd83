"""The tree-model code paths as they were before the CPU speed-ups (2026-12-02), kept as the
"before" side of `python -m bench.benchmarks.trees --compare`; nothing else uses them.

* `batch_trees`: the batch built from each tree's Python lists at every step (now: concatenated
  per-tree tensors, models/tree/base.py);
* `bilinear_compose`: the RNTN tensor term by F.bilinear (now one matmul + one batched dot);
* dense word-vector gradients, torch's AdaGrad and clip_grad_norm_ (now row-sparse, models/tree/rows.py);
* `MetricsEval`: four torchmetrics Accuracy updates a batch (now node counts, tasks/treebank_modules.py).
"""
from __future__ import annotations

import types
from typing import Sequence

import torch
import torch.nn.functional as F
import torchmetrics

from models.tree.base import TreeBatch


def batch_trees(trees: Sequence[dict]) -> TreeBatch:
    N = sum(len(t["word"]) for t in trees)
    K = max([len(c) for t in trees for c in t["children"]] + [1])
    word, label, height, child, root = [], [], [], [], []
    off = 0
    for t in trees:
        word += t["word"]
        label += t["label"]
        height += t["height"]
        child += [[off + k for k in c] + [N] * (K - len(c)) for c in t["children"]]
        off += len(t["word"])
        root.append(off - 1)
    height_t = torch.tensor(height, dtype=torch.long)
    child_t = torch.tensor(child, dtype=torch.long).view(N, K)
    order = torch.argsort(height_t, stable=True)
    counts = torch.bincount(height_t).tolist()
    groups = list(torch.split(order, counts))
    return TreeBatch(word=torch.tensor(word, dtype=torch.long), label=torch.tensor(label, dtype=torch.long),
                     child=child_t, leaves=groups[0], root=torch.tensor(root, dtype=torch.long),
                     level_nodes=groups[1:], level_children=[child_t[g] for g in groups[1:]])


def bilinear_compose(self, children):
    (h,) = children
    c = h.flatten(1)
    return (torch.tanh(F.bilinear(c, c, self.V) + self.W(c)),)


def make_legacy(net) -> None:
    """The net (in place) as before: dense word-vector gradients, the RNTN by F.bilinear."""
    net.row_grad = False
    if hasattr(net, "V"):
        net.compose = types.MethodType(bilinear_compose, net)


def optimizer(params, o) -> torch.optim.Optimizer:
    return torch.optim.Adagrad(params, lr=o.lr, weight_decay=o.weight_decay)


def clip(params, max_norm: float) -> None:
    torch.nn.utils.clip_grad_norm_(list(params), max_norm)


class MetricsEval:
    """The former per-batch evaluation: loss, then fine/binary x root/all torchmetrics updates."""

    def __init__(self, module):
        self.m = module
        acc = lambda k: torchmetrics.Accuracy(task="multiclass", num_classes=k, average="micro", ignore_index=-100)
        self.metrics = {name: acc(5 if name.startswith("fine") else 2) for name in module.metric_names}

    def step(self, logits, gold, root) -> None:
        m = self.m
        m.node_loss(logits, gold)
        fine_pred = logits.argmax(-1)
        bin_pred, bin_gold = m.binary_pred(logits), m.to_binary[gold]
        for name, metric in self.metrics.items():
            pred, y = (fine_pred, gold) if name.startswith("fine") else (bin_pred, bin_gold)
            if name.endswith("root"):
                pred, y = pred[root], y[root]
            if y.numel():
                metric.update(pred, y)

    def result(self) -> dict:
        out = {k: float(v.compute()) for k, v in self.metrics.items()}
        for v in self.metrics.values():
            v.reset()
        return out
