"""Checkpoint files a resume can trust: written in the run's own directory, fsync'ed, renamed.

Lightning's own save goes through fsspec's transaction, which writes a temp file in the system
temp dir and moves it: across filesystems that move is a copy, and a kill during it leaves a
partial `last.ckpt`. Here the temp file sits next to the target, so the rename is atomic on any
filesystem, and a kill leaves the previous checkpoint whole (plus a `.last.ckpt.*` temp file
that `clean_temp` removes on the next start).
"""
from __future__ import annotations

import contextlib
import io
import os
import pickle
import tempfile
import zipfile
from pathlib import Path
from typing import Any, Optional

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO


class Unreadable(Exception):
    """A checkpoint file that cannot be loaded (empty, truncated, not a torch zip, wrong content)."""

    def __init__(self, path, why: str):
        super().__init__(f"checkpoint unreadable: {path} ({why})")
        self.path, self.why = Path(path), why


def fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def save_atomic(obj, path) -> None:
    """torch.save to a temp file in the target's directory, fsync, rename over the target, fsync
    the directory: a reader (or a resume after SIGKILL) never sees half a checkpoint."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()  # serialized first: torch's zip writer hides a full disk (ENOSPC) from us
    torch.save(obj, buf)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(buf.getbuffer())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)


class AtomicCheckpointIO(TorchCheckpointIO):
    """torch.save to a temp file in the checkpoint's directory, fsync, rename over the target."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Optional[Any] = None) -> None:
        save_atomic(checkpoint, path)


def read_checkpoint(path) -> dict:
    """The checkpoint's contents (weights_only); Unreadable if it is damaged or is no checkpoint."""
    path = Path(path)
    try:
        if path.stat().st_size == 0:
            raise Unreadable(path, "empty file")
        if not zipfile.is_zipfile(path):
            raise Unreadable(path, "not a PyTorch checkpoint file")
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Unreadable:
        raise
    except pickle.UnpicklingError:
        raise Unreadable(path, "refused by weights_only loading: it holds objects other than tensors") from None
    except Exception as e:  # truncated zip, unpickling refused, bad records: all mean "don't trust it"
        raise Unreadable(path, f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:200]) from None
    if not isinstance(ckpt, dict) or "global_step" not in ckpt:
        raise Unreadable(path, "no global_step: not a training checkpoint")
    return ckpt


def read_step(path) -> int:
    return int(read_checkpoint(path)["global_step"])


def clean_temp(run_dir: Path) -> list[Path]:
    """Remove temp files that a killed writer left in a run directory (`.<name>.<random>`)."""
    gone = []
    for d in [run_dir, run_dir / "checkpoints", *(run_dir / "logs").glob("version_*")]:
        if not d.is_dir():
            continue
        for p in d.iterdir():
            if p.is_file() and p.name.startswith(".") and p.name != ".lock" and p.name.count(".") >= 2:
                with contextlib.suppress(OSError):
                    p.unlink()
                    gone.append(p)
    return gone


class FixedStateKey:
    """Mixin for a callback whose `state_key` (the key of its state in checkpoints) never changes:
    made once. Lightning formats every callback's key at every hook call, several times a step,
    and ModelCheckpoint's and EarlyStopping's are a repr of their settings. `key_class` (default:
    the class's own name) names the class in the key, so a subclass keeps its base's key."""

    key_class: Optional[str] = None

    @property
    def state_key(self) -> str:
        key = self.__dict__.get("_fixed_state_key")
        if key is None:
            key = super().state_key
            if self.key_class:
                key = self.key_class + key[len(type(self).__qualname__):]
            self.__dict__["_fixed_state_key"] = key
        return key


class RunCheckpoint(FixedStateKey, ModelCheckpoint):
    """ModelCheckpoint with its state key made once (the same key: checkpoints load either way)."""

    key_class = "ModelCheckpoint"


class EvalState(L.Callback):
    """The last validation metrics, carried in every checkpoint: a run resumed from its final
    checkpoint validates no more, and reports them as an uninterrupted run does."""

    def __init__(self):
        self.val: dict[str, float] = {}

    def on_save_checkpoint(self, trainer, pl_module, checkpoint) -> None:
        checkpoint["rnnbench"] = {"val": {k: float(v) for k, v in trainer.callback_metrics.items()
                                          if k.startswith("val/") and v.numel() == 1}}

    def on_load_checkpoint(self, trainer, pl_module, checkpoint) -> None:
        self.val = dict(checkpoint.get("rnnbench", {}).get("val", {}))


def finish_restored_fit(trainer) -> None:
    """A fit resumed from its final checkpoint ends at once, short of the bookkeeping that an
    uninterrupted fit does after that checkpoint (taken inside the last batch): the logger step
    moves past the last batch, and the epoch counts as completed. Do it, so that the test rows
    are logged at the same step and epoch. (Lightning keeps the logger step in a private field.)"""
    trainer.fit_loop.epoch_loop._batches_that_stepped = trainer.global_step
    epochs = trainer.fit_loop.epoch_progress
    if epochs.current.completed < epochs.current.ready:   # bounded by max_epochs, Lightning has done it
        epochs.increment_completed()


class SaveOnStop(L.Callback):
    """SIGTERM (preemption, `scontrol requeue`, the time limit, a stopped sweep) stops a fit at the
    next batch boundary (Lightning's flag). Save `last.ckpt` there first, as ModelCheckpoint's
    `every_n_train_steps` would, so that the resume repeats no step. When that batch is a
    validation step, or comes during a validation, the stop waits until the validation and its
    periodic checkpoint are done (Lightning would abort the validation, and a checkpoint taken
    before it resumes past it).
    One process only: under DDP the ranks stop at the batch start, as before (resume from the
    last validation). Best effort: a signal that lands between this hook and Lightning's check
    (the step's logging) stops without the save, and a validation that outlasts SLURM's KillWait
    is cut by SIGKILL; both resume from the checkpoint before."""

    def __init__(self):
        self.deferred = False

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        loop = trainer.fit_loop.epoch_loop
        last_epoch = trainer.max_epochs not in (None, -1) and trainer.current_epoch + 1 >= trainer.max_epochs
        if (not trainer.received_sigterm or trainer.world_size > 1 or 0 <= trainer.max_steps <= trainer.global_step
                or (last_epoch and loop.batch_progress.is_last_batch)):   # the fit's last batch: it ends anyway
            return
        if loop._should_check_val_fx(trainer.fit_loop._data_fetcher):
            trainer._signal_connector.received_sigterm, self.deferred = False, True
        else:   # where the periodic `last` checkpoint (the one without a monitor) writes
            last = next(c for c in trainer.checkpoint_callbacks if not c.monitor)
            trainer.save_checkpoint(last.format_checkpoint_name({}), weights_only=False)   # the full state, as `last`

    def on_validation_batch_end(self, trainer, *_) -> None:   # a stop during a validation: after it
        if trainer.received_sigterm and trainer.world_size == 1 and trainer.state.fn == "fit":
            trainer._signal_connector.received_sigterm, self.deferred = False, True

    def on_validation_end(self, trainer, pl_module) -> None:
        if self.deferred:   # Lightning stops after this validation's checkpoint (callbacks run first)
            trainer._signal_connector.received_sigterm, self.deferred = True, False


class PlateauOnRestart(L.Callback):
    """Lightning skips the ReduceLROnPlateau step at the first epoch end after a restart, taking
    the checkpoint for one saved after it; every checkpoint here is saved before it (at a
    validation or a batch end), so a resumed run would keep a higher lr than an uninterrupted one.
    Take that step, on the metric Lightning would use (or the last validation's, which EvalState
    restores: Lightning does not keep metrics in checkpoints). A checkpoint from the last batch of
    an epoch (SaveOnStop) resumes in the next epoch, Lightning running no end for the one it was
    in: take that epoch's step as the fit starts."""

    def on_train_start(self, trainer, pl_module) -> None:
        loop = trainer.fit_loop.epoch_loop
        done = loop.batch_progress.current
        if loop.restarting and done.completed == done.processed - 1 and done.processed >= trainer.num_training_batches:
            self._step(trainer)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if trainer.fit_loop.restarting and trainer.fit_loop.epoch_loop._num_ready_batches_reached():
            self._step(trainer)

    @staticmethod
    def _step(trainer) -> None:
        kept = next((c.val for c in trainer.callbacks if isinstance(c, EvalState)), {})
        for config in trainer.lr_scheduler_configs:
            if config.reduce_on_plateau and config.interval == "epoch" and (trainer.current_epoch + 1) % config.frequency == 0:
                value = trainer.callback_metrics.get(config.monitor, kept.get(config.monitor))
                if value is not None:
                    config.scheduler.step(float(value))
