"""The newer task families resume exactly: a run that crashes between checkpoints and is retried
ends with the same numbers and the same per-step training losses as an uninterrupted one
(time series, pixel-by-pixel, one-to-many with teacher forcing < 1, per-sentence LM)."""
import pytest

from bench import config as C
from bench.store import Store
from bench.train import run

SMALL = ["model.hidden_size=16", "model.dropout=0.2", "trainer.val_every=9", "trainer.limit_val_batches=2"]


@pytest.mark.parametrize("overrides, crash_at", [
    (["task=sunspots", "task.window=16", "trainer.max_steps=40"], 17),              # 35 batches an epoch
    (["task=pdigits", "task.max_train=320", "trainer.max_steps=24", "trainer.test_on=best"], 14),  # 10 an epoch
    (["task=vec2seq", "task.teacher_forcing=0.5", "task.eval_size=64", "trainer.max_steps=24"], 17),
    (["task=ptb_sentences", "task.max_train=400", "task.max_eval=64", "model.embedding_size=8",
      "trainer.max_steps=30"], 22),                                                  # 20 batches an epoch
], ids=["timeseries", "pixels", "one_to_many", "sentence_lm"])
def test_crash_then_resume_equals_uninterrupted(tmp_path, crash_on_step, data_dir, overrides, crash_at):
    cfg = C.load(None, overrides + SMALL)
    clean = run(cfg, tmp_path / "clean", wandb_mode="disabled")
    assert clean["status"] == "done", clean["error"]
    crash_on_step(crash_at)
    crashed = run(cfg, tmp_path / "crashed", wandb_mode="disabled")
    assert crashed["status"] == "failed" and "node lost" in crashed["error"]
    crash_on_step(None)
    resumed = run(cfg, tmp_path / "crashed", wandb_mode="disabled", retry_failed=True)
    assert 0 < resumed["resumed_from_step"] < crash_at
    assert resumed["metrics"] == clean["metrics"] and resumed.get("tested") == clean.get("tested")
    steps = lambda root: [(r["step"], r["train/loss"]) for r in Store(root).metrics(cfg.hash) if "train/loss" in r]
    assert steps(tmp_path / "crashed") == steps(tmp_path / "clean")
