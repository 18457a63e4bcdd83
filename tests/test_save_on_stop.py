"""A SIGTERM (preemption, requeue, a stopped sweep) loses no step: the run saves its checkpoint at
the batch it stopped after (bench.checkpoints.SaveOnStop), and the resume from there ends with the
numbers and per-step training losses of an uninterrupted run, in every task family."""
import os
import signal

import lightning as L
import pytest
from lightning.pytorch.utilities.exceptions import SIGTERMException

import bench.train as T
from bench import config as C
from bench.checkpoints import read_step
from bench.store import Store
from bench.train import run

SYNTH = ["task=adding", "task.T=6", "task.fresh_data=false", "task.train_size=160", "task.batch_size=16",
         "model.dropout=0.2", "model.hidden_size=16", "trainer.max_steps=24", "task.eval_size=32"]
# SGD at lr 3 on SYNTH: the validation loss rises at epochs 3-4, so ReduceLROnPlateau halves the lr twice
PLATEAU = ["trainer.val_every=null", "trainer.max_epochs=6", "trainer.max_steps=1000", "optim.name=sgd", "optim.lr=3.0",
           "optim.plateau_factor=0.5", "optim.plateau_patience=0"]
SMALL = ["model.hidden_size=16", "model.dropout=0.2", "trainer.val_every=9", "trainer.limit_val_batches=2"]


class SigtermAt(L.Callback):
    """Sends this process a real SIGTERM as batch `step` starts (Lightning's handler takes it)."""

    def __init__(self, step):
        self.step = step

    def on_train_batch_start(self, trainer, *_):
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGTERM)


def _with(monkeypatch, callback):
    """bench.train.make_trainer adds `callback` to every trainer; returns the real one."""
    real = T.make_trainer

    def make(*a, **k):
        t = real(*a, **k)
        t.callbacks.insert(0, callback)
        return t
    monkeypatch.setattr(T, "make_trainer", make)
    return real


@pytest.mark.parametrize("overrides, stop_at", [
    (SYNTH + ["trainer.val_every=4"], 13),                            # mid-epoch (10 batches an epoch)
    (SYNTH + ["trainer.val_every=4"], 11),                            # a validation step: checkpoint after it
    (SYNTH + ["trainer.val_every=7"], 9),                             # the last batch of an epoch
    (SYNTH + ["trainer.val_every=null", "trainer.max_epochs=4", "trainer.max_steps=1000",
              "optim.lr_decay=0.5", "optim.lr_decay_start=1"], 15),
    (SYNTH + ["trainer.val_every=7", "trainer.max_epochs=3", "trainer.max_steps=1000", "optim.lr_decay=0.5",
              "optim.lr_decay_start=1"], 19),                        # an epoch's end, lr decayed by epoch
    (SYNTH + PLATEAU, 25),                                            # mid-epoch, before the lr is halved
    (SYNTH + PLATEAU + ["trainer.val_every=7"], 28),                  # the monitor from before the restart
    (SYNTH + PLATEAU + ["trainer.val_every=7"], 19),                  # stopped at an epoch's last batch
    (["task=tinyshakespeare", "task.max_train=4000", "task.bptt=20", "task.batch_size=8", "task.eval_batch_size=4",
      "model.hidden_size=16", "model.embedding_size=8", "model.dropout=0.1", "trainer.max_steps=30",
      "trainer.val_every=7", "trainer.limit_val_batches=2"], 17),    # the carried hidden state
    (["task=sst2", "task.max_train=400", "task.max_eval=64", "task.batch_size=16", "model.hidden_size=16",
      "model.embedding_size=16", "model.dropout=0.2", "trainer.max_steps=40", "trainer.val_every=9",
      "trainer.test_on=best"], 12),
    (["task=sunspots", "task.window=16", "trainer.max_steps=40"] + SMALL, 20),
    (["task=vec2seq", "task.teacher_forcing=0.5", "task.eval_size=64", "trainer.max_steps=24"] + SMALL, 14),
    (["task=ptb_sentences", "task.max_train=400", "task.max_eval=64", "model.embedding_size=8",
      "trainer.max_steps=30"] + SMALL, 19),
    (["task=copy", "task.T=5", "task.batch_size=8", "task.eval_size=16", "model.hidden_size=8",
      "trainer.val_every=10", "trainer.max_steps=30", "trainer.stop_when_solved=true"], 23),
], ids=["mid-epoch", "at-validation", "epoch-end", "max-epochs-lr-decay", "epoch-end-lr-decay", "plateau",
        "plateau-val-steps", "plateau-epoch-end", "lm", "sentiment-best", "timeseries", "one-to-many", "sentence-lm", "copy-fresh-data"])
def test_sigterm_saves_where_it_stopped_and_the_resume_equals_uninterrupted(tmp_path, monkeypatch, data_dir,
                                                                             overrides, stop_at):
    cfg = C.load(None, overrides)
    clean = run(cfg, tmp_path / "clean", wandb_mode="disabled")
    assert clean["status"] == "done", clean["error"]
    real = _with(monkeypatch, SigtermAt(stop_at))
    with pytest.raises(SIGTERMException):   # the executor's worker exits on it (bench.worker)
        run(cfg, tmp_path / "stopped", wandb_mode="disabled")
    store = Store(tmp_path / "stopped")
    assert store.status(cfg.hash) == "interrupted"
    assert read_step(store.checkpoint(cfg.hash)) == stop_at + 1          # no step lost
    monkeypatch.setattr(T, "make_trainer", real)
    resumed = run(cfg, tmp_path / "stopped", wandb_mode="disabled")
    assert resumed["resumed_from_step"] == stop_at + 1
    assert resumed["metrics"] == clean["metrics"] and resumed.get("tested") == clean.get("tested")
    assert resumed["step"] == clean["step"] and resumed.get("stopped") == clean.get("stopped")
    rows = lambda root: [(r["step"], r["train/loss"]) for r in Store(root).metrics(cfg.hash) if "train/loss" in r]  # noqa: E731
    assert rows(tmp_path / "stopped") == rows(tmp_path / "clean")
    val = lambda root: [(r["step"], r["val/loss"]) for r in Store(root).metrics(cfg.hash) if "val/loss" in r]  # noqa: E731
    assert val(tmp_path / "stopped") == val(tmp_path / "clean")


class SigtermInValidation(L.Callback):
    def on_validation_batch_start(self, trainer, *_):
        if trainer.global_step == 8 and not getattr(self, "sent", False):
            self.sent = True
            os.kill(os.getpid(), signal.SIGTERM)


def test_sigterm_during_a_validation_finishes_it_and_its_checkpoint_first(tmp_path, monkeypatch):
    cfg = C.load(None, SYNTH + ["trainer.val_every=4", "trainer.limit_val_batches=2", "task.eval_size=64"])
    clean = run(cfg, tmp_path / "clean", wandb_mode="disabled")
    real = _with(monkeypatch, SigtermInValidation())
    with pytest.raises(SIGTERMException):
        run(cfg, tmp_path / "stopped", wandb_mode="disabled")
    store = Store(tmp_path / "stopped")
    assert read_step(store.checkpoint(cfg.hash)) == 8
    assert [r["step"] for r in store.metrics(cfg.hash) if "val/loss" in r] == [3, 7]   # both validations whole
    monkeypatch.setattr(T, "make_trainer", real)
    resumed = run(cfg, tmp_path / "stopped", wandb_mode="disabled")
    assert resumed["resumed_from_step"] == 8 and resumed["metrics"] == clean["metrics"]


class CrashAtTest(L.Callback):
    def on_test_start(self, trainer, *_):
        raise RuntimeError("node lost")


@pytest.mark.parametrize("bound", [["trainer.max_epochs=4", "trainer.max_steps=1000"],
                                   ["trainer.max_epochs=4", "trainer.max_steps=40"], ["trainer.max_steps=40"]])
def test_a_run_resumed_from_its_final_checkpoint_logs_its_test_row_at_the_same_epoch(tmp_path, monkeypatch, bound):
    # bounded by max_epochs, Lightning counted the last epoch done on restoring; it was counted twice
    cfg = C.load(None, SYNTH + ["trainer.val_every=null"] + bound)
    clean = run(cfg, tmp_path / "clean", wandb_mode="disabled")
    real = _with(monkeypatch, CrashAtTest())
    assert run(cfg, tmp_path / "crashed", wandb_mode="disabled")["status"] == "failed"
    monkeypatch.setattr(T, "make_trainer", real)
    resumed = run(cfg, tmp_path / "crashed", wandb_mode="disabled", retry_failed=True)
    assert resumed["resumed_from_step"] == 40 and resumed["metrics"] == clean["metrics"]
    assert Store(tmp_path / "crashed").metrics(cfg.hash) == Store(tmp_path / "clean").metrics(cfg.hash)
