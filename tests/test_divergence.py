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


def test_the_bound_takes_the_validation_baseline_where_the_task_has_one():
    from bench.divergence import at_validation

    cfg = C.load(None, ["task=copy", "trainer.divergence_factor=1.5"])
    test_only = {"primary": "test/ppl", "mode": "min", "baseline": {"test/ppl": 3.0}}
    with_val = {**test_only, "val_baseline": {"val/ppl": 250.0}}
    assert at_validation(cfg, test_only, {"val/ppl": 6.0}) == "val/ppl 6 > 1.5 x baseline 3"
    assert at_validation(cfg, with_val, {"val/ppl": 6.0}) is None
    assert at_validation(cfg, with_val, {"val/ppl": 400.0}) == "val/ppl 400 > 1.5 x validation baseline 250"


def _lm(tmp_path, *extra):
    (tmp_path / "tr.txt").write_text("a b c\nb c a\n" * 40)
    (tmp_path / "va.txt").write_text("d e f\nf e d\n" * 5)      # unseen words: the unigram baseline is far worse
    (tmp_path / "te.txt").write_text("a b c\n" * 10)
    return C.load(None, ["task.name=lm", "task.tokenizer=whitespace", f"task.data_dir={tmp_path}",
                         "task.data_files={train: tr.txt, validation: va.txt, test: te.txt}", "task.batch_size=4",
                         "task.eval_batch_size=2", "task.bptt=5", "model.hidden_size=8", "model.embedding_size=4",
                         "trainer.val_every=5", "trainer.max_steps=10", *extra])


def test_lm_and_timeseries_validation_baselines_are_the_validation_splits(tmp_path):
    from tasks.lm import LMTask, unigram_scores

    task = LMTask(_lm(tmp_path))
    dm = task.datamodule()
    dm.setup()
    s = unigram_scores(dm.ids["train"], dm.ids["validation"], dm.vocab.itos, "word")
    assert task.val_baseline() == {f"val/{k}": v for k, v in s.items()}
    assert task.val_baseline()["val/ppl"] > 20 * task.baseline()["test/ppl"]
    from test_timeseries import make

    _, ts, tdm = make(tmp_path, [float((i * 7) % 11 + i) for i in range(50)], "task.window=3", "task.horizon=2",
                      "task.season=4", "task.val_fraction=0.2", "task.test_fraction=0.2")
    y = tdm.targets("validation")
    best = min(float(((p - y) ** 2).mean()) for p in tdm.baselines("validation").values())
    assert ts.val_baseline()["val/mse"] == pytest.approx(best) != ts.baseline()["test/mse"]


def test_a_validation_loss_under_its_own_baseline_is_not_diverged(tmp_path):
    """Validation text unlike the test text: the untrained model's val/ppl (~7) is beyond 1.5 x the
    test baseline (~3) but far under 1.5 x the validation one; the run trains to its end."""
    r = run(_lm(tmp_path, "trainer.divergence_factor=1.5"), tmp_path / "r", wandb_mode="disabled")
    assert r["status"] == "done" and r["step"] == 10, r.get("error")
    assert r["val_baseline"]["val/ppl"] > 100 and "val_baseline" not in run(C.load(None, TINY), tmp_path / "c",
                                                                             wandb_mode="disabled")


def test_a_validation_loss_that_is_not_finite_ends_the_run():
    """paper_adding's IRNN at T = 400: training loss 5e35 (finite), validation loss inf; the bound
    only looked at finite losses, so both members trained on to step 10,000 at inf."""
    from bench.divergence import at_validation

    cfg = C.load(None, ["task=adding", "task.T=400"])
    result = {"primary": "test/loss", "mode": "min", "baseline": {"test/loss": 0.1577}}
    assert at_validation(cfg, result, {"val/loss": float("inf")}) == "val/loss became inf"
    assert at_validation(cfg, result, {"val/loss": float("nan")}) == "val/loss became nan"
    assert at_validation(cfg, result, {"val/loss": 0.2}) is None
    off = C.load(None, ["task=adding", "task.T=400", "trainer.stop_on_divergence=false"])
    assert at_validation(off, result, {"val/loss": float("inf")}) is None
