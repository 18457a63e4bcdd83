"""trainer.stop_when_solved: a run ends at the first validation that meets the task's solved
criterion (Lightning EarlyStopping on a threshold, never on a plateau), exactly so across resume."""
import json

import pytest

from bench import config as C
from bench.schema import ConfigError
from bench.store import Store
from bench.train import run

ADDING = ["task=adding", "task.T=10", "model.hidden_size=64", "optim.lr=0.01", "trainer.max_steps=3000",
          "trainer.val_every=50", "task.eval_size=256", "trainer.stop_when_solved=true"]


def val_losses(root, h):
    return [(r["step"], r["val/loss"]) for r in Store(root).metrics(h) if r.get("val/loss") not in (None, "")]


def test_adding_stops_at_the_first_validation_below_the_threshold(store):
    cfg = C.load(None, ADDING)
    r = run(cfg, store, wandb_mode="disabled")
    assert r["status"] == "done" and r["metrics"]["val/loss"] < 0.01   # solved is judged on test/
    step = r["stopped"]["step"]
    assert r["stopped"] == {"reason": "solved", "step": step} and r["step"] == step < 3000
    vals = val_losses(store, cfg.hash)
    assert [s for s, v in vals if float(v) < 0.01] == [vals[-1][0]], vals  # the first, and the last
    assert vals[-1][0] + 1 == step   # the CSV logs validation at global_step - 1
    assert json.loads((Store(store).run_dir(cfg.hash) / "result.json").read_text())["stopped"] == r["stopped"]


def test_without_the_flag_the_run_trains_all_its_steps(store):
    cfg = C.load(None, [o for o in ADDING if "stop_when_solved" not in o] + ["trainer.max_steps=300"])
    r = run(cfg, store, wandb_mode="disabled")
    assert r["step"] == 300 and "stopped" not in r


def test_crash_then_resume_stops_at_the_same_step(tmp_path, crash_on_step):
    cfg = C.load(None, ADDING)
    clean = run(cfg, tmp_path / "clean", wandb_mode="disabled")
    crash_on_step(130)
    crashed = run(cfg, tmp_path / "crashed", wandb_mode="disabled")
    assert crashed["status"] == "failed" and clean["stopped"]["step"] > 130
    crash_on_step(None)
    resumed = run(cfg, tmp_path / "crashed", wandb_mode="disabled", retry_failed=True)
    assert resumed["resumed_from_step"] == 100
    assert resumed["stopped"] == clean["stopped"] and resumed["metrics"] == clean["metrics"]
    assert val_losses(tmp_path / "crashed", cfg.hash) == val_losses(tmp_path / "clean", cfg.hash)


def test_resumed_from_the_solving_checkpoint_stops_at_once(store):
    cfg = C.load(None, ADDING)
    first = run(cfg, store, wandb_mode="disabled")
    (Store(store).run_dir(cfg.hash) / "result.json").unlink()   # lost after the last checkpoint
    again = run(cfg, store, wandb_mode="disabled")
    assert again["resumed_from_step"] == first["stopped"]["step"] == again["step"]
    assert again["stopped"] == first["stopped"] and again["metrics"] == first["metrics"]


def test_a_task_without_a_solved_criterion_is_a_config_error(store):
    cfg = C.load(None, ["task=tinyshakespeare", "trainer.stop_when_solved=true"])
    with pytest.raises(ConfigError, match=r"^trainer.stop_when_solved: task 'lm' has no solved "
                                          r"criterion; allowed: true only for copy, adding$"):
        run(cfg, store, wandb_mode="disabled")
    assert not (Store(store).root / "runs").exists() or not any((Store(store).root / "runs").iterdir())


def test_stop_when_solved_runs_are_packable():
    # packs stop solved members one by one (tests/test_packed.py: a member that solves stops as its
    # unpacked run); a tree task is still refused
    from bench.packed import packable
    assert packable(C.load(None, ADDING)) is None
    assert packable(C.load(None, ["task=sst_trees", "model.cell=recnn", "model.embedding_size=128"])) is not None
