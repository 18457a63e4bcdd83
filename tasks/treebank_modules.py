"""Lightning modules of the treebank family (tasks/treebank.py) and Socher et al. (2013)'s metrics.

* `fine_root` / `fine_all`: 5-class accuracy over the sentences (roots) / over all nodes;
* `binary_root` / `binary_all`: accuracy over the nodes whose gold label is not neutral, gold
  0-1 -> negative and 3-4 -> positive; a 5-class model predicts positive when p(3)+p(4) > p(0)+p(1).
A model trained with `task.classes=binary` has two outputs and gets the binary metrics only.
"""
from __future__ import annotations

from collections import Counter
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from models.recurrent import Recurrent
from models.registry import cell_class
from models.tree.rows import clip_grad_norm, row_lookup
from tasks.base import TaskModule
from tasks.sentiment import summarize

METRICS = ("fine_root", "fine_all", "binary_root", "binary_all")


def row_grads(run_cfg) -> bool:
    """Whether a tree model's word vectors get row-sparse gradients (models/tree/rows.py): with
    AdaGrad on one device, without weight decay (RowAdagrad then updates as dense AdaGrad does) or
    with optim.decay_words (the L2 of the batch's rows, as Socher et al.'s code)."""
    o, t = run_cfg.optim, run_cfg.trainer
    words_decay = o.weight_decay == 0 or getattr(o, "decay_words", None) is not None
    return o.name == "adagrad" and words_decay and t.devices == 1 and t.num_nodes == 1


def tree_group(name: str) -> str:
    """The optim.decay_<group> of a tree model's parameter (its name in the TreeNet): words,
    classifier (the softmax weights), tensor (the RNTN's V), composition (the rest of the cell);
    '' for the softmax bias, which CoreNLP does not regularise."""
    if name == "embed.weight":
        return "words"
    if name == "head.weight":
        return "classifier"
    if name == "head.bias":
        return ""
    return "tensor" if name == "V" else "composition"


def majority_scores(train_y, train_root, test_y, test_root, to_binary: Optional[list], fine: bool = True) -> dict:
    """Test scores of predicting, for each metric, the majority training class of its nodes."""
    out = {}
    for where in ("root", "all"):
        pick = (lambda ys, rs: [y for y, r in zip(ys, rs) if r]) if where == "root" else (lambda ys, rs: list(ys))
        tr, te = pick(train_y, train_root), pick(test_y, test_root)
        if fine:
            top = Counter(tr).most_common(1)[0][0]
            out[f"test/fine_{where}"] = sum(y == top for y in te) / max(1, len(te))
        if to_binary is not None:
            trb = [to_binary[y] for y in tr if to_binary[y] >= 0]
            teb = [to_binary[y] for y in te if to_binary[y] >= 0]
            if trb:
                top = Counter(trb).most_common(1)[0][0]
                out[f"test/binary_{where}"] = sum(y == top for y in teb) / max(1, len(teb))
    return out


class PhraseMetricsMixin:
    """Loss and the four accuracies from node logits, gold fine labels and root flags. Each
    accuracy is (correct, counted) node totals over the split, summed across devices at the end:
    micro accuracy as torchmetrics' Accuracy(ignore_index=-100) gives it (the same float32
    division), at one small tensor op a batch instead of four metric updates and logs."""

    def setup_metrics(self, num_labels: int, to_binary: Optional[list]):
        self.fine = self.run_cfg.task.classes == "fine"
        self.num_out = num_labels if self.fine else 2
        self.register_buffer("to_binary", torch.tensor(to_binary if to_binary is not None else [-100] * num_labels),
                             persistent=False)
        self.has_binary = to_binary is not None
        self.metric_names = [m for m in METRICS if (self.fine or m.startswith("binary"))
                             and (self.has_binary or m.startswith("fine"))]
        self._counts: Optional[torch.Tensor] = None

    def node_loss(self, logits, gold):
        target = gold if self.fine else self.to_binary[gold]
        return F.cross_entropy(logits, target, ignore_index=-100)

    def binary_pred(self, logits):
        if not self.fine:
            return logits.argmax(-1)
        p = logits.softmax(-1)
        pos = (p * (self.to_binary == 1)).sum(-1)
        neg = (p * (self.to_binary == 0)).sum(-1)
        return (pos > neg).long()

    def eval_start(self, split: str) -> None:
        self._counts = torch.zeros(len(self.metric_names), 2, dtype=torch.long, device=self.device)

    def node_counts(self, logits, gold, root) -> torch.Tensor:
        """(metrics, 2): correct and counted nodes of each metric in `metric_names`."""
        fine_pred = logits.argmax(-1) if self.fine else None
        bin_pred, bin_gold = (self.binary_pred(logits), self.to_binary[gold]) if self.has_binary else (None, None)
        rows = []
        for name in self.metric_names:
            pred, y = (fine_pred, gold) if name.startswith("fine") else (bin_pred, bin_gold)
            if name.endswith("root"):
                pred, y = pred[root], y[root]
            counted = y != -100
            rows.append(torch.stack([(counted & (pred == y)).sum(), counted.sum()]))
        return torch.stack(rows)

    def accuracies(self, counts: torch.Tensor) -> dict:
        """metric name -> float32 accuracy (0 when no node counted, as torchmetrics)."""
        return {name: (right.float() / total.float() if int(total) else torch.zeros((), device=counts.device))
                for name, (right, total) in zip(self.metric_names, counts)}

    def eval_nodes(self, logits, gold, root, split: str, n: int):
        self.log(f"{split}/loss", self.node_loss(logits, gold), on_epoch=True, batch_size=n, sync_dist=True)
        if self._counts is None:
            self.eval_start(split)
        self._counts += self.node_counts(logits, gold, root)

    def eval_end(self, split: str) -> None:
        c, self._counts = self._counts, None
        if c is None:
            return
        if self._trainer is not None and self._trainer.world_size > 1:
            c = self._trainer.strategy.reduce(c, reduce_op="sum")
        for name, acc in self.accuracies(c).items():
            self.log(f"{split}/{name}", acc)


class RowGradMixin:
    """Norm clipping as Lightning's, counting row-sparse word-vector gradients by their rows."""

    row_grad: bool = False

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None):
        if self.row_grad and gradient_clip_val and gradient_clip_algorithm in (None, "norm"):
            clip_grad_norm([p for g in optimizer.param_groups for p in g["params"]], float(gradient_clip_val))
        else:
            super().configure_gradient_clipping(optimizer, gradient_clip_val, gradient_clip_algorithm)


class TreeModule(RowGradMixin, PhraseMetricsMixin, TaskModule):
    """A tree cell (models/tree) over whole trees; loss = mean cross-entropy over all labelled nodes."""

    def __init__(self, run_cfg, vocab_size: int, pad_id: int, num_labels: int, to_binary=None):
        super().__init__(run_cfg)
        self.setup_metrics(num_labels, to_binary)
        self.net = cell_class(run_cfg.model.cell)(vocab_size, self.num_out, run_cfg.model,
                                                  run_cfg.task.embed_dropout, pad_id)
        self.net.row_grad = self.row_grad = row_grads(run_cfg)

    @property
    def embed(self):
        return self.net.embed

    def optim_params(self) -> list:
        """optim.tensor_lr: the RNTN's tensor V in a group of its own at that lr; optim.decay_<group>
        (tree_group): the parameters of each group at their own weight decay. One param group per
        (lr, weight decay), in the order of their first parameter (V last); the words' group with its own
        decay updates the batch's rows only (RowAdagrad, row_decay)."""
        o, params = self.run_cfg.optim, super().optim_params()
        decay = {g: getattr(o, f"decay_{g}") for g in ("words", "composition", "tensor", "classifier")}
        if o.tensor_lr is None and all(v is None for v in decay.values()):
            return params
        groups: dict = {}
        named = sorted(self.net.named_parameters(), key=lambda np: np[0] == "V")   # V last, as tensor_lr had it
        for name, p in named:
            if not p.requires_grad:
                continue
            group = tree_group(name)
            lr = o.tensor_lr if group == "tensor" and o.tensor_lr is not None else o.lr
            wd = decay[group] if decay.get(group) is not None else o.weight_decay
            row_decay = group == "words" and decay["words"] is not None and self.row_grad
            key = (lr, wd, row_decay)
            if key not in groups:
                groups[key] = {"params": [], **({"lr": lr} if lr != o.lr else {}),
                               **({"weight_decay": wd} if wd != o.weight_decay else {}),
                               **({"row_decay": True} if row_decay else {})}
            groups[key]["params"].append(p)
        assert sum(len(g["params"]) for g in groups.values()) == len(params)
        return list(groups.values())

    def forward(self, batch):
        return self.net(batch)

    def training_step(self, batch, batch_idx):
        if self.run_cfg.task.node_loss == "tree_sum":   # Socher et al.'s code: summed over nodes, / trees
            target = batch.label if self.fine else self.to_binary[batch.label]
            loss = F.cross_entropy(self(batch), target, ignore_index=-100, reduction="sum") / len(batch.root)
        else:
            loss = self.node_loss(self(batch), batch.label)
        return self.train_loss(loss, len(batch.root))

    def eval_step(self, batch, split):
        root = torch.zeros_like(batch.label, dtype=torch.bool)
        root[batch.root] = True
        self.eval_nodes(self(batch), batch.label, root, split, len(batch.root))


class SpanModule(RowGradMixin, PhraseMetricsMixin, TaskModule):
    """A sequence cell (models.recurrent.Recurrent) over spans, as task.name=sentiment's module."""

    def __init__(self, run_cfg, vocab_size: int, pad_id: int, num_labels: int, to_binary=None):
        super().__init__(run_cfg)
        self.setup_metrics(num_labels, to_binary)
        m = run_cfg.model
        self.embed = nn.Embedding(vocab_size, m.embedding_size, padding_idx=pad_id)
        self.embed_drop = nn.Dropout(run_cfg.task.embed_dropout)
        self.rnn = Recurrent(m.embedding_size, m)
        self.drop = nn.Dropout(m.dropout)
        self.head = nn.Linear(self.rnn.output_size, self.num_out)
        self.row_grad = row_grads(run_cfg)

    def words(self, ids):
        """Word vectors of (B, T) ids; row-sparse gradients as the tree models' (models/tree/rows.py)."""
        w = self.embed.weight
        if self.row_grad and torch.is_grad_enabled() and w.requires_grad:
            rows, inv = torch.unique(ids, sorted=True, return_inverse=True)
            return row_lookup(w, rows, inv.reshape(-1), self.embed.padding_idx).view(*ids.shape, -1)
        return self.embed(ids)

    def forward(self, ids, lengths):
        out, state = self.rnn(self.embed_drop(self.words(ids)), lengths=lengths)
        z = summarize(out, state, lengths, self.run_cfg.task.pool, self.run_cfg.model.bidirectional)
        return self.head(self.drop(z))

    def training_step(self, batch, batch_idx):
        ids, lengths, y, _ = batch
        loss = self.node_loss(self(ids, lengths), y)
        return self.train_loss(loss, len(y))

    def validation_step(self, batch, batch_idx):
        ids, lengths, y, root = batch
        self.eval_nodes(self(ids, lengths), y, root, "val", len(y))

    def test_step(self, batch, batch_idx):
        ids, lengths, y, root = batch
        self.eval_nodes(self(ids, lengths), y, root, "test", len(y))
