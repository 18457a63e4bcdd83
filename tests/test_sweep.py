"""Sweep files, the local executor: skip/resume, failure isolation, concurrent sweeps."""
import os
import subprocess
import sys
import textwrap

import pytest

from bench import config as C
from bench.config import ConfigError
from bench.store import Store
from bench.sweep import LocalExecutor, expand

TINY = """
  task.T: {value: 4}
  task.eval_size: {value: 64}
  model.hidden_size: {value: 8}
  trainer.max_steps: {value: 20}
  trainer.val_every: {value: 10}
"""


def sweep_file(tmp_path, body: str, name="s", tiny=False) -> str:
    path = tmp_path / f"{name}.yaml"
    path.write_text(textwrap.dedent(body) + (TINY if tiny else ""))
    return str(path)


def test_grid_expands_sections_dicts_and_nested_parameters(tmp_path):
    path = sweep_file(tmp_path, """
        name: grid
        method: grid
        command: [rnnbench, train, "${args_no_hyphens}"]
        metric: {name: test/loss, goal: minimize}
        parameters:
          task: {values: [copy, adding]}
          model:
            values:
              - {cell: lstm, forget_bias: 0.0}
              - {cell: gru}
          optim:
            parameters:
              lr: {values: [0.01, 0.001]}
          seed: {values: [0, 1]}
          task.T: {value: 12}
        """)
    name, cfgs = expand(path)
    assert name == "grid" and len(cfgs) == 2 * 2 * 2 * 2
    assert {(c.task.name, c.task.T) for c in cfgs} == {("copy", 12), ("adding", 12)}
    assert {(c.model.cell, c.model.forget_bias) for c in cfgs} == {("lstm", 0.0), ("gru", None)}
    assert {c.optim.lr for c in cfgs} == {0.01, 0.001} and {c.seed for c in cfgs} == {0, 1}
    assert len({c.hash for c in cfgs}) == len(cfgs)
    # the same run defined on the command line has the same identity
    one = C.load(None, ["task=adding", "task.T=12", "model.cell=gru", "optim.lr=0.01", "seed=1"])
    assert one.hash in {c.hash for c in cfgs}


def test_random_search_is_seeded_and_capped(tmp_path):
    path = sweep_file(tmp_path, """
        method: random
        run_cap: 5
        parameters:
          task: {value: adding}
          optim.lr: {distribution: log_uniform_values, min: 0.0001, max: 0.1}
          model.hidden_size: {distribution: int_uniform, min: 8, max: 64}
        """)
    _, a = expand(path)
    _, b = expand(path)
    assert [c.hash for c in a] == [c.hash for c in b] and len(a) == 5
    assert all(1e-4 <= c.optim.lr <= 0.1 and 8 <= c.model.hidden_size <= 64 for c in a)


@pytest.mark.parametrize("body, message", [
    ("method: bayes\nparameters: {task: {value: copy}}", "method: invalid value 'bayes'; allowed: grid, random"),
    ("parameters: {task: {value: copy}, optim.lr: {min: 0.1, max: 1}}", "parameters.optim.lr: grid search needs value or values"),
    ("method: random\nparameters: {task: {value: copy}}", "run_cap: random search needs an integer run_cap >= 1"),
    ("parameters: {task: {value: copy}, model.cell: {values: [lstm, nope]}}", "model.cell: invalid value 'nope'"),
    ("parameters: {task: copy}", "parameters.task: expected a mapping with value/values/distribution"),
])
def test_bad_sweep_files_give_one_line(tmp_path, body, message):
    with pytest.raises(ConfigError) as e:
        expand(sweep_file(tmp_path, body))
    assert message in str(e.value) and "\n" not in str(e.value)


def test_sweep_isolates_failures_and_divergence_then_skips_finished(tmp_path):
    path = sweep_file(tmp_path, """
        name: mixed
        parameters:
          task: {value: adding}
          model:
            values:
              - {cell: lstm}
              - {cell: gru}
              - {cell: rnn_relu}
          trainer.accelerator: {values: [cpu]}
        """, tiny=True)
    _, cfgs = expand(path)
    # one config diverges (huge lr, no clipping), one crashes (no GPU on this machine)
    bad = [C.load(None, ["task=adding", "task.T=4", "model.cell=rnn_relu", "optim.name=sgd", "optim.lr=1e6",
                         "optim.grad_clip=null", "trainer.max_steps=20", "trainer.val_every=10"]),
           C.load(None, ["task=adding", "task.T=4", "trainer.accelerator=gpu", "trainer.max_steps=20"])]
    store = Store(tmp_path / "results")
    states = LocalExecutor(store, "mixed", workers=2, progress=False, wandb_mode="disabled").run(cfgs + bad)
    assert [states[c.hash] for c in cfgs] == ["done"] * 3
    assert states[bad[0].hash] == "diverged" and store.result(bad[0].hash)["step"] < 20
    failed = store.result(bad[1].hash)
    assert failed["status"] == "failed" and "gpu" in failed["error"].lower()
    assert set(store.sweep_hashes("mixed")) == {c.hash for c in cfgs + bad}
    # running it again starts nothing: no new attempt appears
    before = {h: len(store.metric_files(h)) for h in states}
    LocalExecutor(store, "mixed", workers=2, progress=False, wandb_mode="disabled").run(cfgs + bad)
    assert {h: len(store.metric_files(h)) for h in states} == before


def test_two_sweeps_at_once_never_run_a_config_twice(tmp_path):
    path = sweep_file(tmp_path, """
        name: race
        parameters:
          task: {value: adding}
          model.cell: {values: [lstm, gru]}
          seed: {values: [0, 1, 2]}
        """, tiny=True)
    store = tmp_path / "results"
    cmd = [sys.executable, "-m", "bench.cli", "sweep", path, "--store", str(store), "--workers", "2",
           "--wandb", "disabled", "--no-report"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    procs = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=600)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    s = Store(store)
    _, cfgs = expand(path)
    assert all(s.status(c.hash) == "done" for c in cfgs)
    assert all(len(s.metric_files(c.hash)) == 1 for c in cfgs)  # one attempt each


def test_cli_sweep_dry_run_lists_runs(tmp_path, capsys):
    from bench.cli import main

    path = sweep_file(tmp_path, "parameters:\n  task: {value: copy}\n  model.cell: {values: [lstm, gru]}\n")
    assert main(["sweep", path, "--dry-run", "--store", str(tmp_path / "r")]) == 0
    out = capsys.readouterr().out
    assert "2 runs in sweep s" in out and out.count("pending") == 2


def test_cli_sweep_dry_run_shows_what_differs_between_runs_optim_included(tmp_path, capsys):
    """Runs that differ only in an optim field used to list as identical rows."""
    from bench.cli import main

    path = sweep_file(tmp_path, "parameters:\n  task: {value: copy}\n  optim.lr: {values: [0.01, 0.001]}\n"
                                "  seed: {values: [0, 1]}\n  trainer.max_steps: {value: 50}\n")
    assert main(["sweep", path, "--dry-run", "--store", str(tmp_path / "r")]) == 0
    rows = [line.split("  ")[-1] for line in capsys.readouterr().out.splitlines()[:5]]
    assert rows[:4] == ["seed=0 optim.lr=0.01", "seed=1 optim.lr=0.01", "seed=0 optim.lr=0.001", "seed=1 optim.lr=0.001"]
    assert rows[4] == "the same in every run of the sweep: task.name=copy trainer.max_steps=50"


@pytest.mark.parametrize("flag", ["--workers", "--threads"])
def test_cli_sweep_rejects_negative_counts_in_one_line(tmp_path, flag):
    path = sweep_file(tmp_path, "parameters:\n  task: {value: copy}\n")
    p = subprocess.run([sys.executable, "-m", "bench.cli", "sweep", path, flag, "-1", "--store",
                        str(tmp_path / "r")], capture_output=True, text=True)
    assert p.returncode == 2
    assert p.stderr.strip().splitlines()[-1].endswith(
        f"argument {flag}: invalid value '-1'; allowed: an integer >= 0 (0 = automatic)")
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("pack,line", [
    ("auto", "--pack auto: 3 runs in 1 packed group(s), 3 runs alone"),   # CPU: the LSTM seeds alone
    ("4", "--pack 4: 6 runs in 2 packed group(s), 0 runs alone")])        # asked for: the LSTM packs too
def test_cli_sweep_dry_run_pack_auto_on_cpu_packs_only_cells_with_a_packed_kernel(tmp_path, capsys, pack, line):
    from bench.cli import main

    path = sweep_file(tmp_path, "parameters:\n  task: {value: copy}\n  model.cell: {values: [lstm, gru]}\n"
                                "  seed: {values: [0, 1, 2]}\n")
    assert main(["sweep", path, "--dry-run", "--pack", pack, "--store", str(tmp_path / "r")]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1] == line


def test_cli_sweep_pack_auto_without_a_compiler_packs_nothing_on_cpu(tmp_path, capsys, monkeypatch):
    """No C++ compiler: the packed scans cannot be built, a pack would run member by member (~1x)."""
    from bench.cli import main

    monkeypatch.setenv("CXX", "no-such-compiler-rnnbench")
    path = sweep_file(tmp_path, "parameters:\n  task: {value: copy}\n  model.cell: {values: [lstm, gru]}\n"
                                "  seed: {values: [0, 1, 2]}\n")
    assert main(["sweep", path, "--dry-run", "--pack", "auto", "--store", str(tmp_path / "r")]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1] == "--pack auto: 0 runs in 0 packed group(s), 6 runs alone"


def test_cli_sweep_only_trains_the_picked_runs_and_lists_all(tmp_path, capsys):
    from bench.cli import main

    path = sweep_file(tmp_path, """
        name: part
        parameters:
          task: {values: [adding, copy]}
          model.cell: {value: gru}
          seed: {values: [0, 1]}
        """, tiny=True)
    store = tmp_path / "r"
    args = ["sweep", path, "--store", str(store), "--workers", "1", "--wandb", "disabled", "--no-report"]
    assert main(args + ["--only", "task.name=adding"]) == 0
    _, cfgs = expand(path)
    s = Store(store)
    assert {c.task.name: s.status(c.hash) for c in cfgs if c.seed == 0} == {"adding": "done", "copy": "pending"}
    assert [s.status(c.hash) for c in cfgs].count("done") == 2
    assert set(s.sweep_hashes("part")) == {c.hash for c in cfgs}   # the rest listed, pending
    capsys.readouterr()
    assert main(args + ["--dry-run", "--only", "task.name=copy", "--only", "seed=1"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert out[-1] == "1 runs in sweep part (--only; 4 in all)" and "seed=1" in out[0] and "copy" in out[0]
    assert main(args + ["--dry-run", "--only", "seed=[0,1]", "--only", "task.name=copy"]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1] == "2 runs in sweep part (--only; 4 in all)"


@pytest.mark.parametrize("item,message", [
    ("task.name=lm", "--only: no run of sweep part has task.name=lm; its values: adding, copy"),
    ("task.nme=adding", "--only: unknown field 'task.nme'; give a resolved config key, e.g. task.name"),
    ("task.name=[adding,lm]", "--only: no run of sweep part has task.name=lm; its values: adding, copy"),
    ("task.name=[]", "--only: task.name=[] picks no run; give a value or a list of values, e.g. task.name=[a,b]")])
def test_cli_sweep_only_bad_values_give_one_line(tmp_path, item, message):
    path = sweep_file(tmp_path, "name: part\nparameters:\n  task: {values: [adding, copy]}\n")
    p = subprocess.run([sys.executable, "-m", "bench.cli", "sweep", path, "--only", item, "--store",
                        str(tmp_path / "r")], capture_output=True, text=True)
    assert p.returncode == 2 and p.stderr.strip().splitlines()[-1] == f"rnnbench sweep: error: {message}"
    assert not (tmp_path / "r").exists()


SIX = "parameters:\n  task: {value: copy}\n  model.cell: {values: [lstm, gru]}\n  seed: {values: [0, 1, 2]}\n"


@pytest.mark.parametrize("args,gpus,where,line", [
    # SLURM gives each run a GPU: trainer.accelerator=auto runs train there, every cell packs
    (["--executor", "slurm", "--slurm", "gpus_per_run=1"], 0, "SLURM gpus_per_run=1: 6 runs train on GPU",
     "--pack auto: 6 runs in 2 packed group(s), 0 runs alone"),
    (["--executor", "slurm"], 4, "SLURM gpus_per_run=0: 0 runs train on GPU",       # no GPU asked for: CPU rule
     "--pack auto: 3 runs in 1 packed group(s), 3 runs alone"),
    (["--gpus-per-run", "all"], 2, "2 GPU(s) here, --gpus-per-run all (one unit at a time on every GPU): 6 runs",
     "--pack auto: 6 runs in 2 packed group(s), 0 runs alone"),                      # a run takes every GPU: GPU rule
    (["trainer.accelerator=cpu"], 2, "2 GPU(s) here: 0 runs train on GPU",             # runs pinned to CPU: CPU rule
     "--pack auto: 3 runs in 1 packed group(s), 3 runs alone")])
def test_cli_sweep_dry_run_pack_auto_follows_where_the_runs_train(tmp_path, capsys, monkeypatch, args, gpus, where, line):
    from bench import cli

    monkeypatch.setattr(cli, "_gpus", lambda: gpus)
    path = sweep_file(tmp_path, SIX)
    assert cli.main(["sweep", path, *args, "--dry-run", "--pack", "auto", "--store", str(tmp_path / "r")]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert out[-1] == line and out[-2].startswith("--pack auto: " + where), out[-2:]


def test_cli_sweep_gpus_per_run_on_slurm_is_one_line(tmp_path, capsys):
    from bench.cli import main

    path = sweep_file(tmp_path, SIX)
    assert main(["sweep", path, "--executor", "slurm", "--gpus-per-run", "all", "--dry-run", "--store", str(tmp_path)]) == 2
    assert capsys.readouterr().err.strip() == (
        "rnnbench sweep: error: --gpus-per-run: only with --executor local (on SLURM a run gets --slurm "
        "gpus_per_run=N GPUs a node, trainer.devices when 0); allowed: --executor local")


def test_cli_sweep_reports_with_the_code_it_started_with(tmp_path, capsys, monkeypatch):
    """A sweep runs for hours; if the checkout changes meanwhile (a merge), its closing report must
    still build from the code it started with instead of crashing after the last run."""
    import types

    from bench.cli import main

    path = sweep_file(tmp_path, """
        name: long
        parameters:
          task: {value: adding}
          model.cell: {value: gru}
        """, tiny=True)
    run = LocalExecutor.run

    def run_then_change_the_code(self, cfgs):
        states = run(self, cfgs)
        monkeypatch.setitem(sys.modules, "reports.report", types.ModuleType("reports.report"))  # no build_report
        return states

    monkeypatch.setattr(LocalExecutor, "run", run_then_change_the_code)
    store = tmp_path / "r"
    assert main(["sweep", path, "--store", str(store), "--workers", "1", "--wandb", "disabled"]) == 0
    assert (store / "reports" / "long" / "report.md").is_file()
