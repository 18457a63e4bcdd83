"""W&B: a run started by `wandb agent` is the agent's run in the agent's sweep, and keeps its own
store and hash; offline runs are laid out as `wandb sync` expects. No server here: the agent is
played by hand, the way wandb/wandb_agent.py starts a sweep's command (its macros expanded by the
wandb library's own functions, the environment it sets), and the offline run files are read."""
import glob
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from wandb.sdk.launch.sweeps import utils as sweep_utils
from wandb.sdk.lib import config_util

from bench import config as C
from bench.store import Store
from wandb_records import config_and_history, records

ROOT = Path(__file__).resolve().parents[1]
WANDB = Path(sys.executable).with_name("wandb")
PARAMS = {"task": "adding", "task.T": 5, "task.eval_size": 16, "model.hidden_size": 8,
          "trainer.max_steps": 4, "trainer.val_every": 2, "seed": 3}


def _agent_command(sweep_file: Path, params: dict) -> list[str]:
    """The command `wandb agent` runs for one set of parameters: the sweep's `command` with its
    macros (`${args_no_hyphens}`, ...) replaced as the agent does (wandb_agent.py, _command_run)."""
    command = yaml.safe_load(sweep_file.read_text())["command"]
    args = sweep_utils.create_sweep_command_args({"args": {k: {"value": v} for k, v in params.items()}})
    out = []
    for c in sweep_utils.create_sweep_command(command):
        out += args[c[2:-1]] if c.startswith("${") and c.endswith("}") else [c]
    assert out[:2] == ["rnnbench", "train"], out
    return [sys.executable, "-m", "bench.cli", *out[1:]]    # `rnnbench` is this console script


def _the_run_file(run_dir: Path, run_id: str) -> Path:
    (path,) = glob.glob(str(run_dir / "wandb" / f"offline-run-*-{run_id}" / f"run-{run_id}.wandb"))
    return Path(path)


def test_run_under_wandb_agent_is_the_agents_run_with_our_store_and_hash(tmp_path):
    cmd = _agent_command(ROOT / "bench" / "sweeps" / "default.yaml", PARAMS)
    param_path = tmp_path / "wandb" / "sweep-swp123" / "config-agentrun7.yaml"
    param_path.parent.mkdir(parents=True)
    config_util.save_config_file_from_dict(str(param_path), {k: {"value": v} for k, v in PARAMS.items()})
    # the agent's command is a fresh process: it must not join the W&B service an earlier in-process
    # run of this pytest session started (WANDB_SERVICE), which would write the run's records itself
    env = {k: v for k, v in os.environ.items() if k != "WANDB_SERVICE"}
    env.update(PYTHONPATH=str(ROOT), WANDB_MODE="offline", WANDB_SWEEP_ID="swp123",
               WANDB_RUN_ID="agentrun7", WANDB_SWEEP_PARAM_PATH=str(param_path), WANDB_PROJECT="rnnbench-sweeps",
               OMP_NUM_THREADS="1")
    p = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr
    cfg = C.load(None, [f"{k}={v}" for k, v in PARAMS.items()])
    store = Store(tmp_path / "results")                   # the sweep's command names no store: ./results
    r = store.result(cfg.hash)
    assert r["status"] == "done" and r["hash"] == cfg.hash
    assert (r["wandb_id"], r["wandb_sweep_id"]) == ("agentrun7", "swp123")
    run = next(rec.run for rec in records(_the_run_file(store.run_dir(cfg.hash), "agentrun7"))
               if rec.WhichOneof("record_type") == "run")
    assert (run.run_id, run.sweep_id, run.project) == ("agentrun7", "swp123", "rnnbench-sweeps")
    # read back as `reports --from-wandb` does: the config the run trained, not the agent's locked
    # parameters (a preset name and dotted keys, which resolve to another T or not at all)
    from reports import wandb_io

    got = wandb_io._to_run(_ApiRun(_the_run_file(store.run_dir(cfg.hash), "agentrun7"), "agentrun7"))
    assert got.config["task"]["T"] == 5 and got.result["command"] == r["command"]
    assert got.result["baseline"] == r["baseline"]


def test_offline_runs_are_where_wandb_sync_finds_them(tmp_path):
    from bench.train import run

    cfg = C.load(None, [f"{k}={v}" for k, v in PARAMS.items()])
    r = run(cfg, tmp_path / "results", wandb_mode="offline")
    assert r["status"] == "done" and r["wandb_id"] == cfg.hash
    run_dir = Store(tmp_path / "results").run_dir(cfg.hash)
    run_file = _the_run_file(run_dir, cfg.hash)
    p = subprocess.run([str(WANDB), "sync", "--dry-run", str(tmp_path / "results" / "runs" / cfg.hash / "wandb")],
                       capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
                       env=dict(os.environ, WANDB_MODE="offline"))
    assert p.returncode == 0, p.stdout + p.stderr
    out = p.stdout + p.stderr
    assert "Would sync 1 run(s)" in out and run_file.name in out, out


def test_a_null_sweep_value_arrives_as_null_where_the_field_is_optional():
    """`wandb agent` writes a null sweep value as Python's `None` (`--key=None`, `key=None`): an
    optional field reads it as null, as `key=null`; a text field where "None" may be a real value
    (a label, a column) keeps the text, and a field that cannot be null still says what it allows."""
    nulls = {"optim.grad_clip": None, "trainer.max_epochs": None, "model.forget_bias": None,
             "trainer.monitor": None, "trainer.max_steps": 4}
    args = sweep_utils.create_sweep_command_args({"args": {k: {"value": v} for k, v in nulls.items()}})
    assert "optim.grad_clip=None" in args["args_no_hyphens"] and "--optim.grad_clip=None" in args["args"]
    spelled = C.load(None, ["task=copy", *(f"{k}={'null' if v is None else v}" for k, v in nulls.items())])
    for form in ("args_no_hyphens", "args"):
        cfg = C.load(None, ["task=copy", *args[form]])
        assert (cfg.optim.grad_clip, cfg.trainer.max_epochs, cfg.model.forget_bias, cfg.trainer.monitor) == (None,) * 4
        assert cfg.hash == spelled.hash
    text = C.load(None, ["task=sst2", "task.fallback_label=None", "task.embeddings=None", "task.data_dir=None"])
    assert (text.task.fallback_label, text.task.embeddings, text.task.data_dir) == ("None", None, None)
    for bad, message in (("task.T=None", "task.T: invalid value 'None'; allowed: int"),
                         ("model.cell=None", "model.cell: invalid value 'None'; allowed: rnn_tanh")):
        with pytest.raises(C.ConfigError, match=message):
            C.load(None, ["task=copy", bad])


class _ApiRun:
    """A finished run as `wandb.Api().runs` returns it, from an offline run file: its logged config
    (Lightning's `config` hyperparameter included) and its summary (the last value of each key)."""

    def __init__(self, path: Path, run_id: str):
        config, history = config_and_history(path)
        self.id, self.state, self.commit = run_id, "finished", None
        self.config = {k: json.loads(v) for k, v in config.items()}
        self.summary = {k: json.loads(v) for row in history for k, v in row.items()}


def test_a_run_read_from_wandb_has_the_baseline_its_stored_result_records(tmp_path, monkeypatch, capsys):
    """`--from-wandb`: primary, mode and baseline as bench.train records them (no model needed), so
    a loss that blew up without NaN is reported diverged as for a stored run; without the data a
    baseline needs, none."""
    from bench.train import run
    from reports import wandb_io
    from tasks.registry import task_class

    cfg = C.load(None, [f"{k}={v}" for k, v in PARAMS.items()])
    stored = run(cfg, tmp_path / "results", wandb_mode="offline")
    api_run = _ApiRun(_the_run_file(Store(tmp_path / "results").run_dir(cfg.hash), cfg.hash), cfg.hash)
    got = wandb_io._to_run(api_run)
    assert got.status == "done" and got.result["command"] == stored["command"]   # its config resolves
    assert {k: got.result.get(k) for k in ("primary", "mode", "baseline")} == \
        {k: stored[k] for k in ("primary", "mode", "baseline")} == \
        {"primary": "test/loss", "mode": "min", "baseline": task_class("adding")(cfg).baseline()}
    api_run.summary["test/loss"] = 1e4 * stored["baseline"]["test/loss"]
    assert wandb_io._to_run(api_run).status == "diverged"
    monkeypatch.setattr(wandb_io, "_TASKS", {})

    def no_data(self):
        raise FileNotFoundError("no local copy")

    monkeypatch.setattr(task_class("adding"), "baseline", no_data)
    assert "baseline" not in wandb_io._to_run(api_run).result
    # a task this code cannot build: the run is kept without the fields, and one line says why
    monkeypatch.setattr(wandb_io, "_TASKS", {})

    def cannot_build(self, cfg):
        raise RuntimeError("no such task here")

    monkeypatch.setattr(task_class("adding"), "__init__", cannot_build)
    capsys.readouterr()
    kept = wandb_io._to_run(api_run)
    assert kept.status == "done" and "primary" not in kept.result
    assert capsys.readouterr().out == (f"reports: W&B run {cfg.hash}: no primary / mode / baseline "
                                       "(RuntimeError: no such task here)\n")
