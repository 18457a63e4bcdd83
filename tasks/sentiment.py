"""Sentiment classification (many-to-one): SST-2 sentence level, IMDB, or any data set with a
text column and a label column (hub id or local files, by config only; see tasks/text/).

Embedding -> models.recurrent.Recurrent (with `lengths`, so padding changes nothing) -> sequence
summary (default: the last valid state, both directions when bidirectional) -> linear.
Metrics: accuracy and F1 (binary F1 of the second label -- "1"/"positive" -- for two classes,
macro F1 otherwise). Baseline: the majority training label predicted for every test example.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import torch
import torch.nn.functional as F
import torchmetrics
from torch import nn

from bench.schema import opt
from models.recurrent import Recurrent
from tasks.base import Task, TaskModule
from tasks.text import (LabelsConfig, TextDataConfig, TextDataModule, Vocab, WordVectorsConfig, WordVectorsTask,
                        column_list, handle_unseen, lengths_to_mask, pad, token_column)

SPLITS = ("train", "validation", "test")


@dataclass
class SentimentConfig(WordVectorsConfig, LabelsConfig):
    # defaults: SST-2 sentence level (stsa.binary); presets: bench/configs/task/{sst2,imdb}.yaml
    dataset: str = opt("SetFit/sst2", help="hub data set id (used when no local data dir is set)")
    format: str = opt("label_text", choices=TextDataConfig.__dataclass_fields__["format"].metadata["choices"],
                      help="local format: a datasets builder or a parser from tasks.text.PARSERS")
    data_files: dict = opt({"train": "sentiment/sst2/stsa.binary.train",
                            "validation": "sentiment/sst2/stsa.binary.dev",
                            "test": "sentiment/sst2/stsa.binary.test"},
                           help="our split -> file (or list) relative to the data dir")
    name: str = opt("sentiment", choices=("sentiment",))
    pool: str = opt("last", choices=("last", "max", "mean"),
                    help="sequence summary: last valid state (both directions), or masked max/mean over time")
    embed_dropout: float = opt(0.0, ge=0, lt=1, help="dropout on the word embeddings")


class SentimentData(TextDataModule):
    """Examples: {"ids": list[int], "label": int}; batches: (ids (B,T), lengths (B,), labels (B,))."""

    def build(self, raw) -> None:
        c = self.cfg
        toks = {s: token_column(raw[s], c.text_column, c.tokenizer, c.lowercase, c.max_len,
                                truncate=c.truncate) for s in SPLITS}
        toks = {s: column_list(ds, "_tokens") for s, ds in toks.items()}
        labels = {s: [str(v) for v in column_list(raw[s], c.label_column)] for s in SPLITS}
        self.vocabs["word"] = word = Vocab.build(toks["train"], c.min_freq, c.max_vocab)
        self.vocabs["label"] = lab = Vocab.labels(labels["train"])
        fallback, self.info["labels"] = handle_unseen(labels, lab, Counter(labels["train"]), c, c.label_column)
        for s in SPLITS:
            self.examples[s] = [{"ids": word.encode(t) or [word.unk_id], "label": lab[y if y in lab else fallback]}
                                for t, y in zip(toks[s], labels[s])]
            self.lengths[s] = [len(e["ids"]) for e in self.examples[s]]

    def collate(self, items):
        ids, lengths = pad([e["ids"] for e in items], self.vocabs["word"].pad_id)
        return ids, lengths, torch.tensor([e["label"] for e in items], dtype=torch.long)

    def majority(self) -> int:
        return Counter(e["label"] for e in self.examples["train"]).most_common(1)[0][0]


def summarize(out, state, lengths, pool: str, bidirectional: bool):
    """(B, T, H*dirs) outputs + final state -> (B, H*dirs) summary; padding never enters."""
    if pool == "last":
        h = state[0]  # (layers*dirs, B, H): the last layer is the last `dirs` entries
        return torch.cat([h[-2], h[-1]], dim=-1) if bidirectional else h[-1]
    mask = lengths_to_mask(lengths.to(out.device), out.size(1)).unsqueeze(-1)
    if pool == "max":
        return out.masked_fill(~mask, float("-inf")).max(dim=1).values
    return (out * mask).sum(1) / lengths.to(out.device).clamp(min=1).unsqueeze(-1).to(out.dtype)


def _metrics(num_classes: int) -> dict:
    if num_classes == 2:
        return {"acc": torchmetrics.Accuracy(task="binary"), "f1": torchmetrics.F1Score(task="binary")}
    return {"acc": torchmetrics.Accuracy(task="multiclass", num_classes=num_classes),
            "f1": torchmetrics.F1Score(task="multiclass", num_classes=num_classes, average="macro")}


class SentimentModule(TaskModule):
    def __init__(self, run_cfg, vocab_size: int, pad_id: int, num_classes: int):
        super().__init__(run_cfg)

        m, c = run_cfg.model, run_cfg.task
        self.num_classes = num_classes
        self.embed = nn.Embedding(vocab_size, m.embedding_size, padding_idx=pad_id)
        self.embed_drop = nn.Dropout(c.embed_dropout)
        self.rnn = Recurrent(m.embedding_size, m)
        self.drop = nn.Dropout(m.dropout)
        self.head = nn.Linear(self.rnn.output_size, num_classes)
        self.metrics = nn.ModuleDict({f"{s}_{k}": v for s in ("val", "test")
                                      for k, v in _metrics(num_classes).items()})

    def forward(self, ids, lengths):
        x = self.embed_drop(self.embed(ids))
        out, state = self.rnn(x, lengths=lengths)
        z = summarize(out, state, lengths, self.run_cfg.task.pool, self.run_cfg.model.bidirectional)
        return self.head(self.drop(z))

    def training_step(self, batch, batch_idx):
        ids, lengths, y = batch
        loss = F.cross_entropy(self(ids, lengths), y)
        return self.train_loss(loss, len(y))

    def eval_step(self, batch, split):
        ids, lengths, y = batch
        logits = self(ids, lengths)
        loss = F.cross_entropy(logits, y)
        pred = logits.argmax(-1)
        self.log(f"{split}/loss", loss, on_epoch=True, batch_size=len(y), sync_dist=True)
        for k in ("acc", "f1"):
            m = self.metrics[f"{split}_{k}"]
            m.update(pred, y)
            self.log(f"{split}/{k}", m, on_epoch=True, batch_size=len(y))


class SentimentTask(WordVectorsTask, Task):
    Config = SentimentConfig
    Data = SentimentData
    primary = "test/acc"
    mode = "max"

    def module(self, datamodule=None) -> SentimentModule:
        dm = datamodule or self.datamodule()
        dm.setup()
        word = dm.vocabs["word"]
        return SentimentModule(self.run, len(word), word.pad_id, len(dm.vocabs["label"]))

    def baseline(self) -> dict:
        """Majority training label on the test split."""
        dm = self.datamodule()
        dm.setup()
        y = torch.tensor([e["label"] for e in dm.examples["test"]])
        pred = torch.full_like(y, dm.majority())
        out = {}
        for k, m in _metrics(len(dm.vocabs["label"])).items():
            out[f"test/{k}"] = float(m(pred, y))
        return out
