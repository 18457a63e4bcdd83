"""One-to-many (vector-to-sequence, the image-captioning shape): a vector conditions a decoder that
must emit a sequence.

Definition. `condition: class`: the vector is the one-hot of a class c ~ U{0..K-1} (K = n_classes)
and the target is that class's template y = tmpl_c, tmpl in {0..V-1}^(K x L) drawn once from
`data_seed` (V = n_symbols, L = length). `condition: code`: the vector is a random code
v in {0,1}^d (d = code_bits, entered as 2v - 1) and the target prints it b bits a step,
y_t = sum_j 2^j v_{(t-1)b+j}, t = 1..L with L = d / b, V = 2^b (b = bits_per_symbol).

Decoder (`inject: state`, Vinyals et al. 2015's image-as-start): h_0 = tanh(W v + w) in every
layer (other state parts zero); `inject: input`: zero h_0 and v beside every step's input. Step t
reads the embedding of y_{t-1} (y_0 = <BOS>, an id of its own that is never an output):
teacher forcing feeds the gold y_{t-1} with probability `teacher_forcing` (per step and sequence),
otherwise the model's own argmax. Loss: cross-entropy over the L steps (as fed in training;
teacher-forced in evaluation). Metrics: token and whole-sequence accuracy of the free-running
greedy decode (no gold token is ever fed). Baseline: the best vector-blind predictor, the most
frequent symbol of each position (class: over the K templates; code: 1/V), and its loss, the
per-position entropy of the symbols.

Data: fresh training batches every epoch (or a fixed set, `fresh_data: false`) and evaluation
sets from `data_seed` only, as the other synthetic tasks (tasks.synthetic.SyntheticData).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from bench.schema import ConfigError, opt
from models.recurrent import Recurrent
from tasks.base import Task, TaskModule
from tasks.synthetic import SyntheticData, synthetic_fields


@synthetic_fields(data_seed=opt(1234, ge=0, help="seed of the templates, the evaluation sets and the training stream"))
class OneToManyConfig:
    name: str = opt("one_to_many", choices=("one_to_many",))
    condition: str = opt("class", choices=("class", "code"), help="class id (one-hot) or random binary code")
    n_classes: int = opt(16, ge=2, help="condition class: classes K")
    n_symbols: int = opt(8, ge=2, help="condition class: output symbols V")
    length: int = opt(10, ge=1, help="condition class: sequence length L")
    code_bits: int = opt(16, ge=1, help="condition code: bits d of the code")
    bits_per_symbol: int = opt(2, ge=1, help="condition code: bits b printed a step (V = 2^b, L = d/b)")
    inject: str = opt("state", choices=("state", "input"), help="the vector sets h0, or enters every step")
    teacher_forcing: float = opt(1.0, ge=0, le=1, help="probability of feeding the gold previous symbol")

    def check(self, path: str) -> None:
        if self.condition == "code" and self.code_bits % self.bits_per_symbol:
            raise ConfigError(f"{path}bits_per_symbol: {self.bits_per_symbol} does not divide code_bits "
                              f"{self.code_bits}; allowed: a divisor of code_bits")


class OneToManyTask(Task):
    Config = OneToManyConfig
    primary = "test/acc"
    mode = "max"

    def __init__(self, run_cfg):
        super().__init__(run_cfg)
        c = self.cfg
        if run_cfg.model.bidirectional:
            raise ConfigError("model.bidirectional: the decoder emits left to right; allowed: false")
        if c.condition == "class":
            self.vector_size, self.V, self.L = c.n_classes, c.n_symbols, c.length
            g = torch.Generator().manual_seed(c.data_seed)
            self.templates = torch.randint(0, c.n_symbols, (c.n_classes, c.length), generator=g)
        else:
            self.vector_size, self.V = c.code_bits, 2 ** c.bits_per_symbol
            self.L = c.code_bits // c.bits_per_symbol

    def make(self, b: int, g: torch.Generator):
        """(vectors (b, K or d), targets (b, L))."""
        c = self.cfg
        if c.condition == "class":
            cls = torch.randint(0, c.n_classes, (b,), generator=g)
            return F.one_hot(cls, c.n_classes).float(), self.templates[cls]
        bits = torch.randint(0, 2, (b, self.L, c.bits_per_symbol), generator=g)
        y = (bits * 2 ** torch.arange(c.bits_per_symbol)).sum(-1)
        return 2.0 * bits.flatten(1).float() - 1.0, y

    def datamodule(self):
        return SyntheticData(self)

    def module(self, datamodule=None):
        return OneToManyModule(self.run, self)

    def baseline(self) -> dict[str, float]:
        """The most frequent symbol of each position, ignoring the vector (exact, not sampled)."""
        if self.cfg.condition == "code":
            return {"test/acc": 1.0 / self.V, "test/loss": math.log(self.V), "test/seq_acc": self.V ** -self.L}
        counts = F.one_hot(self.templates, self.V).sum(0).float()     # (L, V) over equally likely classes
        p = counts / self.cfg.n_classes
        ent = -(p * torch.log(p.clamp_min(1e-30))).sum(-1)
        guess = p.argmax(-1)                                            # one sequence for every vector
        return {"test/acc": float(p.max(-1).values.mean()), "test/loss": float(ent.mean()),
                "test/seq_acc": float((self.templates == guess).all(1).float().mean())}


class OneToManyModule(TaskModule):
    def __init__(self, run_cfg, task: OneToManyTask):
        super().__init__(run_cfg)
        m, c = run_cfg.model, run_cfg.task
        self.inject, self.V, self.L = c.inject, task.V, task.L
        self.embed = nn.Embedding(task.V + 1, m.embedding_size)          # id V is <BOS>, never an output
        extra = task.vector_size if c.inject == "input" else 0
        self.rnn = Recurrent(m.embedding_size + extra, m)
        self.cond = nn.Linear(task.vector_size, m.num_layers * m.hidden_size) if c.inject == "state" else None
        self.drop = nn.Dropout(m.dropout)
        self.head = nn.Linear(self.rnn.output_size, task.V)

    def start(self, v):
        state = list(self.rnn.init_state(len(v), v.device, v.dtype))
        if self.cond is not None:
            h0 = torch.tanh(self.cond(v)).view(len(v), self.rnn.num_layers, -1).transpose(0, 1)
            state[0] = h0.contiguous()
        return tuple(state)

    def _inputs(self, tokens, v):
        x = self.embed(tokens)
        if self.inject == "input":
            x = torch.cat([x, v.unsqueeze(1).expand(-1, x.size(1), -1)], -1)
        return x

    def forward(self, v, y, teacher_forcing: float = 1.0):
        """Logits (B, L, V); the previous symbol fed as the ratio says (1.0: one whole-sequence call)."""
        bos = torch.full((len(v), 1), self.V, dtype=torch.long, device=v.device)
        state = self.start(v)
        if teacher_forcing >= 1.0:
            out, _ = self.rnn(self._inputs(torch.cat([bos, y[:, :-1]], 1), v), state=state)
            return self.head(self.drop(out))
        logits, prev = [], bos[:, 0]
        for t in range(self.L):
            out, state = self.rnn(self._inputs(prev.unsqueeze(1), v), state=state)
            logits.append(self.head(self.drop(out[:, 0])))
            if t + 1 < self.L:
                prev = logits[-1].argmax(-1)
                if teacher_forcing > 0:  # global RNG: seeded by the run and saved in checkpoints (tasks.base)
                    prev = torch.where(torch.rand(len(v), device=v.device) < teacher_forcing, y[:, t], prev)
        return torch.stack(logits, 1)

    @torch.no_grad()
    def generate(self, v) -> torch.Tensor:
        """Free-running greedy decode (B, L): only the model's own symbols are fed."""
        return self(v, torch.zeros(len(v), self.L, dtype=torch.long, device=v.device), teacher_forcing=0.0).argmax(-1)

    def training_step(self, batch, batch_idx):
        v, y = batch
        loss = F.cross_entropy(self(v, y, self.run_cfg.task.teacher_forcing).flatten(0, 1), y.flatten())
        return self.train_loss(loss, len(y))

    def eval_step(self, batch, split):
        v, y = batch
        loss = F.cross_entropy(self(v, y).flatten(0, 1), y.flatten())
        hit = self.generate(v) == y
        for k, val in (("loss", loss), ("acc", hit.float().mean()), ("seq_acc", hit.all(1).float().mean())):
            self.log(f"{split}/{k}", val, on_epoch=True, batch_size=len(y), sync_dist=True)
