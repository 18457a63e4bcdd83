"""Bad input of every kind: one line naming the field and what is allowed, a non-zero exit, and
nothing stored. (The kill and damaged-file tests are in test_faults.py.)"""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from bench.cli import main
from bench.store import Store
from test_faults import OV, QUICK, ROOT, tmpfs

def _evil_checkpoint(path: Path) -> None:
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))
    torch.save({"global_step": 1, "x": Evil()}, path)


SWEEPS = {
    "plist.yaml": "name: x\nparameters: [1, 2]\n",
    "ok.yaml": "parameters:\n  task: {value: adding}\n",
    "empty.yaml": "parameters:\n  task: {value: adding}\n  seed: {values: []}\n",
    "logu.yaml": "method: random\nrun_cap: 2\nparameters:\n  task: {value: adding}\n"
                 "  optim.lr: {distribution: log_uniform_values, min: 0, max: 1}\n",
    "escape.yaml": "name: ../../outside\nparameters:\n  task: {value: adding}\n",
    "slash.yaml": "name: a/b\nparameters:\n  task: {value: adding}\n",
}
CONFIGS = {
    "model42.yaml": b"task: adding\nmodel: 42\n",
    "dup.yaml": b"task: adding\noptim:\n  lr: 0.1\n  lr: 0.2\n",
    "latin1.yaml": b"task: adding\n# caf\xe9\n",
    "params.yaml": b"task: adding\nparameters: {}\n",
}
NAME_RULE = "allowed: letters, digits, '_', '.', '-' (no path separators, no '..')"
BAD = [
    (["train", "{d}/model42.yaml"], "rnnbench train: error: model: expected a mapping, got 42"),
    (["train", "task=adding", "optim=42"], "rnnbench train: error: optim: expected a mapping, got 42"),
    (["sweep", "{d}/plist.yaml", "--dry-run"],
     "rnnbench sweep: error: parameters: expected a mapping of key: {value|values|distribution}, got a list"),
    (["train", "task=adding", "--store", "{d}/afile"], "rnnbench train: error: --store {d}/afile: not a directory"),
    (["sweep", "{d}/ok.yaml", "--store", "{d}/afile"], "rnnbench sweep: error: --store {d}/afile: not a directory"),
    (["sample", "{d}/evil.ckpt"], "rnnbench sample: error: checkpoint unreadable: {d}/evil.ckpt (refused by "
     "weights_only loading: it holds objects other than tensors)"),
    (["sample", "{d}/cut.ckpt"], "rnnbench sample: error: checkpoint unreadable: {d}/cut.ckpt (not a PyTorch "
     "checkpoint file)"),
    (["sample", "{d}/empty.ckpt"], "rnnbench sample: error: checkpoint unreadable: {d}/empty.ckpt (empty file)"),
    (["sample", "{d}/model42.yaml"], "rnnbench sample: error: checkpoint unreadable: {d}/model42.yaml (not a "
     "PyTorch checkpoint file)"),
    (["train", "{d}/latin1.yaml"], "rnnbench train: error: config file {d}/latin1.yaml: not UTF-8 text (byte 0xe9 "
     "at offset 18)"),
    (["train", "{d}/dup.yaml"], "rnnbench train: error: config file {d}/dup.yaml line 4: duplicate key 'lr'; "
     "allowed: each key once per mapping"),
    (["train", "task=adding", "optim.lr=.inf"], "rnnbench train: error: optim.lr: invalid value inf; allowed: a "
     "finite number > 0"),
    (["train", "task=adding", "optim.lr=.nan"], "rnnbench train: error: optim.lr: invalid value nan; allowed: a "
     "finite number > 0"),
    (["train", "task=adding", "trainer.precision=16"], "rnnbench train: error: trainer.precision: invalid value "
     "16; allowed: 32-true, 16-mixed, bf16-mixed, 64-true"),
    (["train", "task=adding", "trainer.precision=fp8"], "rnnbench train: error: trainer.precision: invalid value "
     "'fp8'; allowed: 32-true, 16-mixed, bf16-mixed, 64-true"),
    (["sweep", "{d}/empty.yaml", "--dry-run"], "rnnbench sweep: error: parameters.seed.values: invalid value [];"
     " allowed: a non-empty list"),
    (["sweep", "{d}/logu.yaml", "--dry-run"], "rnnbench sweep: error: parameters.optim.lr.min: invalid value 0; "
     "allowed: a number > 0 (log_uniform_values)"),
    (["sweep", "{d}/escape.yaml", "--dry-run"], f"rnnbench sweep: error: name: invalid value '../../outside'; {NAME_RULE}"),
    (["sweep", "{d}/slash.yaml", "--dry-run"], f"rnnbench sweep: error: name: invalid value 'a/b'; {NAME_RULE}"),
    (["status", "../up", "--store", "{d}"], f"rnnbench status: error: sweep name: invalid value '../up'; {NAME_RULE}"),
    (["train", "task=adding", "model.num_layers=100000"], "rnnbench train: error: model.num_layers: invalid value "
     "100000; allowed: a number <= 1000"),
    (["train", "task=adding", "model.hidden_size=1000000000"], "rnnbench train: error: model.hidden_size: invalid "
     "value 1000000000; allowed: a number <= 65536"),
    (["train", "{d}/params.yaml"], "rnnbench train: error: parameters: unknown key; allowed: seed, task, model, "
     "optim, trainer"),
]


@pytest.fixture
def bad_dir(tmp_path) -> Path:
    for name, text in SWEEPS.items():
        (tmp_path / name).write_text(text)
    for name, data in CONFIGS.items():
        (tmp_path / name).write_bytes(data)
    (tmp_path / "afile").write_text("not a directory\n")
    _evil_checkpoint(tmp_path / "evil.ckpt")
    torch.save({"global_step": 1, "w": torch.zeros(1000)}, tmp_path / "cut.ckpt")
    (tmp_path / "cut.ckpt").write_bytes((tmp_path / "cut.ckpt").read_bytes()[:300])
    (tmp_path / "empty.ckpt").write_bytes(b"")
    return tmp_path


@pytest.mark.parametrize("argv, message", BAD, ids=[" ".join(a)[:40] for a, _ in BAD])
def test_bad_input_gives_one_line_and_nonzero_exit(bad_dir, capsys, monkeypatch, argv, message):
    monkeypatch.chdir(bad_dir)  # the default store, ./results, must not appear
    argv = [a.replace("{d}", str(bad_dir)) for a in argv]
    code = main(argv)
    out, err = capsys.readouterr()
    assert code != 0
    assert err.splitlines() == [message.replace("{d}", str(bad_dir))], err
    assert not list(bad_dir.glob("results")) and not (bad_dir.parent / "outside").exists()


def test_gpu_accelerator_on_a_cpu_host_is_refused_before_anything_is_stored(tmp_path, capsys):
    if torch.cuda.is_available():
        pytest.skip("this host has a GPU")
    code = main(["train", *QUICK, "trainer.accelerator=gpu", "--store", str(tmp_path / "s")])
    assert code == 2 and capsys.readouterr().err.splitlines() == [
        "rnnbench train: error: trainer.accelerator: invalid value 'gpu': this host has no GPU; allowed: cpu, auto"]
    assert not (tmp_path / "s").exists()


def test_a_model_too_big_for_the_host_is_refused_at_once(tmp_path, capsys):
    t0 = time.time()
    code = main(["train", "task=adding", "model.hidden_size=65536", "model.num_layers=1000", "--store", str(tmp_path)])
    err = capsys.readouterr().err.splitlines()
    assert code == 2 and len(err) == 1 and time.time() - t0 < 5
    assert err[0].startswith("rnnbench train: error: model.hidden_size=65536, model.num_layers=1000: about ")
    assert err[0].endswith("allowed: a smaller model") and not (tmp_path / "runs").exists()


def test_read_only_store_is_refused_in_one_line(tmp_path, capsys):
    with tmpfs(tmp_path / "ro", size="1m", ro=True) as ro:
        code = main(["train", *QUICK, "--store", str(ro)])
        assert code == 2 and capsys.readouterr().err.splitlines() == [
            f"rnnbench train: error: --store {ro}: not writable (Read-only file system)"]


def _ignore_sigint():
    signal.signal(signal.SIGINT, signal.SIG_IGN)   # as `cmd &` in a non-interactive shell (nohup) starts it


@pytest.mark.slow
@pytest.mark.parametrize("how", ["group SIGINT", "SIGTERM to the sweep", "SIGINT to a background sweep"])
def test_ctrl_c_stops_a_sweep_without_a_traceback(tmp_path, how):
    sweep = tmp_path / "s.yaml"
    sweep.write_text("name: s\nparameters:\n  task: {value: adding}\n  seed: {values: [0, 1, 2]}\n")
    proc = subprocess.Popen([sys.executable, "-m", "bench.cli", "sweep", str(sweep), *OV[1:],
                             "trainer.max_steps=100000", "--store", str(tmp_path / "st"), "--workers", "1",
                             "--threads", "1", "--wandb", "disabled"], cwd=ROOT, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, PYTHONPATH=str(ROOT)), start_new_session=True,
                            preexec_fn=_ignore_sigint if how == "SIGINT to a background sweep" else None)
    deadline = time.time() + 120
    while time.time() < deadline and not list((tmp_path / "st").glob("runs/*/checkpoints/last.ckpt")):
        time.sleep(0.2)
    if how == "group SIGINT":
        os.killpg(proc.pid, signal.SIGINT)  # what the terminal does: the whole foreground group
    else:   # the sweep process alone (`kill PID`, `kill -INT PID`): it stops its workers itself
        proc.send_signal(signal.SIGTERM if how == "SIGTERM to the sweep" else signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "Traceback" not in err, err
    assert err.strip().splitlines()[-1] == "rnnbench sweep: interrupted; the same command again resumes"
    h = next((tmp_path / "st").glob("runs/*/checkpoints/last.ckpt")).parent.parent.name
    deadline = time.time() + 60   # the stopped worker releases the run as it exits
    while Store(tmp_path / "st").status(h) == "running" and time.time() < deadline:
        time.sleep(0.2)
    assert Store(tmp_path / "st").status(h) == "interrupted"   # no worker left on it; resumable
