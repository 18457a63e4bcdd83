"""Phrase-level sentiment over labelled parse trees (Stanford Sentiment Treebank, Socher et al. 2013):
a label at every node, predicted at every node.

Data: format `ptb_trees` (tasks/trees.py) from local files, or a hub data set whose
`task.text_column` holds the same bracketed strings (`stanfordnlp/sst`, config `ptb`, column
`ptb_tree`); bring your own trees with `task.data_files` (+ `task.data_dir`). Words are PTB-unescaped
(-LRB- -> '(', \\/ -> '/'; `task.unescape`), the vocabulary comes from the training trees.

Models (`model.cell`):
* a tree cell (models/registry.py TREE_CELLS: recnn, rntn, treelstm_childsum, treelstm_nary):
  one batch = whole trees, composed level by level (models/tree/base.py), a softmax at every node;
* a sequence cell (lstm, gru, ...): phrase supervision as in Tai et al. 2015's LSTM rows -- every
  labelled span of a training tree is a training sequence (`task.phrases=all`; `root` = whole
  sentences only); the evaluation sets are every span of their trees (root flags kept).

Metrics as Socher et al. 2013 define them (tasks/treebank_modules.py): `fine_root`, `fine_all`
(5 classes, sentences / all nodes), `binary_root`, `binary_all` (gold neutral nodes dropped, 0-1
negative, 3-4 positive). `task.classes=fine` trains on the 5 classes and predicts binary by
p(0)+p(1) vs p(3)+p(4); `task.classes=binary` trains on the binary labels only (neutral nodes out
of the loss, as Tai et al.). Baselines: the majority training class of each metric's nodes.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from bench.schema import ConfigError, opt
from models.registry import TREE_CELLS, cell_class
from models.tree.base import batch_trees, tree_tensors
from tasks.base import Task
from tasks.text import (BUILDERS, PARSERS, TextDataModule, Vocab, WordVectorsConfig, WordVectorsTask,
                        column_list, load_splits, pad)
from tasks.trees import Tree, TreeError, parse_tree
from tasks.treebank_modules import SpanModule, TreeModule, majority_scores

SPLITS = ("train", "validation", "test")
BINARY = {"0": 0, "1": 0, "2": -100, "3": 1, "4": 1}   # Socher et al.: neutral dropped


@dataclass
class TreebankConfig(WordVectorsConfig):
    name: str = opt("treebank", choices=("treebank",))
    dataset: str = opt("stanfordnlp/sst", help="hub data set id (used when no local data dir is set)")
    hub_config: Optional[str] = opt("ptb", none_is_null=True, help="hub subset/config name")
    format: str = opt("ptb_trees", choices=lambda: list(BUILDERS) + list(PARSERS),
                      help="local format: ptb_trees (one bracketed tree a line) or a datasets builder")
    data_files: dict = opt({"train": "sentiment/sst_trees/train.txt",
                            "validation": "sentiment/sst_trees/dev.txt",
                            "test": "sentiment/sst_trees/test.txt"},
                           help="our split -> file (or list) relative to the data dir")
    text_column: str = opt("ptb_tree", help="column holding one bracketed tree a row")
    classes: str = opt("fine", choices=("fine", "binary"), new=True,
                       help="train on the 5 labels, or on negative/positive (neutral nodes out of the loss)")
    unescape: bool = opt(True, new=True, help="PTB escapes back to text: -LRB- -> (, \\/ -> /, ...")
    phrases: str = opt("all", choices=("all", "root"), new=True,
                       help="sequence cells: train on every labelled span, or on whole sentences only")
    pool: str = opt("last", choices=("last", "max", "mean"), new=True,
                    help="sequence cells: summary of a span (as task.name=sentiment)")
    embed_dropout: float = opt(0.0, ge=0, lt=1, new=True, help="dropout on the word vectors")
    node_loss: str = opt("mean", choices=("mean", "tree_sum"), new=True,
                         help="tree cells: training loss = mean cross-entropy over the batch's nodes, or "
                              "the sum over its nodes / its trees (Socher et al.'s code)")
    batch_size: int = opt(25, ge=1, help="trees a batch (sequence cells: spans a batch)")


def parse_split(rows, split: str, unescape: bool) -> list[Tree]:
    out = []
    for i, text in enumerate(rows):
        try:
            out.append(parse_tree(str(text), unescape))
        except TreeError as e:
            raise ValueError(f"{split} split row {i + 1}: {e}") from None
    return out


class TreebankData(TextDataModule):
    """tree=True: examples are whole trees (batches: models.tree.base.TreeBatch); else spans
    {"ids", "label", "root"} (batches: ids (B, T), lengths (B,), labels (B,), root flags (B,))."""

    def __init__(self, cfg, seed: int = 0, num_workers: int = 0, tree: bool = True):
        super().__init__(cfg, seed, num_workers)
        self.tree = tree
        self.trees: dict[str, list[Tree]] = {}

    def setup(self, stage: Optional[str] = None) -> None:
        """As TextDataModule.setup, needing only the tree column (the labels are in the trees)."""
        if self.ready:
            return
        self.build(load_splits(self.cfg, self.path, need=[self.cfg.text_column]))
        if self._restored is not None:
            self._check_restored()
        self.ready = True

    def build(self, raw) -> None:
        c = self.cfg
        self.trees = {s: parse_split(column_list(raw[s], c.text_column), s, c.unescape) for s in SPLITS}
        low = (lambda w: w.lower()) if c.lowercase else (lambda w: w)
        self.vocabs["word"] = word = Vocab.build(([low(w) for w in t.tokens()] for t in self.trees["train"]),
                                                 c.min_freq, c.max_vocab)
        self.vocabs["label"] = lab = Vocab.labels(x for t in self.trees["train"] for x in t.labels)
        for s in SPLITS:
            unseen = sorted({x for t in self.trees[s] for x in t.labels} - set(lab.itos))
            if unseen:
                raise ValueError(f"{s} split: label(s) {', '.join(unseen[:5])} not among the training "
                                 f"labels {', '.join(lab.itos)}")
        self.to_binary = ([BINARY[x] for x in lab.itos] if set(lab.itos) <= set(BINARY) else None)
        if c.classes == "binary" and self.to_binary is None:
            raise ConfigError(f"task.classes: 'binary' needs the labels 0-4; the training trees have "
                              f"{', '.join(lab.itos[:8])}; allowed: fine")
        for s in SPLITS:
            self.examples[s] = []
            for t in self.trees[s]:
                ids = [word[low(w)] if not k else -1 for w, k in zip(t.words, t.children)]
                labels = [lab[x] for x in t.labels]
                if self.tree:
                    ex = {"word": ids, "children": t.children, "height": t.heights(), "label": labels}
                    tree_tensors(ex)    # once per tree: a batch is then a few concatenations
                    self.examples[s].append(ex)
                else:
                    self.examples[s] += self._spans(t, ids, labels, s == "train" and c.phrases == "root")
            if not self.tree and s == "train" and c.classes == "binary":  # neutral spans teach nothing
                self.examples[s] = [e for e in self.examples[s] if self.to_binary[e["label"]] >= 0]
            self.lengths[s] = [len(e["word"]) if self.tree else len(e["ids"]) for e in self.examples[s]]

    @staticmethod
    def _spans(t: Tree, ids, labels, root_only: bool) -> list[dict]:
        leaf_ids = [ids[i] for i in t.leaves]
        nodes = [len(t) - 1] if root_only else range(len(t))
        spans = t.spans()
        return [{"ids": leaf_ids[spans[i][0]:spans[i][1]], "label": labels[i], "root": i == len(t) - 1}
                for i in nodes]

    def collate(self, items):
        if self.tree:
            return batch_trees(items)
        ids, lengths = pad([e["ids"] for e in items], self.vocabs["word"].pad_id)
        return (ids, lengths, torch.tensor([e["label"] for e in items], dtype=torch.long),
                torch.tensor([e["root"] for e in items], dtype=torch.bool))

    def max_children(self) -> int:
        return max(len(k) for s in SPLITS for t in self.trees[s] for k in t.children)

    def has_unary(self) -> bool:
        return any(len(k) == 1 for s in SPLITS for t in self.trees[s] for k in t.children)

    def node_labels(self, split: str) -> tuple[list[int], list[bool]]:
        """Every node's label index and whether it is a root, over a split's trees."""
        lab = self.vocabs["label"]
        y = [lab[x] for t in self.trees[split] for x in t.labels]
        root = [i == len(t) - 1 for t in self.trees[split] for i in range(len(t))]
        return y, root


class TreebankTask(WordVectorsTask, Task):
    Config = TreebankConfig
    primary = "test/fine_root"
    mode = "max"

    def __init__(self, run_cfg):
        super().__init__(run_cfg)
        self.tree = run_cfg.model.cell in TREE_CELLS
        if not self.tree and self.cfg.node_loss != "mean":
            raise ConfigError(f"task.node_loss: {self.cfg.node_loss!r} is for tree cells; got cell "
                              f"{run_cfg.model.cell!r}; allowed: mean")
        if self.cfg.classes == "binary":
            self.primary = "test/binary_root"

    def make_datamodule(self) -> TreebankData:
        return TreebankData(self.cfg, seed=self.run.seed, num_workers=self.run.trainer.num_workers, tree=self.tree)

    def module(self, datamodule=None):
        dm = datamodule or self.datamodule()
        dm.setup()
        word, cell = dm.vocabs["word"], self.run.model.cell
        if self.tree:
            cls = cell_class(cell)
            if cls.max_children and (dm.max_children() > cls.max_children or dm.has_unary()):
                raise ConfigError(f"model.cell: {cell!r} needs binary trees, but the data has nodes with "
                                  f"{'1' if dm.has_unary() else dm.max_children()} children; "
                                  f"allowed: treelstm_childsum")
            return TreeModule(self.run, len(word), word.pad_id, len(dm.vocabs["label"]), dm.to_binary)
        return SpanModule(self.run, len(word), word.pad_id, len(dm.vocabs["label"]), dm.to_binary)

    def baseline(self) -> dict:
        dm = self.datamodule()
        dm.setup()
        train_y, train_root = dm.node_labels("train")
        test_y, test_root = dm.node_labels("test")
        return majority_scores(train_y, train_root, test_y, test_root, dm.to_binary,
                               fine=self.cfg.classes == "fine")
