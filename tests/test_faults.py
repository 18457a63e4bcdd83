"""Fault injection on tiny runs: kills at chosen moments, damaged store files, a full disk, bad input.

Every kill test resumes the killed run and compares its store with an uninterrupted one, row by
row. The kills happen in a child `rnnbench train` that a small wrapper (FAULT_WRAPPER) arms to
SIGKILL itself at one moment; nothing in the code under test knows about it.
"""
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bench import config as C
from bench.cli import main
from bench.store import Store
from bench.train import run

ROOT = Path(__file__).resolve().parents[1]
# checkpoints at steps 110 and 220 (the final one); metric rows (written as they are logged) at
# 49, 99, 109 (val), 149, 199, so a kill at step 105 leaves rows and no checkpoint
OV = ["task=adding", "task.T=5", "task.eval_size=32", "model.hidden_size=8", "trainer.max_steps=220",
      "trainer.val_every=110"]
QUICK = ["task=adding", "task.T=4", "task.eval_size=16", "model.hidden_size=4", "trainer.max_steps=20",
         "trainer.val_every=10"]

FAULT_WRAPPER = r"""
import os, signal, sys
import lightning as L
import torch
import bench.train as T

fault = os.environ["FAULT"]
die = lambda: os.kill(os.getpid(), signal.SIGKILL)

class Kill(L.Callback):
    def on_train_batch_start(self, trainer, *_):
        if fault == "before_checkpoint" and trainer.global_step == 105:
            die()
        if fault == "after_checkpoint" and trainer.global_step == int(os.environ.get("FAULT_STEP", 150)):
            die()
    def on_test_batch_end(self, trainer, *_):
        if fault == "test":
            die()

real = T.make_trainer
def armed(*a, **k):
    t = real(*a, **k)
    t.callbacks.append(Kill())
    return t
T.make_trainer = armed

fsync, saves = os.fsync, []
def cut_fsync(fd):  # the second checkpoint (step 220): half its bytes on disk, then the kill
    name = os.readlink(f"/proc/self/fd/{fd}")
    if fault == "checkpoint_write" and "/.last.ckpt." in name:
        saves.append(name)
        if len(saves) == 2:
            os.ftruncate(fd, os.fstat(fd).st_size // 2)
            die()
    return fsync(fd)
os.fsync = cut_fsync

replace = os.replace
def kill_before_rename(src, dst, *a, **k):  # result.json written to its temp file, not renamed
    if fault == "result_write" and str(dst).endswith("result.json"):
        die()
    return replace(src, dst, *a, **k)
os.replace = kill_before_rename

from bench.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _child(fault: str, store: Path, overrides=OV, threads: int = 1, timeout: float = 240, step: int = 150) -> int:
    env = dict(os.environ, FAULT=fault, FAULT_STEP=str(step), OMP_NUM_THREADS=str(threads), PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, "-c", FAULT_WRAPPER, "train", *overrides, "--store", str(store),
                           "--wandb", "disabled"], env=env, cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)
    return proc.returncode


def temp_files(run_dir: Path) -> list[str]:
    return sorted(str(p.relative_to(run_dir)) for p in run_dir.rglob(".*") if p.is_file() and p.name != ".lock")


def assert_same_run(store: Path, clean: Path, h: str) -> None:
    """The resumed run's store equals the uninterrupted one: every metric row once, same result."""
    a, b = Store(store), Store(clean)
    rows_a, rows_b = a.metrics(h), b.metrics(h)
    assert len(rows_a) == len(rows_b), (rows_a, rows_b)
    for i, (ra, rb) in enumerate(zip(rows_a, rows_b)):
        assert ra == rb, f"row {i}: {ra} != {rb}"
    ra, rb = a.result(h), b.result(h)
    assert ra["status"] == rb["status"] == "done", ra["error"]
    for key in ("metrics", "step", "tested", "threads"):
        assert ra.get(key) == rb.get(key), key
    assert temp_files(a.run_dir(h)) == []


@pytest.fixture(scope="module")
def clean(tmp_path_factory) -> Path:
    """One uninterrupted run of OV with one thread: what every resumed run must end as."""
    root = tmp_path_factory.mktemp("clean")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        r = run(C.load(None, OV), root, wandb_mode="disabled")
    finally:
        torch.set_num_threads(before)
    assert r["status"] == "done" and r["threads"] == 1
    return root


@contextlib.contextmanager
def tmpfs(path: Path, size: str = "3m", ro: bool = False):
    path.mkdir(parents=True, exist_ok=True)
    opts = f"size={size}" + (",ro" if ro else "")
    got = subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(path)], capture_output=True, text=True)
    if got.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({got.stderr.strip() or 'not root'})")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


# ---------------------------------------------------------------- kills


@pytest.mark.parametrize("fault, resumed_from", [
    ("before_checkpoint", None),      # rows on disk, no checkpoint: the resume must drop them
    pytest.param("after_checkpoint", 110, marks=pytest.mark.slow),  # rows after the checkpoint: dropped, redone
    ("checkpoint_write", 110),        # half a temp file: the checkpoint at 110 stays whole
    ("test", 220),                    # after the final checkpoint: val metrics and test rows as clean
    ("result_write", 220),            # result.json in its temp file: cleaned up, run resumed
])
def test_sigkill_then_resume_equals_uninterrupted(tmp_path, clean, fault, resumed_from):
    h = C.load(None, OV).hash
    code = _child(fault, tmp_path)
    assert code == -signal.SIGKILL
    store = Store(tmp_path)
    assert store.result(h) is None and store.status(h) in ("interrupted", "pending")
    if fault == "before_checkpoint":
        assert store.checkpoint(h) is None and store.metrics(h), "the kill should leave rows and no checkpoint"
    if fault in ("checkpoint_write", "result_write"):
        assert temp_files(store.run_dir(h)), "the kill should leave a temp file"
    assert store.checkpoint_step(h) == resumed_from
    r = run(C.load(None, OV), tmp_path, wandb_mode="disabled")
    assert r["resumed_from_step"] == resumed_from
    assert_same_run(tmp_path, clean, h)


@pytest.mark.slow
def test_kill_during_checkpoint_write_on_another_filesystem(tmp_path, clean):
    """The store on a tmpfs, the system temp dir elsewhere: still no partial last.ckpt."""
    h = C.load(None, OV).hash
    with tmpfs(tmp_path / "mnt", size="64m") as mnt:
        assert os.stat(mnt).st_dev != os.stat(os.environ.get("TMPDIR", "/tmp")).st_dev
        assert _child("checkpoint_write", mnt) == -signal.SIGKILL
        assert Store(mnt).checkpoint_step(h) == 110
        run(C.load(None, OV), mnt, wandb_mode="disabled")
        assert_same_run(mnt, clean, h)


@pytest.mark.slow
def test_thread_count_of_the_first_attempt_is_kept(tmp_path):
    """Killed under 2 threads, resumed in a 1-thread process: it trains on with 2, as a clean 2-thread run."""
    ov = QUICK[:-2] + ["trainer.max_steps=30", "trainer.val_every=10"]
    h = C.load(None, ov).hash
    assert _child("after_checkpoint", tmp_path / "killed", ov, threads=2, step=15) == -signal.SIGKILL
    assert json.loads((tmp_path / "killed" / "runs" / h / "threads.json").read_text()) == {"threads": 2}
    assert Store(tmp_path / "killed").checkpoint_step(h) == 10
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        resumed = run(C.load(None, ov), tmp_path / "killed", wandb_mode="disabled")
        assert torch.get_num_threads() == 1  # the process's own count is given back
        torch.set_num_threads(2)
        clean2 = run(C.load(None, ov), tmp_path / "clean2", wandb_mode="disabled")
    finally:
        torch.set_num_threads(before)
    assert resumed["resumed_from_step"] == 10 and resumed["threads"] == clean2["threads"] == 2
    assert_same_run(tmp_path / "killed", tmp_path / "clean2", h)


# ---------------------------------------------------------------- damaged checkpoints


def _damage(path: Path, how: str) -> None:
    if how == "truncated":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 3])
    elif how == "empty":
        path.write_bytes(b"")
    else:
        path.write_text("garbage\n")


@pytest.mark.parametrize("how", ["truncated", "empty", "text"])
def test_damaged_checkpoint_is_recorded_then_the_run_starts_over(tmp_path, capsys, how):
    cfg = C.load(None, QUICK)
    clean = run(cfg, tmp_path / "clean", wandb_mode="disabled")
    root = tmp_path / "s"
    shutil.copytree(tmp_path / "clean", root)
    d = Store(root).run_dir(cfg.hash)
    (d / "result.json").unlink()
    _damage(d / "checkpoints" / "last.ckpt", how)
    code = main(["train", *QUICK, "--store", str(root), "--wandb", "disabled"])
    out = capsys.readouterr().out
    assert code == 1 and f"error: checkpoint unreadable: {d / 'checkpoints' / 'last.ckpt'} (" in out
    failed = Store(root).result(cfg.hash)
    assert failed["status"] == "failed" and failed["error"].startswith("checkpoint unreadable: ")
    assert (d / "checkpoints" / "last.ckpt.damaged").is_file() and Store(root).checkpoint(cfg.hash) is None
    again = run(cfg, root, wandb_mode="disabled", retry_failed=True)  # never stuck: starts over
    assert again["resumed_from_step"] is None and again["metrics"] == clean["metrics"]
    assert_same_run(root, tmp_path / "clean", cfg.hash)


@pytest.mark.slow
def test_damaged_checkpoint_in_a_sweep_does_not_stop_the_others(tmp_path):
    from bench.sweep import LocalExecutor

    cfgs = [C.load(None, QUICK + [f"seed={s}"]) for s in (0, 1)]
    store = Store(tmp_path)
    bad = store.run_dir(cfgs[0].hash) / "checkpoints"
    bad.mkdir(parents=True)
    (bad / "last.ckpt").write_bytes(b"PK\x03\x04 cut short")
    states = LocalExecutor(store, "faults", workers=1, threads=1, wandb_mode="disabled", progress=False).run(cfgs)
    assert states == {cfgs[0].hash: "failed", cfgs[1].hash: "done"}
    assert store.result(cfgs[0].hash)["error"].startswith(f"checkpoint unreadable: {bad / 'last.ckpt'} (")


# ---------------------------------------------------------------- damaged store files


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory) -> tuple[Path, list]:
    """A store with a finished sweep of two tiny runs, to damage copies of."""
    root = tmp_path_factory.mktemp("two")
    sweep = root / "two.yaml"
    sweep.write_text("name: two\nparameters:\n  task: {value: adding}\n  seed: {values: [0, 1]}\n")
    assert main(["sweep", str(sweep), *QUICK[1:], "--store", str(root / "store"), "--workers", "1",
                 "--threads", "1", "--wandb", "disabled", "--no-report"]) == 0
    return root, [C.load(None, QUICK + [f"seed={s}"]).hash for s in (0, 1)]


DAMAGE = {
    "result-truncated": ("result.json", lambda p: p.write_text(p.read_text()[:40])),
    "result-empty-object": ("result.json", lambda p: p.write_text("{}")),
    "result-list": ("result.json", lambda p: p.write_text("[]")),
    "result-not-utf8": ("result.json", lambda p: p.write_bytes(b'{"status": "\xff\xfe"}')),
    "config-garbled": ("config.yaml", lambda p: p.write_text("task: [unclosed\n")),
    "metrics-row-cut": ("logs/version_0/metrics.csv", lambda p: p.write_text(p.read_text()[:-9])),
}

DAMAGE_WHY = {"result-truncated": "not valid JSON", "result-empty-object": "no status",
              "result-list": "expected a JSON mapping, got list",
              "result-not-utf8": "not UTF-8 (byte 0xff at offset 12)", "config-garbled": "not valid YAML",
              "metrics-row-cut": "1 incomplete row(s)"}


@pytest.mark.parametrize("kind", list(DAMAGE))
def test_one_damaged_file_never_blocks_the_others(tmp_path, capsys, two_runs, kind):
    src, hashes = two_runs
    shutil.copytree(src, tmp_path / "c")
    root = tmp_path / "c" / "store"
    name, spoil = DAMAGE[kind]
    path = root / "runs" / hashes[0] / name
    spoil(path)
    capsys.readouterr()
    assert main(["status", "two", "--store", str(root)]) == 0
    out, err = capsys.readouterr()
    seen = [line for line in err.splitlines() if line.startswith("warning: ")]
    lines = {line.split()[0]: line for line in out.splitlines() if line[:12] in hashes}
    assert "done" in lines[hashes[1]] and "Traceback" not in err
    if kind != "metrics-row-cut":  # status reads no metrics; a cut row loses that row, not the run
        assert lines[hashes[0]].split()[1] == "damaged" and str(path) in lines[hashes[0]]
    for cmd in (["report", "two", "--out", str(tmp_path / "rep")], ["leaderboard", "two", "--out", str(tmp_path / "lb")]):
        assert main([*cmd, "--store", str(root)]) == 0, cmd
        err = capsys.readouterr().err
        now = [line for line in err.splitlines() if line.startswith("warning: ")]
        assert len(now) <= 1 and "Traceback" not in err
        seen += now
    assert seen and all(line == f"warning: damaged store file {path}: {DAMAGE_WHY[kind]}; skipped" for line in seen), seen


@pytest.mark.slow
def test_sweep_reruns_a_run_whose_result_is_damaged(tmp_path, capsys, two_runs):
    src, hashes = two_runs
    shutil.copytree(src, tmp_path / "c")
    root = tmp_path / "c" / "store"
    good = Store(root).result(hashes[0])
    (root / "runs" / hashes[0] / "result.json").write_text('{"status": "do')
    assert main(["sweep", str(tmp_path / "c" / "two.yaml"), *QUICK[1:], "--store", str(root), "--workers", "1",
                 "--threads", "1", "--wandb", "disabled", "--no-report"]) == 0
    again = Store(root).result(hashes[0])
    assert again["status"] == "done" and again["metrics"] == good["metrics"]
    assert (root / "runs" / hashes[0] / "result.json.damaged").is_file()


# ---------------------------------------------------------------- full disk


def test_full_disk_gives_one_line_and_leaves_finished_runs_intact(tmp_path, capsys):
    with tmpfs(tmp_path / "mnt", size="3m") as mnt:
        small = C.load(None, QUICK)
        assert run(small, mnt, wandb_mode="disabled")["status"] == "done"
        before = Store(mnt).result(small.hash)
        big = ["task=adding", "task.T=4", "task.eval_size=16", "model.hidden_size=384", "trainer.max_steps=4",
               "trainer.val_every=2"]  # its checkpoint (weights + Adam moments) is bigger than the disk
        capsys.readouterr()
        code = main(["train", *big, "--store", str(mnt), "--wandb", "disabled"])
        err = capsys.readouterr().err
        lines = [line for line in err.splitlines() if line.startswith("rnnbench")]
        assert code == 75 and len(lines) == 1, err
        assert lines[0].startswith(f"rnnbench train: store {mnt}: no space left on device"), lines
        assert "Traceback" not in err
        h = C.load(None, big).hash
        d = Store(mnt).run_dir(h)
        assert Store(mnt).checkpoint(h) is None and Store(mnt).result(h) is None and temp_files(d) == []
        assert Store(mnt).status(h) == "pending"  # resumable once there is space
        assert Store(mnt).result(small.hash) == before

