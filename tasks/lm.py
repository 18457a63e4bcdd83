"""Language modelling: Tiny Shakespeare (characters) and Penn Treebank (words).

Data: one contiguous token stream per split, batchified into `batch_size` columns (Zaremba et al.
2014 style). Training uses truncated BPTT with (k1, k2): every k1 steps the loss of those k1
steps is back-propagated through the last k2 steps (k2 >= k1; k1 = k2 = bptt by default). The
hidden state is carried across batches (detached), reset at the start of each epoch, and saved
in checkpoints (every rank's) so a mid-epoch resume goes on from it.

Metrics: `loss` (nats per token), `ppl` (exp loss), `bpc` (bits per character of the text the
scored tokens stand for: for characters it is loss / ln 2; for words each word counts its length
plus one separator, `<eos>` the line break). Baseline: unigram model with the training-set
frequencies (add-one smoothed over the vocabulary) on the test split.

Data sources go through `tasks.text.load_splits` (local files or the hub, one `datasets` path).
A text without an official split (Tiny Shakespeare) is cut by position with `task.cut`.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Optional

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from bench.schema import ConfigError, opt
from models.recurrent import Recurrent
from tasks import text
from tasks.base import SkipDone, Task, TaskModule, batches_done

EOS, UNK = text.EOS, text.UNK


@dataclass
class LMConfig(text.TextDataConfig):
    """Data-source fields from tasks.text (local `data_files` under the data root, else the hub
    id `dataset`); the presets (bench/configs/task/{tinyshakespeare,ptb}.yaml) fill them in."""

    name: str = opt("lm", choices=("lm",))
    format: str = opt("text", choices=lambda: list(text.BUILDERS) + list(text.PARSERS),
                      help="local format; 'text' = plain text, a line a row")
    tokenizer: str = opt("chars", choices=("chars", "whitespace", "basic"),
                         help="chars = character LM; whitespace/basic = word LM with <eos> per line")
    hub_text_column: Optional[str] = opt(None, help="text column of the hub data set; null = text_column")
    cut: Optional[list] = opt(None, help="one text without an official split: train/val/test fractions by "
                                         "position (of train, or train+validation+test when those differ)")
    bptt: int = opt(100, ge=1, help="training window; k1 = k2 = bptt unless set")
    k1: Optional[int] = opt(None, ge=1, help="steps between updates (new targets per window)")
    k2: Optional[int] = opt(None, ge=1, help="steps back-propagated per update (>= k1)")
    eval_bptt: Optional[int] = opt(None, ge=1, help="evaluation window (state carried across); null = bptt")
    tie_weights: bool = opt(False, help="share embedding and output weights (embedding_size == hidden size)")
    metric: str = opt("ppl", choices=("ppl", "bpc", "loss"), help="primary test metric")

    def check(self, path: str) -> None:
        super().check(path)
        for key in ("folds", "test_fraction"):
            if getattr(self, key) is not None:
                raise ConfigError(f"{path}{key}: not for language modelling (one text is cut by position); "
                                  f"allowed: null, and task.cut=[0.9, 0.05, 0.05] for one file")
        if self.cut is not None and (len(self.cut) != 3 or min(self.cut) <= 0 or abs(sum(self.cut) - 1) > 1e-6):
            raise ConfigError(f"{path}cut: invalid value {self.cut!r}; allowed: three positive fractions summing to 1")
        if self.k2 is not None and self.k2 < self.K1:
            raise ConfigError(f"{path}k2: invalid value {self.k2}; allowed: a number >= k1 ({self.K1})")

    @property
    def level(self) -> str:
        return "char" if self.tokenizer == "chars" else "word"

    @property
    def K1(self) -> int:
        return self.k1 or self.bptt

    @property
    def K2(self) -> int:
        return self.k2 or max(self.bptt, self.K1)


# ---------------------------------------------------------------- data


def tokenize(value: str, level: str, mode: str = "whitespace", lowercase: bool = False) -> list[str]:
    """Characters, or words (tasks.text tokenizer `mode`) with `<eos>` closing every non-empty
    line (Mikolov's PTB convention)."""
    if level == "char":
        return list(value.lower() if lowercase else value)
    out: list[str] = []
    for line in value.splitlines():
        words = text.tokenize(line, mode, lowercase)
        if words:
            out += words + [EOS]
    return out


def detokenize(tokens: list[str], level: str) -> str:
    if level == "char":
        return "".join(tokens)
    return " ".join(tokens).replace(f" {EOS} ", "\n").replace(f" {EOS}", "\n").replace(f"{EOS} ", "\n").replace(EOS, "\n")


def batchify(ids: torch.Tensor, n: int) -> torch.Tensor:
    """(N,) -> (n, N // n): n contiguous streams, the tail that does not fill a column dropped."""
    cols = ids.numel() // n
    if cols < 2:
        raise ValueError(f"split of {ids.numel()} tokens is too short for {n} streams")
    return ids[: n * cols].view(n, cols)


class TBPTTWindows(Dataset):
    """Windows over batchified streams (B, N). Window i has the targets at positions
    (i*k1, e] with e = min((i+1)*k1, N-1) and the inputs of the k2 steps before them,
    [e-k2, e) (clipped at 0), so each update back-propagates exactly k2 steps (fewer only at the
    stream start). `split` is where, inside the window, the state for window i+1 is taken: that
    window starts k2 steps before its own end."""

    def __init__(self, streams: torch.Tensor, k1: int, k2: int):
        self.s, self.k1, self.k2 = streams, k1, k2
        self.last = streams.size(1) - 1
        self.n = math.ceil(self.last / k1)

    def __len__(self):
        return self.n

    def _end(self, i: int) -> int:
        return min((i + 1) * self.k1, self.last)

    def __getitem__(self, i):
        end = self._end(i)
        first = max(end - self.k2, 0)
        nxt = self._end(i + 1) - self.k2                  # window i+1's first input position
        return {"x": self.s[:, first:end], "y": self.s[:, i * self.k1 + 1: end + 1],
                "split": max(0, min(nxt - first, end - first)), "reset": i == 0}


class EvalWindows(Dataset):
    def __init__(self, streams: torch.Tensor, bptt: int):
        self.s, self.bptt = streams, bptt
        self.n = math.ceil((streams.size(1) - 1) / bptt)

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        a, b = i * self.bptt, min((i + 1) * self.bptt, self.s.size(1) - 1)
        return {"x": self.s[:, a:b], "y": self.s[:, a + 1: b + 1], "split": b - a, "reset": i == 0}


def load_texts(cfg: LMConfig, path: str = "task.") -> dict:
    """split -> the split's text (lines joined by newlines) through tasks.text.load_splits."""
    view = copy.copy(cfg)
    if text.local_root(cfg) is None and cfg.hub_text_column:
        view.text_column = cfg.hub_text_column
    if cfg.cut is not None and text.local_root(cfg) is not None:
        files = dict(cfg.data_files)        # one file: load it as every split, cut it below
        for k in ("validation", "test"):
            files.setdefault(k, files["train"])
        view.data_files = files
    ds = text.load_splits(view, path, need=[view.text_column])
    texts = {k: "\n".join(ds[k][view.text_column]) + "\n" for k in ("train", "validation", "test")}
    if cfg.cut is None:
        return texts
    same = text.local_root(cfg) is not None and all(
        view.data_files[k] == view.data_files["train"] for k in ("validation", "test"))
    whole = texts["train"] if same else "".join(texts[k] for k in ("train", "validation", "test"))
    n = len(whole)
    a, b = int(n * cfg.cut[0]), int(n * (cfg.cut[0] + cfg.cut[1]))
    return {"train": whole[:a], "validation": whole[a:b], "test": whole[b:]}


class LMData(L.LightningDataModule):
    def __init__(self, cfg: LMConfig):
        super().__init__()
        self.cfg = cfg
        self.vocab: Optional[text.Vocab] = None
        self.ids: dict[str, torch.Tensor] = {}

    def setup(self, stage: Optional[str] = None) -> None:
        if self.vocab is not None:
            return
        c = self.cfg
        texts = load_texts(c)
        tokens = {k: tokenize(v, c.level, c.tokenizer, c.lowercase) for k, v in texts.items()}
        for k, v in tokens.items():
            if len(v) < 2 * max(c.batch_size if k == "train" else (c.eval_batch_size or c.batch_size), 1):
                raise ValueError(f"task.data_files.{k}: {len(v)} tokens, too few for the batch size; expected "
                                 f"{text.FORMAT_HELP.get(c.format, c.format)} with more text")
        self.vocab = text.Vocab.build([tokens["train"]], min_freq=c.min_freq, max_size=c.max_vocab,
                                      specials=(UNK,), unk=UNK, pad=None)
        self.ids = {k: torch.tensor(self.vocab.encode(v), dtype=torch.long) for k, v in tokens.items()}

    def state_dict(self) -> dict:
        return {"vocab": self.vocab.to_dict()} if self.vocab is not None else {}

    def _rank(self):
        t = self.trainer
        return (t.global_rank, t.world_size) if t is not None else (0, 1)

    def _streams(self, split: str, n: int) -> torch.Tensor:
        self.setup()
        s = batchify(self.ids[split], n)
        rank, world = self._rank()
        return s[rank::world] if world > 1 else s

    def train_dataloader(self):
        c = self.cfg
        ds = TBPTTWindows(self._streams("train", c.batch_size), c.K1, c.K2)
        # its own generator: making an iterator must not draw from the global (dropout) RNG
        return DataLoader(ds, batch_size=None, sampler=SkipDone(range(len(ds)), batches_done(self.trainer)),
                          generator=torch.Generator())

    def _eval(self, split):
        c = self.cfg
        return DataLoader(EvalWindows(self._streams(split, c.eval_batch_size or c.batch_size),
                                      c.eval_bptt or c.bptt), batch_size=None)

    def val_dataloader(self):
        return self._eval("validation")

    def test_dataloader(self):
        return self._eval("test")


def token_chars(vocab_tokens: list[str], level: str) -> torch.Tensor:
    """Characters of text each token stands for (for bits per character)."""
    if level == "char":
        return torch.ones(len(vocab_tokens))
    return torch.tensor([0.0 if t == EOS else len(t) + 1.0 for t in vocab_tokens])


def unigram_scores(train_ids: torch.Tensor, eval_ids: torch.Tensor, vocab_tokens: list[str], level: str) -> dict:
    counts = torch.bincount(train_ids, minlength=len(vocab_tokens)).double() + 1.0
    logp = counts.log() - counts.sum().log()
    nats = -logp[eval_ids].sum().item()
    n = eval_ids.numel()
    chars = token_chars(vocab_tokens, level).double()[eval_ids].sum().item()
    return {"loss": nats / n, "ppl": math.exp(nats / n), "bpc": nats / math.log(2) / max(chars, 1.0)}


# ---------------------------------------------------------------- model


def _detach(state):
    return None if state is None else tuple(s.detach() for s in state)


class LMModule(TaskModule):
    """Embedding -> Recurrent -> (dropout) -> linear over the vocabulary."""

    def __init__(self, run_cfg, vocab_tokens: list[str]):
        super().__init__(run_cfg)

        m, t = run_cfg.model, run_cfg.task
        if m.bidirectional:
            raise ConfigError("model.bidirectional: a language model cannot read ahead; allowed: false")
        self.vocab_tokens = list(vocab_tokens)
        V = len(self.vocab_tokens)
        self.embed = nn.Embedding(V, m.embedding_size)
        self.rnn = Recurrent(m.embedding_size, m)
        self.drop = nn.Dropout(m.dropout)
        self.head = nn.Linear(self.rnn.output_size, V)
        if t.tie_weights:
            if self.rnn.output_size != m.embedding_size:
                raise ConfigError(f"task.tie_weights: needs model.embedding_size == hidden size; got "
                                  f"{m.embedding_size} and {self.rnn.output_size}")
            self.head.weight = self.embed.weight
        self.register_buffer("chars", token_chars(self.vocab_tokens, t.level), persistent=False)
        self._carry = None
        self._carry_restored = False
        self._eval_carry = None
        self._sums = {}

    # -- core pieces (also used by the tests and `sample`)
    def run_window(self, emb: torch.Tensor, carry, split: int):
        """Run embedded inputs (B, L, E) from `carry`; return outputs (B, L, H) and the state after
        the first `split` steps (what the next window starts from)."""
        if 0 < split < emb.size(1):
            out_a, mid = self.rnn(emb[:, :split], state=carry)
            out_b, _ = self.rnn(emb[:, split:], state=mid)
            return torch.cat([out_a, out_b], 1), mid
        if split <= 0:
            out, _ = self.rnn(emb, state=carry)
            return out, carry
        out, last = self.rnn(emb, state=carry)
        return out, last

    def forward(self, x: torch.Tensor, state=None):
        out, state = self.rnn(self.drop(self.embed(x)), state=state)
        return self.head(self.drop(out)), state

    def window_loss(self, emb, y, carry, split):
        """Mean cross-entropy of the targets `y` (the last y.size(1) steps) and the carry."""
        out, nxt = self.run_window(emb, carry, split)
        logits = self.head(self.drop(out[:, out.size(1) - y.size(1):]))
        loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), y.reshape(-1), reduction="none")
        return loss, nxt

    def on_train_epoch_start(self):
        if not self._carry_restored:  # a mid-epoch resume goes on from the saved state
            self._carry = None
        self._carry_restored = False

    def training_step(self, batch, batch_idx):
        if batch["reset"]:
            self._carry = None
        emb = self.drop(self.embed(batch["x"]))
        loss, nxt = self.window_loss(emb, batch["y"], self._carry, int(batch["split"]))
        self._carry = _detach(nxt)
        loss = loss.mean()
        return self.train_loss(loss, batch["y"].numel())

    # -- evaluation: exact per-token averages over the whole split
    def eval_start(self, split):
        self._eval_carry = None
        self._sums = {"nats": 0.0, "n": 0.0, "chars": 0.0}

    def eval_step(self, batch, split):
        if batch["reset"]:
            self._eval_carry = None
        emb = self.drop(self.embed(batch["x"]))
        loss, nxt = self.window_loss(emb, batch["y"], self._eval_carry, int(batch["split"]))
        self._eval_carry = _detach(nxt)
        y = batch["y"].reshape(-1)
        self._sums["nats"] += loss.sum().item()
        self._sums["n"] += y.numel()
        self._sums["chars"] += self.chars[y].sum().item()

    def eval_end(self, split):
        s = self._sums
        if not s or s["n"] == 0:
            return
        t = torch.tensor([s["nats"], s["n"], s["chars"]], dtype=torch.float64, device=self.device)
        if self.trainer is not None and self.trainer.world_size > 1:
            t = self.trainer.strategy.reduce(t, reduce_op="sum")
        nats, n, chars = t.tolist()
        loss = nats / n
        self.log(f"{split}/loss", loss, prog_bar=True)
        self.log(f"{split}/ppl", math.exp(min(loss, 50.0)), prog_bar=split == "val")
        self.log(f"{split}/bpc", nats / math.log(2) / max(chars, 1.0))

    def checkpoint_extras(self) -> dict:
        out = {"vocab": {"itos": list(self.vocab_tokens), "unk": UNK, "pad": None}}
        if self._carry is not None:  # every rank's state (rank 0 alone writes the file)
            world = self.trainer.world_size if self._trainer is not None else 1
            states = [self.all_gather(s) if world > 1 else s[None] for s in self._carry]
            out["lm_carry"] = {"world": world, "states": [s.cpu() for s in states]}
        return out

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        super().on_load_checkpoint(checkpoint)
        carry = checkpoint.get("lm_carry")
        rank, world = (self.trainer.global_rank, self.trainer.world_size) if self._trainer is not None else (0, 1)
        if carry and carry["world"] == world:  # another world size streams other rows: start fresh
            self._carry = tuple(s[rank].to(self.device) for s in carry["states"])
        else:
            self._carry = None
        self._carry_restored = self._carry is not None


class LMTask(Task):
    Config = LMConfig
    primary = "test/ppl"
    mode = "min"

    def __init__(self, run_cfg):
        super().__init__(run_cfg)
        self.primary = f"test/{self.cfg.metric}"

    def make_datamodule(self) -> LMData:
        return LMData(self.cfg)

    def module(self, datamodule=None) -> LMModule:
        dm = datamodule or self.datamodule()
        dm.setup()
        return LMModule(self.run, dm.vocab.itos)

    def baseline(self) -> dict:
        return self._unigram("test", "test")

    def val_baseline(self) -> dict:
        return self._unigram("validation", "val")

    def _unigram(self, split: str, prefix: str) -> dict:
        dm = self.datamodule()
        dm.setup()
        s = unigram_scores(dm.ids["train"], dm.ids[split], dm.vocab.itos, self.cfg.level)
        return {f"{prefix}/{k}": v for k, v in s.items()}
