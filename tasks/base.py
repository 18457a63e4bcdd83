"""What every task family provides, and the LightningModule base all task modules share."""
from __future__ import annotations

import itertools
import math
from typing import Callable, Optional, Protocol

import lightning as L
import torch
from torch.utils.data import Sampler

from models.tree.rows import RowAdagrad


class Diverged(RuntimeError):
    """Raised when the training loss becomes NaN/inf (or a validation loss explodes, bench/divergence.py);
    the run is recorded as 'diverged'."""

    def __init__(self, step: int, loss: float, why: Optional[str] = None):
        super().__init__(why or f"loss became {loss} at step {step}")
        self.step = step


class SkipDone(Sampler):
    """`inner` without its first `skip` items, keeping len(inner): a run resumed mid-epoch trains on
    exactly the batches it had not reached (Lightning counts the done ones and ends the epoch when
    this runs out), so the resumed run equals an uninterrupted one."""

    def __init__(self, inner, skip: int = 0):
        self.inner = inner
        self.skip = skip if 0 < skip < len(inner) else 0  # == len: the epoch was done

    def __len__(self):
        return len(self.inner)

    def __iter__(self):
        return itertools.islice(iter(self.inner), self.skip, None)

    def set_epoch(self, epoch: int) -> None:
        if hasattr(self.inner, "set_epoch"):
            self.inner.set_epoch(epoch)


def batches_done(trainer) -> int:
    """Training batches of the current epoch done before a mid-epoch resume; 0 otherwise. Counted
    as `processed`: a checkpoint saved at a batch end (bench.checkpoints.SaveOnStop) has not yet
    counted that batch `completed`; one saved after validation has both equal."""
    loop = getattr(getattr(trainer, "fit_loop", None), "epoch_loop", None)
    return loop.batch_progress.current.processed if loop is not None and loop.restarting else 0


class TaskConfig(Protocol):
    """What the runner needs of a task family's config dataclass (each family defines its own)."""

    name: str


class Task:
    """A task family. Subclasses set `Config` (a dataclass with a `name` field) and build the
    datamodule and module for one resolved run config."""

    Config: type
    Data: Optional[type] = None        # datamodule class made (once) by `datamodule()`
    primary: str = "test/loss"         # metric the reports and leaderboards rank by
    mode: str = "min"                  # "min" or "max" for `primary`
    long_dependency: bool = False      # reports draw solved-vs-T for these
    step_classes: bool = False         # a class target at every step: model.output_feedback feeds it back
    baseline_from_config: bool = False  # `baseline()` is computed from the config alone (its generated
                                       # test set): reports recompute it for runs stored with an older value

    def __init__(self, run_cfg):
        self.run = run_cfg
        self.cfg = run_cfg.task
        self._dm: Optional[L.LightningDataModule] = None

    def datamodule(self) -> L.LightningDataModule:
        """The run's datamodule, made once (module(), baseline() and pretrained() share it)."""
        if self._dm is None:
            self._dm = self.make_datamodule()
        return self._dm

    def make_datamodule(self) -> L.LightningDataModule:
        if self.Data is None:
            raise NotImplementedError
        return self.Data(self.cfg, seed=self.run.seed, num_workers=self.run.trainer.num_workers)

    def module(self, datamodule: L.LightningDataModule) -> L.LightningModule:
        raise NotImplementedError

    def pretrained(self, module: L.LightningModule) -> dict:
        """Load pretrained parts (e.g. word vectors) into a freshly initialised module; returns what
        was loaded (file, checksum, coverage) for the run's record. Default: nothing."""
        return {}

    def baseline(self) -> dict[str, float]:
        """Scores of the trivial predictor, reported beside the model's (e.g. {'loss': ...})."""
        return {}

    def val_baseline(self) -> dict[str, float]:
        """The trivial predictor's scores on the validation split ({'val/...'}), for the divergence
        bound (bench/divergence.py); {} where they are the test ones (synthetic tasks)."""
        return {}

    def solved(self, metrics: dict) -> Optional[bool]:
        """Whether a finished run solved the task (long-dependency tasks); None = not defined."""
        return None

    def solved_threshold(self) -> Optional[tuple[str, str, float]]:
        """(validation metric, mode, threshold) of `solved` for trainer.stop_when_solved: the run
        stops once the metric is strictly beyond the threshold (below it for mode min, above it for
        max); None = the task has no solved criterion."""
        return None


# The one optimizer registry: `optim.name` -> torch optimizer from the parameters and the `optim`
# section (its choices in bench/config.py come from here; a new optimizer is one line).
# foreach (Adam, RMSprop): one multi-tensor op per update term instead of one per parameter; on
# CPU the same kernels per tensor, so the same numbers, with less per-step overhead
OPTIMIZERS: dict[str, Callable] = {
    "adam": lambda params, o: torch.optim.Adam(params, lr=o.lr, weight_decay=o.weight_decay, foreach=True),
    "rmsprop": lambda params, o: torch.optim.RMSprop(params, lr=o.lr, alpha=o.alpha, momentum=o.momentum,
                                                     weight_decay=o.weight_decay, foreach=True),
    "sgd": lambda params, o: torch.optim.SGD(params, lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay),
    # Socher 2013, Tai 2015; torch's AdaGrad, row-sparse gradients updated as dense ones (models/tree/rows.py)
    "adagrad": lambda params, o: RowAdagrad(params, lr=o.lr, weight_decay=o.weight_decay,
                                            initial_accumulator_value=o.adagrad_init, eps=o.adagrad_eps),
}


@torch.no_grad()
def reset_adagrad(opt: torch.optim.Optimizer, init: float) -> None:
    """Every AdaGrad sum back to `init` (Socher et al.'s code resets them every epoch)."""
    for state in opt.state.values():
        if "sum" in state:
            state["sum"].fill_(init)


class TaskModule(L.LightningModule):
    """Optimizer from the `optim` section, divergence check, and RNG state in checkpoints
    (so a resumed run continues with the same dropout masks as an uninterrupted one).

    Evaluation: a family implements `eval_step(batch, split)` ("val" or "test"), and, when its
    metrics are sums over the whole split, `eval_start(split)` / `eval_end(split)`; what a loaded
    module needs besides its weights (vocabularies, carried state) comes from `checkpoint_extras()`."""

    def __init__(self, run_cfg):
        super().__init__()
        self.run_cfg = run_cfg
        self.save_hyperparameters({"config": run_cfg.to_dict()})

    def optim_params(self) -> list:
        """The trainable parameters, or param groups (dicts) where some take their own lr."""
        return [p for p in self.parameters() if p.requires_grad]

    def configure_optimizers(self):
        o = self.run_cfg.optim
        opt = OPTIMIZERS[o.name](self.optim_params(), o)
        if o.lr_decay is not None:
            start, gamma = o.lr_decay_start, o.lr_decay
            sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda epoch: gamma ** max(0, epoch - start + 1))
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "epoch"}}
        if o.plateau_factor is None:
            return opt
        sched = torch.optim.lr_scheduler.ReduceLROnPlateau(
            opt, factor=o.plateau_factor, patience=o.plateau_patience)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "monitor": "val/loss",
                                                   "interval": "epoch", "frequency": 1}}

    def on_train_batch_start(self, batch, batch_idx):
        """optim.adagrad_reset: AdaGrad's sums back to adagrad_init at the first step of every epoch
        but the first (from global_step, so a run resumed mid-epoch resets where an uninterrupted one does)."""
        o, t = self.run_cfg.optim, self._trainer
        if o.adagrad_reset and t is not None and t.global_step > 0 and t.global_step % t.num_training_batches == 0:
            for opt in t.optimizers:
                reset_adagrad(opt, o.adagrad_init)

    def logs_this_step(self) -> bool:
        """Whether Lightning writes step metrics after this training step (every
        `log_every_n_steps` steps, and when it stops). Training metrics are logged only then: the
        other steps skip Lightning's logging machinery and any read-back of a value to the host,
        and the logged rows are the same."""
        t = self._trainer
        if t is None:  # called outside a Trainer (tests, checkpoint inference): always log
            return True
        n = t.log_every_n_steps
        return n > 0 and ((self.global_step + 1) % n == 0 or t.should_stop)

    def train_loss(self, loss: torch.Tensor, batch_size: int) -> torch.Tensor:
        """A training step's end: the divergence check, then `train/loss` on the steps Lightning
        writes (logs_this_step). Returns `loss`."""
        self.check_finite(loss)
        if self.logs_this_step():
            self.log("train/loss", loss, on_step=True, on_epoch=False, prog_bar=True, batch_size=batch_size)
        return loss

    def check_finite(self, loss: torch.Tensor) -> None:
        if not self.run_cfg.trainer.stop_on_divergence:
            return
        # a scalar loss: one read-back as a Python float (what `bool(isfinite)` costs, less the ops)
        finite = math.isfinite(loss.item()) if loss.numel() == 1 else bool(torch.isfinite(loss.detach()).all())
        if not finite:
            raise Diverged(self.global_step, float(loss.detach().float().mean()))

    # -- per-step costs of Lightning's hooks (the same numbers, less Python per step)
    def __setattr__(self, name: str, value) -> None:
        # Lightning sets `_current_fx_name` twice around every hook call (about 40 times a step);
        # a plain attribute, never a parameter, buffer or submodule: skip nn.Module's checks
        if name == "_current_fx_name":
            object.__setattr__(self, name, value)
        else:
            super().__setattr__(name, value)

    def transfer_batch_to_device(self, batch, device, dataloader_idx):
        # on the CPU every tensor is already there: Lightning's walk of the batch moves nothing
        if device.type == "cpu":
            return batch
        return super().transfer_batch_to_device(batch, device, dataloader_idx)

    # -- evaluation hooks
    def eval_start(self, split: str) -> None:
        """Before a validation or test epoch (reset split-level sums)."""

    def eval_step(self, batch, split: str) -> None:
        raise NotImplementedError

    def eval_end(self, split: str) -> None:
        """After a validation or test epoch (log split-level metrics)."""

    def on_validation_epoch_start(self):
        self.eval_start("val")

    def on_test_epoch_start(self):
        self.eval_start("test")

    def validation_step(self, batch, batch_idx):
        self.eval_step(batch, "val")

    def test_step(self, batch, batch_idx):
        self.eval_step(batch, "test")

    def on_validation_epoch_end(self):
        self.eval_end("val")

    def on_test_epoch_end(self):
        self.eval_end("test")

    # -- checkpoints
    def checkpoint_extras(self) -> dict:
        """Entries saved into every checkpoint beside the weights; default none."""
        return {}

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["rng_torch"] = torch.get_rng_state()
        if torch.cuda.is_available():
            checkpoint["rng_cuda"] = torch.cuda.get_rng_state_all()
        checkpoint.update(self.checkpoint_extras())

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        if "rng_torch" in checkpoint:
            torch.set_rng_state(checkpoint["rng_torch"])
        if "rng_cuda" in checkpoint and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(checkpoint["rng_cuda"])


def nats_to_bits(x: float) -> float:
    return x / math.log(2)
