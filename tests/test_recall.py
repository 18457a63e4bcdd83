"""reports/recall.py: per-position recall of a stored copy run, from its checkpoint."""
import json

import pytest

from bench import config as C
from bench.store import Store
from bench.train import run
from reports import recall
from reports.doc import Doc

TINY = ["task=copy", "task.T=5", "task.batch_size=4", "task.eval_size=12", "model.hidden_size=8",
        "trainer.val_every=10", "trainer.max_steps=20", "model.cell=gru", "optim.lr=0.01"]


def test_recall_of_a_stored_run_adds_up_to_its_recorded_test_loss_and_renders(tmp_path):
    cfgs = [C.load(None, TINY + [f"seed={s}"]) for s in (0, 1)]
    results = [run(c, tmp_path, sweep="s", wandb_mode="disabled") for c in cfgs]
    rows = recall.measure(tmp_path, "s")
    assert [r["hash"] for r in rows] == [c.hash for c in cfgs]
    for r, res in zip(rows, results):
        assert len(r["recall_ce"]) == len(r["recall_acc"]) == 10 and all(0 <= a <= 1 for a in r["recall_acc"])
        # the whole sequence's loss from the parts equals the run's own test/loss: the weights and data are its own
        assert r["test_loss_here"] == pytest.approx(res["metrics"]["test/loss"], abs=2e-5)
    out = tmp_path / "recall.json"
    assert recall.main(["--store", str(tmp_path), "--sweep", "s", "--out", str(out)]) == 0
    data = json.loads(out.read_text())
    assert data["runs"] == json.loads(json.dumps(rows)) and data["command"].startswith("python -m reports.recall")
    doc = Doc()
    recall.render(doc, data, {cfgs[0].hash}, ["a reading"])     # only the runs the report has
    text = doc.markdown()
    assert "| gru | 1 |" in text and text.rstrip().endswith("a reading")


def test_recall_of_a_non_copy_run_is_a_one_line_error(tmp_path):
    cfg = C.load(None, ["task=adding", "task.T=5", "task.batch_size=4", "task.eval_size=4", "model.hidden_size=4",
                        "trainer.val_every=5", "trainer.max_steps=5"])
    run(cfg, tmp_path, wandb_mode="disabled")
    with pytest.raises(ValueError, match=r"last.ckpt: a 'adding' run; allowed: copy runs$"):
        recall.recall(Store(tmp_path).checkpoint(cfg.hash))
