"""Sequence tagging (many-to-many; usually bidirectional): UD English EWT UPOS (token accuracy),
CoNLL-2003 NER in IOB2 (entity-level span F1, seqeval/conlleval rules), or any data set with a
token-list column and a tag-list column (hub id or local files, by config only; tasks/text/).

Word embedding (+ optional character CNN per word) -> models.recurrent.Recurrent (with `lengths`)
-> linear per step. Loss and metrics skip padded steps (ignore index -100).
Baseline: the most frequent training tag of each word; unknown words get the majority tag.
`primary`: "test/acc" for metric "acc", "test/f1" for metric "span_f1" (set per instance).
"""
from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
import torchmetrics
from seqeval.metrics import f1_score
from seqeval.metrics.sequence_labeling import get_entities
from torch import nn

from bench.schema import ConfigError, opt
from models.recurrent import Recurrent
from tasks.base import Task, TaskModule
from tasks.text import (LabelsConfig, TextDataConfig, TextDataModule, Vocab, WordVectorsConfig, WordVectorsTask,
                        char_vocab, column_list, handle_unseen, pad, token_column)

SPLITS = ("train", "validation", "test")
IGNORE = -100
MAX_WORD_CHARS = 20


@dataclass
class TaggingConfig(WordVectorsConfig, LabelsConfig):
    # defaults: UD English EWT UPOS; presets: bench/configs/task/{ud_pos,conll_ner}.yaml
    dataset: str = opt("universal-dependencies/universal_dependencies",
                       help="hub data set id (used when no local data dir is set)")
    hub_config: Optional[str] = opt("en_ewt", none_is_null=True, help="hub subset/config name")
    hub_revision: Optional[str] = opt("refs/convert/parquet", none_is_null=True, help="hub revision (parquet export of the script data set)")
    format: str = opt("conllu", choices=TextDataConfig.__dataclass_fields__["format"].metadata["choices"],
                      help="local format: a datasets builder or a parser from tasks.text.PARSERS")
    data_files: dict = opt({"train": "tagging/ud_en_ewt/en_ewt-ud-train.conllu",
                            "validation": "tagging/ud_en_ewt/en_ewt-ud-dev.conllu",
                            "test": "tagging/ud_en_ewt/en_ewt-ud-test.conllu"},
                           help="our split -> file (or list) relative to the data dir")
    text_column: str = opt("tokens", help="column holding the token list (or a string to tokenize)")
    label_column: str = opt("upos", help="column holding the tag list (one tag a token)")
    tokenizer: str = opt("none", choices=("whitespace", "basic", "chars", "none"),
                         help="how a string text column becomes tokens")
    name: str = opt("tagging", choices=("tagging",))
    metric: str = opt("acc", choices=("acc", "span_f1"),
                      help="acc = token accuracy; span_f1 = entity-level F1 of IOB/IOB2 tags (seqeval)")
    char_embedding: int = opt(0, ge=0, help="character embedding size for a char-CNN word feature; 0 = off")
    char_filters: int = opt(50, ge=1, help="char-CNN filters (word feature size)")
    char_width: int = opt(3, ge=1, help="char-CNN window")
    embed_dropout: float = opt(0.0, ge=0, lt=1, help="dropout on the word (+char) features")
    unk_replace: float = opt(0.0, ge=0, lt=1,
                             help="training: replace a word seen once in train by <unk> with this probability")

    def check(self, path: str) -> None:
        super().check(path)
        if self.max_len is not None:
            raise ConfigError(f"{path}max_len: tagging keeps whole sentences; allowed: null")


class TaggingData(TextDataModule):
    """Examples: {"ids", "chars", "tags", "words"}; batches: dict with ids (B,T), lengths (B,),
    tags (B,T; -100 on padding), chars (B,T,C) or None."""

    def build(self, raw) -> None:
        c = self.cfg
        toks, tags = {}, {}
        for s in SPLITS:
            ds = token_column(raw[s], c.text_column, c.tokenizer, False, None)
            toks[s] = column_list(ds, "_tokens")
            tags[s] = [[str(t) for t in row] for row in column_list(raw[s], c.label_column)]
            for i, (w, t) in enumerate(zip(toks[s], tags[s])):
                if len(w) != len(t):
                    raise ValueError(f"{s} split, example {i}: {len(w)} tokens but {len(t)} tags "
                                     f"(columns {c.text_column!r}, {c.label_column!r})")
        norm = (lambda w: w.lower()) if c.lowercase else (lambda w: w)
        train_words = [[norm(w) for w in row] for row in toks["train"]]
        self.vocabs["word"] = word = Vocab.build(train_words, c.min_freq, c.max_vocab)
        self.vocabs["tag"] = tag = Vocab.labels(t for row in tags["train"] for t in row)
        if c.char_embedding:
            self.vocabs["char"] = char_vocab(toks["train"])
        counts = Counter(w for row in train_words for w in row)
        self.singletons = {word[w] for w, n in counts.items() if n == 1 and w in word}
        flat = {s: (t for row in tags[s] for t in row) for s in SPLITS}
        fallback, self.info["labels"] = handle_unseen(flat, tag, Counter(t for row in tags["train"] for t in row),
                                                      c, c.label_column, what="tag")
        for s in SPLITS:
            ex = []
            for w, t in zip(toks[s], tags[s]):
                if not w:
                    continue
                e = {"ids": word.encode(norm(x) for x in w), "tags": tag.encode(x if x in tag else fallback for x in t),
                     "words": w}
                if c.char_embedding:
                    cv = self.vocabs["char"]
                    e["chars"] = [cv.encode(x[:MAX_WORD_CHARS]) or [cv.unk_id] for x in w]
                ex.append(e)
            self.examples[s] = ex
            self.lengths[s] = [len(e["ids"]) for e in ex]

    def collate(self, items):
        ids, lengths = pad([e["ids"] for e in items], self.vocabs["word"].pad_id)
        tags, _ = pad([e["tags"] for e in items], IGNORE)
        chars = None
        if "chars" in items[0]:
            B, T = ids.shape
            C = max(len(x) for e in items for x in e["chars"])
            chars = torch.zeros(B, T, C, dtype=torch.long)  # char <pad> is id 0
            for b, e in enumerate(items):
                for t, x in enumerate(e["chars"]):
                    chars[b, t, :len(x)] = torch.tensor(x)
        return {"ids": ids, "lengths": lengths, "tags": tags, "chars": chars}

    def train_dataloader(self):
        loader = super().train_dataloader()
        p = self.cfg.unk_replace
        if p > 0:
            base, unk, single = loader.collate_fn, self.vocabs["word"].unk_id, self.singletons
            g = torch.Generator().manual_seed(self.seed * 7919 + (self.trainer.current_epoch if self.trainer else 0))

            def collate(items):
                batch = base(items)
                ids = batch["ids"]
                is_single = torch.tensor([[int(i) in single for i in row] for row in ids.tolist()])
                drop = is_single & (torch.rand(ids.shape, generator=g) < p)
                batch["ids"] = ids.masked_fill(drop, unk)
                return batch
            loader.collate_fn = collate
        return loader

    # -- baseline: most frequent training tag per word
    def baseline_predict(self, split: str) -> list[list[int]]:
        by_word = defaultdict(Counter)
        all_tags = Counter()
        for e in self.examples["train"]:
            for w, t in zip(e["ids"], e["tags"]):
                by_word[w][t] += 1
                all_tags[t] += 1
        majority = all_tags.most_common(1)[0][0]
        best = {w: c.most_common(1)[0][0] for w, c in by_word.items()}
        unk = self.vocabs["word"].unk_id
        return [[best.get(w, majority) if w != unk else majority for w in e["ids"]]
                for e in self.examples[split]]


class CharCNN(nn.Module):
    """(B, T, C) char ids -> (B, T, filters): embedding, 1-D convolution, max over the word."""

    def __init__(self, n_chars: int, dim: int, filters: int, width: int):
        super().__init__()
        self.embed = nn.Embedding(n_chars, dim, padding_idx=0)
        self.conv = nn.Conv1d(dim, filters, width, padding=width // 2)

    def forward(self, chars):
        B, T, C = chars.shape
        x = self.embed(chars.view(B * T, C)).transpose(1, 2)
        h = self.conv(x)[..., :C]
        h = h.masked_fill((chars.view(B * T, 1, C) == 0), float("-inf")).max(-1).values
        h = torch.where(torch.isfinite(h), h, torch.zeros_like(h))  # all-padding words
        return h.view(B, T, -1)


def span_f1(gold: list[list[str]], pred: list[list[str]]) -> float:
    return float(f1_score(gold, pred)) if gold else 0.0


class SpanF1(torchmetrics.Metric):
    """Entity-level F1 (seqeval's default, conlleval rules) from summed counts, so DDP ranks
    reduce exactly: true positives, predicted and gold entities."""

    full_state_update = False

    def __init__(self, tag_names: list[str]):
        super().__init__()
        self.tag_names = list(tag_names)
        for name in ("tp", "n_pred", "n_gold"):
            self.add_state(name, default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, pred: torch.Tensor, gold: torch.Tensor, lengths: torch.Tensor) -> None:
        for p, g, n in zip(pred.tolist(), gold.tolist(), lengths.tolist()):
            ps = set(get_entities([self.tag_names[t] for t in p[:n]]))
            gs = set(get_entities([self.tag_names[t] for t in g[:n]]))
            self.tp += len(ps & gs)
            self.n_pred += len(ps)
            self.n_gold += len(gs)

    def compute(self) -> torch.Tensor:
        denom = self.n_pred + self.n_gold
        return (2.0 * self.tp / denom).float() if denom > 0 else torch.tensor(0.0)


class TaggingModule(TaskModule):
    def __init__(self, run_cfg, vocab_size: int, pad_id: int, tags: Vocab, n_chars: int = 0):
        super().__init__(run_cfg)

        m, c = run_cfg.model, run_cfg.task
        self.tag_names = list(tags.itos)
        self.embed = nn.Embedding(vocab_size, m.embedding_size, padding_idx=pad_id)
        self.chars = CharCNN(n_chars, c.char_embedding, c.char_filters, c.char_width) if c.char_embedding else None
        width = m.embedding_size + (c.char_filters if c.char_embedding else 0)
        self.embed_drop = nn.Dropout(c.embed_dropout)
        self.rnn = Recurrent(width, m)
        self.drop = nn.Dropout(m.dropout)
        self.head = nn.Linear(self.rnn.output_size, len(tags))
        self.acc = nn.ModuleDict({s: torchmetrics.Accuracy(task="multiclass", num_classes=len(tags),
                                                           ignore_index=IGNORE) for s in ("val", "test")})
        self.f1 = nn.ModuleDict({s: SpanF1(self.tag_names) for s in ("val", "test")}) \
            if c.metric == "span_f1" else None

    def forward(self, batch):
        x = self.embed(batch["ids"])
        if self.chars is not None:
            x = torch.cat([x, self.chars(batch["chars"])], dim=-1)
        out, _ = self.rnn(self.embed_drop(x), lengths=batch["lengths"])
        return self.head(self.drop(out))

    def training_step(self, batch, batch_idx):
        logits = self(batch)
        loss = F.cross_entropy(logits.flatten(0, 1), batch["tags"].flatten(), ignore_index=IGNORE)
        return self.train_loss(loss, len(batch["ids"]))

    def eval_step(self, batch, split):
        logits = self(batch)
        y = batch["tags"]
        n = int((y != IGNORE).sum())
        loss = F.cross_entropy(logits.flatten(0, 1), y.flatten(), ignore_index=IGNORE)
        pred = logits.argmax(-1)
        self.log(f"{split}/loss", loss, on_epoch=True, batch_size=n, sync_dist=True)
        self.acc[split].update(pred, y)
        self.log(f"{split}/acc", self.acc[split], on_epoch=True, batch_size=n)
        if self.f1 is not None:
            self.f1[split].update(pred, y, batch["lengths"])
            self.log(f"{split}/f1", self.f1[split], on_epoch=True, batch_size=n)


class TaggingTask(WordVectorsTask, Task):
    Config = TaggingConfig
    Data = TaggingData
    primary = "test/acc"
    mode = "max"

    def __init__(self, run_cfg):
        super().__init__(run_cfg)
        self.primary = "test/f1" if self.cfg.metric == "span_f1" else "test/acc"

    def module(self, datamodule=None) -> TaggingModule:
        dm = datamodule or self.datamodule()
        dm.setup()
        n_chars = len(dm.vocabs["char"]) if "char" in dm.vocabs else 0
        word = dm.vocabs["word"]
        return TaggingModule(self.run, len(word), word.pad_id, dm.vocabs["tag"], n_chars)

    def baseline(self) -> dict:
        dm = self.datamodule()
        dm.setup()
        pred = dm.baseline_predict("test")
        gold = [e["tags"] for e in dm.examples["test"]]
        correct = sum(p == g for rp, rg in zip(pred, gold) for p, g in zip(rp, rg))
        out = {"test/acc": correct / max(1, sum(map(len, gold)))}
        if self.cfg.metric == "span_f1":
            names = dm.vocabs["tag"].itos
            out["test/f1"] = span_f1([[names[t] for t in r] for r in gold], [[names[t] for t in r] for r in pred])
        return out
