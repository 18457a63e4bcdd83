"""Long-dependency synthetic tasks: the copy task and the adding problem (Arjovsky et al. 2016).

Training batches are a pure function of (seed, data_seed, epoch, batch index): fresh every epoch,
identical after a resume, and sliced per rank under DDP so N processes see exactly the global
batch of one. The validation and test sets depend on `data_seed` only, never on the model seed.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import lightning as L
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from bench.schema import opt
from models.feedback import OutputFeedback, teacher_ratio
from models.recurrent import Recurrent
from tasks.base import SkipDone, Task, TaskModule, batches_done

_VAL, _TEST, _TRAIN = 1, 2, 3  # stream ids mixed into generator seeds


def _generator(*parts: int) -> torch.Generator:
    seed = 0
    for p in parts:
        seed = (seed * 1_000_003 + p) % (2**63 - 1)
    return torch.Generator().manual_seed(seed)


class _Batches(Dataset):
    """`n` batches made by `make(batch_size, generator)`; each rank keeps its slice of a batch."""

    def __init__(self, make, n: int, batch_size: int, seeds: tuple, rank: int = 0, world: int = 1):
        self.make, self.n, self.batch_size, self.seeds = make, n, batch_size, seeds
        self.rank, self.world = rank, world

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        x, y = self.make(self.batch_size, _generator(*self.seeds, i))
        return x[self.rank::self.world], y[self.rank::self.world]


def _eval_set(task: "SyntheticTask", stream: int, rank: int = 0, world: int = 1) -> _Batches:
    """The validation or test set: eval_size sequences (rounded up to whole batches) of `data_seed`."""
    c = task.cfg
    return _Batches(task.make, math.ceil(c.eval_size / c.batch_size), c.batch_size, (c.data_seed, stream), rank, world)


class SyntheticData(L.LightningDataModule):
    def __init__(self, task: "SyntheticTask"):
        super().__init__()
        self.task, self.cfg, self.seed = task, task.cfg, task.run.seed
        self.steps = task.run.trainer.val_every or 100

    def _rank(self):
        t = self.trainer
        return (t.global_rank, t.world_size) if t is not None else (0, 1)

    def _loader(self, ds, train: bool = False):
        # its own generator: making an iterator must not draw from the global RNG (dropout's),
        # or a resumed run would see other dropout masks than an uninterrupted one
        skip = batches_done(self.trainer) if train else 0
        return DataLoader(ds, batch_size=None, sampler=SkipDone(range(len(ds)), skip), generator=torch.Generator())

    def train_dataloader(self):
        epoch = self.trainer.current_epoch if self.trainer is not None else 0
        if not self.cfg.fresh_data:  # a fixed training set, reshuffled by epoch
            n = max(1, self.cfg.train_size // self.cfg.batch_size)
            order = torch.randperm(n, generator=_generator(self.seed, epoch)).tolist()
            ds = _Batches(self.task.make, n, self.cfg.batch_size, (self.cfg.data_seed, _TRAIN), *self._rank())
            return self._loader(torch.utils.data.Subset(ds, order), train=True)
        ds = _Batches(self.task.make, self.steps, self.cfg.batch_size,
                      (self.cfg.data_seed, self.seed, _TRAIN, epoch), *self._rank())
        return self._loader(ds, train=True)

    def _eval(self, stream):
        return self._loader(_eval_set(self.task, stream, *self._rank()))

    def val_dataloader(self):
        return self._eval(_VAL)

    def test_dataloader(self):
        return self._eval(_TEST)


class SequenceModule(TaskModule):
    """Inputs (one-hot tokens or real features) -> Recurrent -> linear head; many-to-many
    (`y` of shape (B, T)) or many-to-one (`y` of shape (B,))."""

    def __init__(self, run_cfg, task: "SyntheticTask"):
        super().__init__(run_cfg)
        self.task = task
        m = run_cfg.model
        if task.one_hot:  # rows of the identity: one float gather, no int64 one-hot and cast
            self.register_buffer("eye", torch.eye(task.input_size), persistent=False)
        if m.output_feedback != "none":  # the previous output fed back (per-step class targets)
            self.feedback = OutputFeedback(task.input_size, task.output_size, m)
            return
        self.rnn = Recurrent(task.input_size, m)
        self.drop = torch.nn.Dropout(m.dropout) if m.dropout else torch.nn.Identity()
        self.head = torch.nn.Linear(self.rnn.output_size, task.output_size)

    def forward(self, x, y=None):
        """Logits; with output feedback, y (the targets) is fed as the training ratio says
        (models.feedback.teacher_ratio at this step), never in evaluation."""
        if self.task.one_hot:
            x = self.eye[x]
        if hasattr(self, "feedback"):
            ratio = teacher_ratio(self.run_cfg.model, self.global_step) if self.training else 0.0
            return self.feedback(x, y, ratio)
        out, _ = self.rnn(x)
        return self.head(self.drop(out))

    def _step(self, batch, split: str):
        x, y = batch
        on_step = split == "train"
        logs = not on_step or self.logs_this_step()
        loss, metrics = self.task.loss_and_metrics(self(x, y), y, metrics=logs)
        if not logs:
            return loss
        self.log(f"{split}/loss", loss, on_step=on_step, on_epoch=not on_step, prog_bar=True,
                 batch_size=len(y), sync_dist=not on_step)
        for k, v in metrics.items():
            self.log(f"{split}/{k}", v, on_step=on_step, on_epoch=not on_step, batch_size=len(y),
                     sync_dist=not on_step)
        return loss

    def training_step(self, batch, batch_idx):
        loss = self._step(batch, "train")
        self.check_finite(loss)
        return loss

    def eval_step(self, batch, split):
        self._step(batch, split)


class SyntheticTask(Task):
    long_dependency = True
    one_hot = False

    def datamodule(self):
        return SyntheticData(self)

    def module(self, datamodule=None):
        return SequenceModule(self.run, self)


def synthetic_fields(**override):
    """Class decorator making a synthetic task's config a dataclass that ends with the five data
    fields they all have (`override`: a field of another help text), after its own fields: the
    order of `--fields`, config.yaml and reproduce commands stays the one they had when written out."""
    def wrap(cls):
        shared = {"batch_size": ("int", opt(64, ge=1)),
                  "eval_size": ("int", opt(1000, ge=1, help="sequences in each of val and test")),
                  "data_seed": ("int", opt(1234, ge=0, help="seed of the evaluation sets (and the training stream)")),
                  "fresh_data": ("bool", opt(True, help="new training batches every epoch; false = a fixed set")),
                  "train_size": ("int", opt(10000, ge=1, help="training sequences when fresh_data is false"))}
        for name, (tp, field) in shared.items():
            cls.__annotations__[name] = tp
            setattr(cls, name, override.get(name, field))
        return dataclass(cls)
    return wrap


@synthetic_fields()
class CopyConfig:
    name: str = opt("copy", choices=("copy",))
    T: int = opt(100, ge=1, help="delay: T-1 blanks then a delimiter between symbols and recall")
    n_symbols: int = opt(10, ge=1, help="symbols to remember")
    n_categories: int = opt(8, ge=2, help="symbol alphabet size")


class CopyTask(SyntheticTask):
    """Inputs: n symbols from {1..K}, T-1 blanks (0), delimiter (K+1), n blanks (length T+2n).
    Targets: T+n blanks, then the n symbols. Loss: cross-entropy over every step."""

    Config = CopyConfig
    one_hot = True
    step_classes = True

    def __init__(self, run_cfg):
        super().__init__(run_cfg)
        self.input_size = self.cfg.n_categories + 2
        self.output_size = self.cfg.n_categories + 1

    def make(self, b: int, g: torch.Generator):
        c = self.cfg
        n, T, K = c.n_symbols, c.T, c.n_categories
        symbols = torch.randint(1, K + 1, (b, n), generator=g)
        x = torch.zeros(b, T + 2 * n, dtype=torch.long)
        x[:, :n] = symbols
        x[:, n + T - 1] = K + 1
        y = torch.zeros_like(x)
        y[:, -n:] = symbols
        return x, y

    def loss_and_metrics(self, logits, y, metrics: bool = True):
        loss = F.cross_entropy(logits.flatten(0, 1), y.flatten())
        if not metrics:
            return loss, {}
        n = self.cfg.n_symbols
        acc = (logits[:, -n:].argmax(-1) == y[:, -n:]).float().mean()
        return loss, {"acc": acc}

    def packed_loss(self, logits, y):
        """The losses of K packed runs at once: logits (K, B, T, O), y (K, B, T) -> (K,)."""
        return F.cross_entropy(logits.permute(0, 3, 1, 2), y, reduction="none").flatten(1).mean(1)

    def baseline(self):
        c = self.cfg
        return {"test/loss": c.n_symbols * math.log(c.n_categories) / (c.T + 2 * c.n_symbols)}

    def solved(self, metrics):
        return metrics.get("test/acc", 0.0) >= 0.99

    def solved_threshold(self):
        return "val/acc", "max", 0.99   # strict: stops above 0.99, the safe side of solved's >=


@synthetic_fields()
class RunningSumConfig:
    name: str = opt("running_sum", choices=("running_sum",))
    T: int = opt(20, ge=1, help="sequence length")
    n_categories: int = opt(4, ge=2, help="K: inputs and outputs in {0..K-1}")


class RunningSumTask(SyntheticTask):
    """Inputs x_t ~ U{0..K-1}; targets the running sum y_t = (x_1 + ... + x_t) mod K, one class a
    step: y_t = (y_{t-1} + x_t) mod K, so the previous output is all the state needed (the
    Jordan network's task, model.output_feedback). Loss: cross-entropy over every step; acc over
    every step, seq_acc of whole sequences. Baseline: y_t is uniform whatever x_t alone, the
    blind predictor's loss is ln K, its acc 1/K."""

    Config = RunningSumConfig
    one_hot = True
    step_classes = True
    long_dependency = False

    def __init__(self, run_cfg):
        super().__init__(run_cfg)
        self.input_size = self.output_size = self.cfg.n_categories

    def make(self, b: int, g: torch.Generator):
        x = torch.randint(0, self.cfg.n_categories, (b, self.cfg.T), generator=g)
        return x, x.cumsum(1) % self.cfg.n_categories

    def loss_and_metrics(self, logits, y, metrics: bool = True):
        loss = F.cross_entropy(logits.flatten(0, 1), y.flatten())
        if not metrics:
            return loss, {}
        hit = logits.argmax(-1) == y
        return loss, {"acc": hit.float().mean(), "seq_acc": hit.all(1).float().mean()}

    def baseline(self):
        K = self.cfg.n_categories
        return {"test/loss": math.log(K), "test/acc": 1.0 / K}


@synthetic_fields()
class AddingConfig:
    name: str = opt("adding", choices=("adding",))
    T: int = opt(100, ge=2, help="sequence length (one marker in each half)")


class AddingTask(SyntheticTask):
    """Inputs (T, 2): values ~ U[0,1] and markers, one marker in each half.
    Target: the sum of the two marked values (many-to-one). Loss: MSE; baseline ~0.167 (predict 1)."""

    Config = AddingConfig
    input_size, output_size = 2, 1
    baseline_from_config = True

    def make(self, b: int, g: torch.Generator):
        T = self.cfg.T
        values = torch.rand(b, T, generator=g)
        half = T // 2
        first = torch.randint(0, half, (b,), generator=g)
        second = torch.randint(half, T, (b,), generator=g)
        markers = torch.zeros(b, T)
        rows = torch.arange(b)
        markers[rows, first] = 1.0
        markers[rows, second] = 1.0
        y = values[rows, first] + values[rows, second]
        return torch.stack([values, markers], -1), y

    def loss_and_metrics(self, pred, y, metrics: bool = True):
        return F.mse_loss(pred[:, -1, 0], y), {}

    def packed_loss(self, pred, y):
        """The losses of K packed runs at once: pred (K, B, T, 1), y (K, B) -> (K,)."""
        return (pred[:, :, -1, 0] - y).square().mean(1)

    def baseline(self):
        """Predicting 1, the targets' mean: MSE 1/6 in expectation, here on this run's own test set
        (1,000 sequences put it 0.006 either side of 1/6, more than a model that learnt nothing moves)."""
        test = _eval_set(self, _TEST)
        y = torch.cat([test[i][1] for i in range(len(test))])
        return {"test/loss": round(float((y - 1).square().mean()), 6)}

    def solved(self, metrics):
        return metrics.get("test/loss", math.inf) < 0.01

    def solved_threshold(self):
        return "val/loss", "min", 0.01
