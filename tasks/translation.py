"""Machine translation: Multi30k De->En with a recurrent encoder-decoder over any registry cell.

* Encoder: `models.recurrent.Recurrent` over source embeddings (may be bidirectional; then the
  decoder's initial state is a tanh(linear) bridge of the two directions, per layer).
* Decoder: a unidirectional `Recurrent` with the same cell, stepped with T=1 and carried state
  (one whole-sequence call when teacher forcing is 1 and there is no attention -- the same
  computation). Teacher forcing ratio `teacher_forcing` (per step and sentence).
* Optional source reversal (Sutskever et al. 2014) and additive attention (Bahdanau et al. 2015:
  score v^T tanh(W s_{i-1} + U h_j), context fed to the decoder input and to the output layer).
* Decoding: greedy, or beam search (`beam_size`, length normalisation score / len^alpha with
  `length_penalty` = alpha, a hypothesis ends at `<eos>`). The beam result is the best finished
  hypothesis, and never worse than the greedy one under the same normalised model score (the
  greedy hypothesis is one of its candidates).
* Tokenisation: tasks.text "basic" (regex `[\\w']+|[^\\w\\s]`: words with apostrophes, every other
  punctuation mark its own token), lowercased -- deterministic, no external tokenizer.
* BLEU: sacrebleu corpus BLEU (13a tokenisation, lowercase=True since the model writes lowercase)
  of the detokenised output against the raw reference sentences.

Data: local files in format `parallel` (two files aligned by line, source first) or the hub
data set (columns named by `task.src` / `task.tgt`), one `tasks.text.load_splits` path.
"""
from __future__ import annotations

import copy
import dataclasses
import math
import re
from dataclasses import dataclass
from typing import Optional, Sequence

import sacrebleu
import torch
import torch.nn.functional as F
from torch import nn

from bench.schema import opt
from models.recurrent import Recurrent
from tasks import text
from tasks.base import Task, TaskModule
from tasks.decoding import beam_decode, greedy_decode

PAD, UNK, BOS, EOS = text.PAD, text.UNK, text.BOS, text.EOS


# ---------------------------------------------------------------- local format: parallel files

PARALLEL_HELP = ("two text files aligned by line, source language first "
                 "(one raw sentence a line, same number of lines)")


def parse_parallel(files: Sequence[str], columns: Optional[Sequence[str]] = None, encoding: str = "utf-8", **_):
    """[src_file, tgt_file] -> rows {columns[0]: src line, columns[1]: tgt line}."""
    columns = list(columns or ("src", "tgt"))
    if len(files) != 2 or len(columns) != 2:
        raise ValueError(f"{', '.join(files)} line 1: malformed; expected {PARALLEL_HELP}")
    with text.open_text(files[0], encoding) as fs, text.open_text(files[1], encoding) as ft:
        i = 0
        while True:
            try:
                a, b = fs.readline(), ft.readline()
            except UnicodeDecodeError:
                raise ValueError(f"{files[0]} / {files[1]} line {i + 1}: malformed (not UTF-8); "
                                 f"expected {PARALLEL_HELP}") from None
            i += 1
            if not a and not b:
                return
            if not a or not b:
                short = files[0] if not a else files[1]
                raise ValueError(f"{short} line {i}: malformed (ends before the other file); expected {PARALLEL_HELP}")
            a, b = a.rstrip("\n"), b.rstrip("\n")
            if not a.strip() or not b.strip():
                bad = files[0] if not a.strip() else files[1]
                raise ValueError(f"{bad} line {i}: malformed (empty sentence); expected {PARALLEL_HELP}")
            yield {columns[0]: a, columns[1]: b}


text.register_parser("parallel", parse_parallel, PARALLEL_HELP)


# ---------------------------------------------------------------- config


@dataclass
class TranslationConfig(text.TextDataConfig):
    name: str = opt("translation", choices=("translation",))
    format: str = opt("parallel", choices=lambda: list(text.BUILDERS) + list(text.PARSERS),
                      help="local format: 'parallel' = [source file, target file] per split")
    src: str = opt("de", help="source column (language)")
    tgt: str = opt("en", help="target column (language)")
    tokenizer: str = opt("basic", choices=("whitespace", "basic"), help="tasks.text tokenizer")
    lowercase: bool = opt(True)
    min_freq: int = opt(2, ge=1, help="vocabulary: minimum training-split frequency")
    reverse_source: bool = opt(False, help="feed the source reversed (Sutskever et al. 2014)")
    attention: str = opt("none", choices=("none", "additive"), help="additive = Bahdanau attention")
    attention_size: int = opt(256, ge=1)
    teacher_forcing: float = opt(1.0, ge=0, le=1, help="probability of feeding the gold previous token")
    beam_size: int = opt(1, ge=1, help="test decoding: 1 = greedy")
    length_penalty: float = opt(1.0, ge=0, help="beam score / length^alpha (0 = raw log-probability)")
    max_decode_len: int = opt(60, ge=1, help="decoding stops here if no <eos>")
    val_bleu: bool = opt(True, help="greedy-decode the validation set and log val/bleu")


# ---------------------------------------------------------------- tokens and BLEU


_DETOK_BEFORE = re.compile(r" ([.,!?;:%)\]}])")
_DETOK_AFTER = re.compile(r"([(\[{$]) ")


def detokenize(tokens: Sequence[str]) -> str:
    """Join tokens with spaces, then glue punctuation back (no space before . , ! ? ; : % ) ]
    and none after ( [ $)."""
    s = " ".join(tokens)
    return _DETOK_AFTER.sub(r"\1", _DETOK_BEFORE.sub(r"\1", s))


def corpus_bleu(hyps: Sequence[str], refs: Sequence[str], lowercase: bool = True) -> float:
    return float(sacrebleu.corpus_bleu(list(hyps), [list(refs)], lowercase=lowercase).score)


# ---------------------------------------------------------------- data


class TranslationData(text.TextDataModule):
    def __init__(self, cfg, seed: int = 0, num_workers: int = 0, path: str = "task."):
        super().__init__(cfg, seed=seed, num_workers=num_workers, path=path)
        self.sources: dict[str, list[str]] = {}   # raw source sentences (baseline)

    def setup(self, stage: Optional[str] = None) -> None:
        if self.ready:
            return
        view = copy.copy(self.cfg)               # the parallel parser names its columns src, tgt
        view.columns = list(self.cfg.columns or (self.cfg.src, self.cfg.tgt))
        self.info["source"] = text.sources(view, self.path)
        self.build(text.load_splits(view, self.path, need=[self.cfg.src, self.cfg.tgt]))
        if self._restored is not None:
            self._check_restored()
        self.ready = True

    def build(self, raw) -> None:
        c = self.cfg
        toks = {}
        for split in ("train", "validation", "test"):
            ds = raw[split]
            src = [text.tokenize(s, c.tokenizer, c.lowercase) for s in ds[c.src]]
            tgt = [text.tokenize(s, c.tokenizer, c.lowercase) for s in ds[c.tgt]]
            if c.max_len is not None:
                src, tgt = [s[:c.max_len] for s in src], [t[:c.max_len] for t in tgt]
            toks[split] = (src, tgt, list(ds[c.tgt]), list(ds[c.src]))
        sv = text.Vocab.build(toks["train"][0], min_freq=c.min_freq, max_size=c.max_vocab,
                              specials=(PAD, UNK, BOS, EOS))
        tv = text.Vocab.build(toks["train"][1], min_freq=c.min_freq, max_size=c.max_vocab,
                              specials=(PAD, UNK, BOS, EOS))
        self.vocabs = {"src": sv, "tgt": tv}
        for split, (src, tgt, refs, raw_src) in toks.items():
            ex = []
            for i, (s, t, r) in enumerate(zip(src, tgt, refs)):
                s_ids = sv.encode(s)
                if c.reverse_source:
                    s_ids = s_ids[::-1]
                ex.append({"src": s_ids or [sv[EOS]], "tgt": tv.encode(t), "ref": r, "idx": i})
            self.examples[split] = ex
            self.sources[split] = raw_src
            self.lengths[split] = [len(e["src"]) for e in ex]

    def collate(self, items):
        sv, tv = self.vocabs["src"], self.vocabs["tgt"]
        src, src_len = text.pad([e["src"] for e in items], sv.pad_id)
        tgt_in, _ = text.pad([[tv[BOS]] + e["tgt"] for e in items], tv.pad_id)
        tgt_out, tgt_len = text.pad([e["tgt"] + [tv[EOS]] for e in items], tv.pad_id)
        return {"src": src, "src_len": src_len, "tgt_in": tgt_in, "tgt_out": tgt_out, "tgt_len": tgt_len,
                "ref": [e["ref"] for e in items], "idx": torch.tensor([e["idx"] for e in items])}


# ---------------------------------------------------------------- model


class AdditiveAttention(nn.Module):
    """Bahdanau et al. (2015): e_ij = v^T tanh(W s_{i-1} + U h_j), masked softmax over j."""

    def __init__(self, query_size: int, key_size: int, size: int):
        super().__init__()
        self.W = nn.Linear(query_size, size, bias=False)
        self.U = nn.Linear(key_size, size, bias=True)
        self.v = nn.Linear(size, 1, bias=False)

    def keys(self, enc_out):
        return self.U(enc_out)

    def forward(self, query, keys, enc_out, mask):
        e = self.v(torch.tanh(self.W(query).unsqueeze(1) + keys)).squeeze(-1)   # (B, S)
        e = e.masked_fill(~mask, float("-inf"))
        a = torch.softmax(e, -1)
        return torch.bmm(a.unsqueeze(1), enc_out).squeeze(1), a


class Seq2Seq(nn.Module):
    def __init__(self, model_cfg, task_cfg, src_vocab: int, tgt_vocab: int, pad_src: int, pad_tgt: int):
        super().__init__()

        m, t = model_cfg, task_cfg
        E = m.embedding_size
        self.src_emb = nn.Embedding(src_vocab, E, padding_idx=pad_src)
        self.tgt_emb = nn.Embedding(tgt_vocab, E, padding_idx=pad_tgt)
        self.encoder = Recurrent(E, m)
        self.attn = None
        ctx = 0
        if t.attention == "additive":
            ctx = self.encoder.output_size
            self.attn = AdditiveAttention(m.hidden_size, ctx, t.attention_size)
        dec_cfg = dataclasses.replace(m, bidirectional=False)
        self.decoder = Recurrent(E + ctx, dec_cfg)
        self.bidirectional = m.bidirectional
        self.num_layers = m.num_layers
        if m.bidirectional:
            self.bridge = nn.ModuleList(nn.Linear(2 * w, w) for w in self.encoder.state_widths)
        self.drop = nn.Dropout(m.dropout)
        self.out = nn.Linear(m.hidden_size + ctx, tgt_vocab)
        self.ctx = ctx

    # -- encoder
    def encode(self, src, src_len):
        out, state = self.encoder(self.drop(self.src_emb(src)), lengths=src_len)
        if self.bidirectional:
            L = self.num_layers
            new = []
            for s, lin in zip(state, self.bridge):
                s = s.view(L, 2, s.size(1), s.size(2))
                new.append(torch.tanh(lin(torch.cat([s[:, 0], s[:, 1]], -1))))
            state = tuple(new)
        mask = text.lengths_to_mask(src_len, src.size(1)).to(src.device)
        keys = self.attn.keys(out) if self.attn is not None else None
        return {"out": out, "mask": mask, "keys": keys}, state

    # -- one decoder step (T = 1, carried state)
    def step(self, y_prev, state, enc):
        emb = self.drop(self.tgt_emb(y_prev)).unsqueeze(1)                  # (B, 1, E)
        if self.attn is not None:
            ctx, _ = self.attn(state[0][-1], enc["keys"], enc["out"], enc["mask"])
            out, state = self.decoder(torch.cat([emb, ctx.unsqueeze(1)], -1), state=state)
            h = torch.cat([out[:, 0], ctx], -1)
        else:
            out, state = self.decoder(emb, state=state)
            h = out[:, 0]
        return self.out(self.drop(h)), state

    def forward(self, src, src_len, tgt_in, teacher_forcing: float = 1.0, generator=None):
        """Logits (B, T, V) for every target position."""
        enc, state = self.encode(src, src_len)
        if self.attn is None and teacher_forcing >= 1.0:
            out, _ = self.decoder(self.drop(self.tgt_emb(tgt_in)), state=state)
            return self.out(self.drop(out))
        logits = []
        y = tgt_in[:, 0]
        for i in range(tgt_in.size(1)):
            lg, state = self.step(y, state, enc)
            logits.append(lg)
            if i + 1 < tgt_in.size(1):
                y = tgt_in[:, i + 1]
                if teacher_forcing < 1.0:
                    # global RNG: seeded by the run and saved in checkpoints (tasks.base)
                    use_gold = torch.rand(y.shape, generator=generator) < teacher_forcing
                    y = torch.where(use_gold.to(y.device), y, lg.argmax(-1))
        return torch.stack(logits, 1)


class TranslationModule(TaskModule):
    def __init__(self, run_cfg, src_vocab: dict, tgt_vocab: dict):
        super().__init__(run_cfg)
        self.src_vocab, self.tgt_vocab = text.Vocab.from_dict(src_vocab), text.Vocab.from_dict(tgt_vocab)
        t = run_cfg.task
        self.model = Seq2Seq(run_cfg.model, t, len(self.src_vocab), len(self.tgt_vocab),
                             self.src_vocab.pad_id, self.tgt_vocab.pad_id)
        self.bos, self.eos, self.pad = self.tgt_vocab[BOS], self.tgt_vocab[EOS], self.tgt_vocab.pad_id
        self._eval = {}

    def _loss(self, logits, tgt_out):
        return F.cross_entropy(logits.reshape(-1, logits.size(-1)), tgt_out.reshape(-1),
                               ignore_index=self.pad, reduction="sum")

    def training_step(self, batch, batch_idx):
        t = self.run_cfg.task
        logits = self.model(batch["src"], batch["src_len"], batch["tgt_in"], t.teacher_forcing)
        n = (batch["tgt_out"] != self.pad).sum()
        loss = self._loss(logits, batch["tgt_out"]) / n
        return self.train_loss(loss, int(n))

    def decode(self, src, src_len, beam: int = 1):
        t = self.run_cfg.task
        if beam <= 1:
            return greedy_decode(self.model, src, src_len, self.bos, self.eos, t.max_decode_len)[0]
        return beam_decode(self.model, src, src_len, self.bos, self.eos, t.max_decode_len, beam,
                           t.length_penalty)[0]

    def to_text(self, ids: list[int]) -> str:
        toks = [self.tgt_vocab.itos[i] for i in ids if i != self.eos]
        return detokenize(toks)

    def eval_start(self, split):
        self._eval = {"nats": 0.0, "n": 0, "hyps": [], "refs": []}

    def eval_step(self, batch, split):
        logits = self.model(batch["src"], batch["src_len"], batch["tgt_in"])
        self._eval["nats"] += float(self._loss(logits, batch["tgt_out"]))
        self._eval["n"] += int((batch["tgt_out"] != self.pad).sum())
        t = self.run_cfg.task
        if split == "test" or t.val_bleu:
            beam = t.beam_size if split == "test" else 1
            hyps = self.decode(batch["src"], batch["src_len"], beam)
            self._eval["hyps"] += [self.to_text(h) for h in hyps]
            self._eval["refs"] += list(batch["ref"])

    def eval_end(self, split):
        e = self._eval
        if not e or e["n"] == 0:
            return
        loss = e["nats"] / e["n"]
        self.log(f"{split}/loss", loss, prog_bar=True)
        self.log(f"{split}/ppl", math.exp(min(loss, 50.0)))
        if e["hyps"]:
            self.log(f"{split}/bleu", corpus_bleu(e["hyps"], e["refs"]), prog_bar=True)

    def checkpoint_extras(self) -> dict:
        return {"vocabs": {"src": self.src_vocab.to_dict(), "tgt": self.tgt_vocab.to_dict()}}


class TranslationTask(Task):
    Config = TranslationConfig
    Data = TranslationData
    primary = "test/bleu"
    mode = "max"

    def module(self, datamodule=None) -> TranslationModule:
        dm = datamodule or self.datamodule()
        dm.setup()
        return TranslationModule(self.run, dm.vocabs["src"].to_dict(), dm.vocabs["tgt"].to_dict())

    def baseline(self) -> dict:
        """BLEU of the trivial translation (copy the tokenised, lowercased source sentence) and
        loss/perplexity of a unigram model of the target language."""
        dm = self.datamodule()
        dm.setup()
        c = self.cfg
        hyps = [detokenize(text.tokenize(s, c.tokenizer, c.lowercase)) for s in dm.sources["test"]]
        out = {"test/bleu": corpus_bleu(hyps, [e["ref"] for e in dm.examples["test"]])}
        # unigram target model (training frequencies of target tokens and <eos>, add-one smoothed)
        V = len(dm.vocabs["tgt"])
        eos = dm.vocabs["tgt"][EOS]
        counts = torch.ones(V, dtype=torch.float64)
        for e in dm.examples["train"]:
            counts += torch.bincount(torch.tensor(e["tgt"] + [eos], dtype=torch.long), minlength=V).double()
        logp = counts.log() - counts.sum().log()
        ids = torch.tensor([i for e in dm.examples["test"] for i in e["tgt"] + [eos]], dtype=torch.long)
        loss = float(-logp[ids].mean())
        out.update({"test/loss": loss, "test/ppl": math.exp(loss)})
        return out
