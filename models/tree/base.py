"""Tree-structured networks: shared weights composed bottom-up over a parse tree, a softmax at
every node. A model is a `TreeNet` subclass in its own file (models/tree/*.py, registered in
models/registry.py TREE_CELLS) that defines

* `leaf(x) -> state`: a tuple of (n, H) tensors from (n, E) word vectors (state[0] is the
  node vector the classifier reads: h);
* `compose(children) -> state`: from a tuple of (n, K, H) tensors, the states of each node's K
  children in order (a missing child of a node with fewer than K is an all-zero state).

Two ways to run the same weights over trees:

* `forward(batch)` -- level by level: every node of one height, across all trees of the batch, is
  one `compose` call (heights: leaves 0, a node 1 + its highest child). The states live in one
  (N + 1, H) buffer per state tensor; row N stays zero and stands for a missing child.
* `forward_recursive(tree)` -- plain recursion, one node at a time (the reference the batching is
  parity-tested against, and the baseline of bench/benchmarks/trees.py).

Both return (N, C) logits, one row per node in the batch's node order (trees concatenated, each in
post-order). Word vectors start at random (U(-0.1, 0.1)) unless task.embeddings is given.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from models.tree.rows import row_lookup


@dataclass
class TreeBatch:
    """Trees flattened: node i of the batch has `word[i]` (-1 internal), `label[i]`, and its
    children `child[i]` (K columns, padded with N). `levels[h-1]` = (nodes of height h, their
    children) for h >= 1; `leaves` = the height-0 nodes; `root[b]` = tree b's root;
    `rows` = the distinct word ids of the leaves (sorted), `inv` = each leaf's index into `rows`."""
    word: torch.Tensor
    label: torch.Tensor
    child: torch.Tensor
    leaves: torch.Tensor
    root: torch.Tensor
    level_nodes: list = field(default_factory=list)
    level_children: list = field(default_factory=list)
    rows: Optional[torch.Tensor] = None
    inv: Optional[torch.Tensor] = None

    @property
    def num_nodes(self) -> int:
        return int(self.word.shape[0])

    @property
    def arity(self) -> int:
        return int(self.child.shape[1])


def tree_tensors(t: dict) -> tuple:
    """(word, label, height, child) of one tree as tensors, child (n, k) with -1 for no child;
    cached in the dict under "tensors" (the data module builds them once per tree)."""
    if "tensors" not in t:
        n, k = len(t["word"]), max([len(c) for c in t["children"]] + [1])
        child = torch.tensor([c + [-1] * (k - len(c)) for c in t["children"]], dtype=torch.long).view(n, k)
        t["tensors"] = (torch.tensor(t["word"], dtype=torch.long), torch.tensor(t["label"], dtype=torch.long),
                        torch.tensor(t["height"], dtype=torch.long), child)
    return t["tensors"]


def batch_trees(trees: Sequence[dict]) -> TreeBatch:
    """`trees`: dicts with per-node lists `word` (id, -1 for internal), `children` (lists of
    node indices, post-order), `height`, `label` (int; -100 = no label); their tensors
    (`tree_tensors`) are concatenated, child indices shifted by each tree's offset."""
    parts = [tree_tensors(t) for t in trees]
    sizes = [int(p[0].shape[0]) for p in parts]
    N, K = sum(sizes), max(int(p[3].shape[1]) for p in parts)
    word, label, height = (torch.cat([p[j] for p in parts]) for j in range(3))
    child = torch.cat([p[3] if p[3].shape[1] == K else F.pad(p[3], (0, K - p[3].shape[1]), value=-1) for p in parts])
    n_t = torch.tensor(sizes, dtype=torch.long)
    ends = n_t.cumsum(0)
    offset = torch.repeat_interleave(ends - n_t, n_t)
    child = torch.where(child >= 0, child + offset.unsqueeze(1), N)
    order = torch.argsort(height, stable=True)
    counts = torch.bincount(height).tolist()
    groups = list(torch.split(order, counts))
    rows, inv = torch.unique(word[groups[0]], sorted=True, return_inverse=True)
    return TreeBatch(word=word, label=label, child=child, leaves=groups[0], root=ends - 1,
                     level_nodes=groups[1:], level_children=[child[g] for g in groups[1:]], rows=rows, inv=inv)


class TreeNet(nn.Module):
    """Embedding -> leaf states -> compositions -> dropout -> linear softmax classifier at every node."""

    switches: set = set()        # none of the LSTM-family switches of models/config.py
    max_children: int = 2        # 0 = any number (child-sum)
    tied_leaf: bool = False      # leaves are the word vectors themselves: embedding_size must equal hidden_size
    state_size: int = 1          # tensors in a state
    row_grad: bool = False       # word-vector gradients row-sparse (models/tree/rows.py)

    def __init__(self, vocab_size: int, num_classes: int, model_cfg, embed_dropout: float = 0.0,
                 pad_id: int = 0):
        super().__init__()
        self.hidden_size = H = model_cfg.hidden_size
        self.embed = nn.Embedding(vocab_size, model_cfg.embedding_size, padding_idx=pad_id)
        nn.init.uniform_(self.embed.weight, -0.1, 0.1)
        self.embed_drop = nn.Dropout(embed_dropout)
        self.drop = nn.Dropout(model_cfg.dropout)
        self.head = nn.Linear(H, num_classes)

    @classmethod
    def fusable(cls, model_cfg) -> bool:
        return False

    @classmethod
    def check_config(cls, model_cfg, path: str) -> str:
        """'' when the model config suits this tree cell, else the one-line reason."""
        if cls.tied_leaf and model_cfg.embedding_size != model_cfg.hidden_size:
            return (f"{path}embedding_size: cell {model_cfg.cell!r} uses the word vectors as leaf "
                    f"vectors; allowed: equal to model.hidden_size ({model_cfg.hidden_size}), "
                    f"got {model_cfg.embedding_size}")
        if model_cfg.num_layers != 1 or model_cfg.bidirectional or model_cfg.residual:
            return f"{path}cell: {model_cfg.cell!r} is a tree cell; allowed: num_layers 1, bidirectional false, residual false"
        return ""

    @torch.no_grad()
    def socher_init(self) -> None:
        """model.tree_init=socher, as Socher et al.'s code (CoreNLP SentimentModel): word vectors
        N(0, 0.1^2), softmax weights U(+-1/sqrt(H)), its bias U(0, 1); then `W` (a Linear from
        [c1; c2]) = [I I] + U(+-1/(2 sqrt(H))) with bias 0."""
        H = self.hidden_size
        self.embed.weight.normal_(0.0, 0.1)
        if self.embed.padding_idx is not None:
            self.embed.weight[self.embed.padding_idx].zero_()
        self.head.weight.uniform_(-1 / math.sqrt(H), 1 / math.sqrt(H))
        self.head.bias.uniform_(0.0, 1.0)
        r = 1 / (2 * math.sqrt(H))
        self.W.weight.uniform_(-r, r)
        self.W.weight[:, :H] += torch.eye(H)
        self.W.weight[:, H:] += torch.eye(H)
        self.W.bias.zero_()

    def leaf(self, x: torch.Tensor) -> tuple:
        raise NotImplementedError

    def compose(self, children: tuple) -> tuple:
        raise NotImplementedError

    def words(self, b: TreeBatch) -> torch.Tensor:
        """The leaves' word vectors; with `row_grad` (set by the task when its optimizer takes
        row-sparse gradients, models/tree/rows.py) the gradient holds the batch's rows only."""
        if self.row_grad and b.rows is not None and torch.is_grad_enabled() and self.embed.weight.requires_grad:
            return row_lookup(self.embed.weight, b.rows, b.inv, self.embed.padding_idx)
        return self.embed(b.word[b.leaves])

    def forward(self, b: TreeBatch) -> torch.Tensor:
        N = b.num_nodes
        x = self.embed_drop(self.words(b))
        first = self.leaf(x)
        states = [s.new_zeros(N + 1, s.shape[-1]) for s in first]
        for buf, s in zip(states, first):
            buf.index_copy_(0, b.leaves, s)
        for nodes, kids in zip(b.level_nodes, b.level_children):
            flat = kids.reshape(-1)
            ch = tuple(buf.index_select(0, flat).view(kids.shape[0], kids.shape[1], -1) for buf in states)
            for buf, s in zip(states, self.compose(ch)):
                buf.index_copy_(0, nodes, s)
        return self.head(self.drop(states[0][:N]))

    def forward_recursive(self, word: Sequence[int], children: Sequence[Sequence[int]]) -> torch.Tensor:
        """One tree (post-order lists), one node at a time; (n, C) logits in node order."""
        memo: dict[int, tuple] = {}
        K = self.max_children or max([len(c) for c in children] + [1])

        def visit(i: int) -> tuple:
            if i not in memo:
                if not children[i]:
                    ids = torch.tensor([word[i]], dtype=torch.long, device=self.head.weight.device)
                    memo[i] = self.leaf(self.embed_drop(self.embed(ids)))
                else:
                    kids = [visit(k) for k in children[i]]
                    ch = []
                    for j in range(len(kids[0])):
                        parts = [k[j] for k in kids]
                        parts += [torch.zeros_like(parts[0])] * (K - len(parts))
                        ch.append(torch.stack(parts, 1))
                    memo[i] = self.compose(tuple(ch))
            return memo[i]

        visit(len(word) - 1)
        h = torch.cat([memo[i][0] for i in range(len(word))])
        return self.head(self.drop(h))
