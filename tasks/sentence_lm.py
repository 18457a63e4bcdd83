"""Per-sentence language model (the Larochelle / Courville slides' form), beside the streamed LM
of tasks/lm.py: every line is a sentence w_1..w_n, modelled on its own,
    p(w_1..w_n, <eos>) = prod_{t=1..n+1} p(w_t | w_<t),  w_{n+1} = <eos>,
with no state carried from the sentence before.

The start: a learned <BOS> embedding e_B. `start: state` (default) makes it the initial state,
h_0 = tanh(W e_B + b) in every layer (other state parts zero), so p(w_1) = softmax(V h_0) and
the inputs are w_1..w_n. `start: input` feeds e_B as the first input from a zero state. <BOS> has
an embedding row but no output unit: it is never predicted (nor is padding); <eos> is, and counts
in the perplexity, as in the streamed LM (Mikolov's convention), so the two are comparable on PTB.

Metrics: loss (nats per predicted token, exact over the split), ppl = exp(loss). Baseline: the
unigram model with the training frequencies (add-one smoothed), as for the streamed LM. Data: the
text families' loader (tasks.text.load_splits: local files or the hub), one sentence a line, the
vocabulary from the training split; batches of similar lengths (tasks.text.BucketBatchSampler).
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from bench.schema import ConfigError, opt
from models.recurrent import Recurrent
from tasks import text
from tasks.base import Task, TaskModule
from tasks.lm import unigram_scores

SPLITS = ("train", "validation", "test")


@dataclass
class SentenceLMConfig(text.TextDataConfig):
    # defaults: PTB, a sentence a line; preset bench/configs/task/ptb_sentences.yaml
    name: str = opt("sentence_lm", choices=("sentence_lm",))
    dataset: str = opt("ptb-text-only/ptb_text_only", help="hub data set id (used when no local data dir is set)")
    hub_text_column: Optional[str] = opt("sentence", help="text column of the hub data set; null = text_column")
    format: str = opt("text", choices=lambda: list(text.BUILDERS) + list(text.PARSERS),
                      help="local format; 'text' = plain text, a sentence a line")
    data_files: dict = opt({"train": "lm/ptb/ptb.train.txt", "validation": "lm/ptb/ptb.valid.txt",
                            "test": "lm/ptb/ptb.test.txt"}, help="our split -> file relative to the data dir")
    start: str = opt("state", choices=("state", "input"),
                     help="<BOS> embedding -> h0 (state), or <BOS> as the first input from a zero state")


class SentenceData(text.TextDataModule):
    """Examples {"ids": w_1..w_n <eos>}; batches (ids (B, T) padded with `pad_id`, lengths (B,))."""

    def setup(self, stage: Optional[str] = None) -> None:
        if self.ready:
            return
        view = copy.copy(self.cfg)
        if text.local_root(self.cfg) is None and self.cfg.hub_text_column:
            view.text_column = self.cfg.hub_text_column
        self.build(text.load_splits(view, self.path, need=[view.text_column]), view.text_column)
        self.ready = True

    def build(self, raw, column: str) -> None:
        c = self.cfg
        toks = {s: text.column_list(text.token_column(raw[s], column, c.tokenizer, c.lowercase, c.max_len,
                                                      truncate=c.truncate), "_tokens") for s in SPLITS}
        toks = {s: [t + [text.EOS] for t in v if t] for s, v in toks.items()}
        for s in SPLITS:
            if not toks[s]:
                raise ValueError(f"task.data_files.{s}: no non-empty line; expected one sentence a line")
        self.vocabs["word"] = word = text.Vocab.build(toks["train"], c.min_freq, c.max_vocab,
                                                      specials=(text.UNK, text.EOS), pad=None)
        self.pad_id = len(word) + 1                      # rows: words, then <BOS> (len), then padding
        for s in SPLITS:
            self.examples[s] = [{"ids": word.encode(t)} for t in toks[s]]
            self.lengths[s] = [len(t) for t in toks[s]]

    def collate(self, items):
        return text.pad([e["ids"] for e in items], self.pad_id)


class SentenceLMModule(TaskModule):
    def __init__(self, run_cfg, vocab_tokens: list[str]):
        super().__init__(run_cfg)
        m, c = run_cfg.model, run_cfg.task
        if m.bidirectional:
            raise ConfigError("model.bidirectional: a language model cannot read ahead; allowed: false")
        self.vocab_tokens = list(vocab_tokens)
        V = len(self.vocab_tokens)
        self.bos, self.pad = V, V + 1
        self.start = c.start
        self.embed = nn.Embedding(V + 2, m.embedding_size, padding_idx=self.pad)
        self.rnn = Recurrent(m.embedding_size, m)
        self.init = nn.Linear(m.embedding_size, m.num_layers * m.hidden_size) if c.start == "state" else None
        self.drop = nn.Dropout(m.dropout)
        self.head = nn.Linear(self.rnn.output_size, V)   # words, <unk>, <eos>: never <BOS>, never padding
        self._sums = {}

    def h0(self, batch: int) -> tuple:
        """The start state: zeros, or h_0 = tanh(W e_B + b) in every layer (start: state)."""
        p = self.embed.weight
        state = list(self.rnn.init_state(batch, p.device, p.dtype))
        if self.init is not None:
            h = torch.tanh(self.init(self.drop(self.embed.weight[self.bos])))
            state[0] = h.view(self.rnn.num_layers, 1, -1).expand(-1, batch, -1).contiguous()
        return tuple(state)

    def forward(self, ids, lengths):
        """Logits (B, T, V) of every token of `ids` (w_1..w_n <eos>, padded) given the ones before."""
        B = len(ids)
        state = self.h0(B)
        if self.start == "input":
            inp = torch.cat([torch.full((B, 1), self.bos, dtype=ids.dtype, device=ids.device), ids[:, :-1]], 1)
            out, _ = self.rnn(self.drop(self.embed(inp)), lengths=lengths, state=state)
            return self.head(self.drop(out))
        first = self.head(self.drop(state[0][-1])).unsqueeze(1)         # p(w_1) from h_0 alone
        if ids.size(1) == 1:
            return first
        out, _ = self.rnn(self.drop(self.embed(ids[:, :-1])), lengths=(lengths - 1).clamp(min=1), state=state)
        return torch.cat([first, self.head(self.drop(out))], 1)

    def token_nats(self, ids, lengths):
        """Per-token cross-entropy (B, T) with padding at 0, and the mask of real tokens."""
        mask = text.lengths_to_mask(lengths.to(ids.device), ids.size(1))
        logits = self(ids, lengths)
        nats = F.cross_entropy(logits.flatten(0, 1), ids.masked_fill(~mask, 0).flatten(), reduction="none")
        return nats.view_as(ids) * mask, mask

    def training_step(self, batch, batch_idx):
        nats, mask = self.token_nats(*batch)
        loss = nats.sum() / mask.sum()
        return self.train_loss(loss, int(mask.sum()))

    def eval_start(self, split):
        self._sums = {"nats": 0.0, "n": 0.0}

    def eval_step(self, batch, split):
        nats, mask = self.token_nats(*batch)
        self._sums["nats"] += float(nats.sum())
        self._sums["n"] += float(mask.sum())

    def eval_end(self, split):
        if not self._sums or self._sums["n"] == 0:
            return
        t = torch.tensor([self._sums["nats"], self._sums["n"]], dtype=torch.float64, device=self.device)
        if self.trainer is not None and self.trainer.world_size > 1:
            t = self.trainer.strategy.reduce(t, reduce_op="sum")
        loss = float(t[0] / t[1])
        self.log(f"{split}/loss", loss, prog_bar=True)
        self.log(f"{split}/ppl", math.exp(min(loss, 50.0)), prog_bar=split == "val")


class SentenceLMTask(Task):
    Config = SentenceLMConfig
    Data = SentenceData
    primary = "test/ppl"
    mode = "min"

    def module(self, datamodule=None) -> SentenceLMModule:
        dm = datamodule or self.datamodule()
        dm.setup()
        return SentenceLMModule(self.run, dm.vocabs["word"].itos)

    def baseline(self) -> dict:
        """The unigram model of the training tokens (<eos> included) on the test sentences."""
        return self._unigram("test", "test")

    def val_baseline(self) -> dict:
        return self._unigram("validation", "val")

    def _unigram(self, split: str, prefix: str) -> dict:
        dm = self.datamodule()
        dm.setup()
        ids = {s: torch.tensor([i for e in dm.examples[s] for i in e["ids"]]) for s in ("train", split)}
        s = unigram_scores(ids["train"], ids[split], dm.vocabs["word"].itos, "word")
        return {f"{prefix}/loss": s["loss"], f"{prefix}/ppl": s["ppl"]}
