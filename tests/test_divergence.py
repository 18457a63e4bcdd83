"""trainer.divergence_factor (bench/divergence.py): a finite validation loss beyond that multiple of
the task's baseline ends the run as diverged there, alone and packed alike; reports.collect applies
the bound to runs recorded done before."""
import pytest

from bench import config as C
from bench.cli import main as cli
from bench.packed import run_group
from bench.store import Store
from bench.train import run

TINY = ["task=copy", "task.T=5", "task.batch_size=4", "task.eval_size=10", "model.hidden_size=8",
        "trainer.val_every=10", "trainer.max_steps=30", "trainer.precision=64-true", "model.cell=rnn_tanh"]


def test_an_exploded_validation_loss_ends_the_run_alone_and_packed_and_the_others_go_on(tmp_path):
    # copy at T=5: baseline 10 ln 8 / 25 = 0.832; an untrained model's loss (~2.2 nats) is beyond
    # 1.01 x that, so the first validation (step 10) stops the member asking for factor 1.01
    cfgs = [C.load(None, TINY + ["seed=0", "trainer.divergence_factor=1.01"]), C.load(None, TINY + ["seed=1"])]
    alone = [run(c, tmp_path / "alone", wandb_mode="disabled") for c in cfgs]
    packed = run_group(cfgs, tmp_path / "packed", wandb_mode="disabled")
    for a, p in zip(alone, packed):
        assert (a["status"], a["step"], a["error"]) == (p["status"], p["step"], p["error"])
    assert alone[0]["status"] == "diverged" and alone[0]["step"] == 10 and alone[0]["metrics"] == {}
    assert alone[0]["error"].startswith("val/loss 2.") and alone[0]["error"].endswith(" > 1.01 x baseline 0.8318 at step 10")
    assert alone[1]["status"] == "done" and alone[1]["step"] == 30 and packed[1]["step"] == 30
    rows = Store(tmp_path / "alone").metrics(cfgs[0].hash)
    assert max(r["step"] for r in rows) < 10          # nothing trained past the validation that stopped it
    off = [C.load(None, TINY + ["seed=0", "trainer.divergence_factor=null"]),
           C.load(None, TINY + ["seed=0", "trainer.divergence_factor=1.01", "trainer.stop_on_divergence=false"])]
    assert [run(c, tmp_path / "off", wandb_mode="disabled")["status"] for c in off] == ["done", "done"]


def test_the_default_factor_keeps_every_stored_hash():
    assert C.load(None, ["task=copy", "trainer.divergence_factor=1000"]).hash == C.load(None, ["task=copy"]).hash


@pytest.mark.parametrize("value", ["1", "0.5"])
def test_bad_divergence_factor_is_a_one_line_error(tmp_path, capsys, value):
    assert cli(["train", "task=copy", f"trainer.divergence_factor={value}", "--store", str(tmp_path)]) != 0
    assert capsys.readouterr().err.strip().splitlines() == [
        f"rnnbench train: error: trainer.divergence_factor: invalid value {float(value)}; allowed: a number > 1"]
