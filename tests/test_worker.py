"""Persistent workers (bench.worker): one process runs config after config, each result equal to
a fresh `rnnbench train` process; a worker killed mid-run is recorded failed and replaced."""
import glob
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from bench import config as C
from bench.store import Store
from bench.sweep import LocalExecutor

TINY = ["task.T=4", "task.eval_size=64", "model.hidden_size=8", "trainer.max_steps=20", "trainer.val_every=10"]


def _pid(store: Store, h: str) -> int:
    """The process that ran (or runs) `h`: the claim lock holds '<host> <pid>'."""
    return int((store.run_dir(h) / ".lock").read_text().split()[1])


def _csv(store: Store, h: str) -> list[str]:
    return [p.read_text() for p in store.metric_files(h)]


def test_persistent_worker_runs_three_configs_each_equal_to_a_fresh_process(tmp_path):
    cfgs = [C.load(None, ["task=copy", "model.cell=lstm"] + TINY),
            C.load(None, ["task=adding", "model.cell=gru", "seed=3"] + TINY),
            C.load(None, ["task=copy", "model.cell=rnn_tanh", "model.dropout=0.2"] + TINY)]
    store = Store(tmp_path / "worker")
    ex = LocalExecutor(store, "w", workers=1, progress=False, wandb_mode="disabled")
    states = ex.run(cfgs)
    assert list(states.values()) == ["done"] * 3
    pids = {_pid(store, c.hash) for c in cfgs}
    assert len(pids) == 1 and pids != {os.getpid()}    # one worker process ran all three
    impl = store.result(cfgs[0].hash)["implementation"]
    assert impl == {"recurrence": "fused", "device": "cpu", "threads": ex.threads, "packed": None}
    fresh = Store(tmp_path / "fresh")
    for c in cfgs:
        subprocess.run([sys.executable, "-m", "bench.cli", "train", *C.to_overrides(c), "--store", str(fresh.root),
                        "--wandb", "disabled"], check=True, capture_output=True,
                       env=dict(os.environ, OMP_NUM_THREADS="1"))
        assert store.result(c.hash)["metrics"] == fresh.result(c.hash)["metrics"]
        assert _csv(store, c.hash) == _csv(fresh, c.hash)


def test_worker_killed_mid_run_is_recorded_failed_and_replaced(tmp_path):
    long = C.load(None, ["task=adding", "model.cell=lstm"] + TINY[:3] + ["trainer.max_steps=100000",
                                                                          "trainer.val_every=50"])
    short = C.load(None, ["task=adding", "model.cell=gru"] + TINY)
    store = Store(tmp_path / "results")
    ex = LocalExecutor(store, "crash", workers=1, progress=False, wandb_mode="disabled")
    out = {}
    thread = threading.Thread(target=lambda: out.update(ex.run([long, short])))
    thread.start()
    deadline = time.time() + 300
    while not store.checkpoint(long.hash):   # mid-run: it has trained and checkpointed
        assert time.time() < deadline and thread.is_alive()
        time.sleep(0.1)
    victim = _pid(store, long.hash)
    os.kill(victim, signal.SIGKILL)
    thread.join(timeout=300)
    assert not thread.is_alive()
    failed = store.result(long.hash)
    assert out[long.hash] == "failed" and failed["error"] == "process killed by signal 9"
    assert failed["step"] >= 50
    assert out[short.hash] == "done" and _pid(store, short.hash) not in (victim, os.getpid())


def test_worker_dead_before_its_first_unit_is_recorded_failed_and_replaced(tmp_path, monkeypatch):
    """A fresh worker killed at once (before reading its unit): sending it the unit hits a closed
    pipe; the run is recorded failed as for any worker death, and the sweep goes on in a new one."""
    import bench.sweep
    a, b = (C.load(None, ["task=adding", "model.cell=gru", f"seed={s}"] + TINY) for s in (0, 1))
    made = []

    class DiesAtOnce(bench.sweep.Worker):
        def __init__(self, *args, **kw):
            super().__init__(*args, **kw)
            made.append(self)
            if len(made) == 1:
                self.proc.kill()
                self.proc.wait()

    monkeypatch.setattr(bench.sweep, "Worker", DiesAtOnce)
    store = Store(tmp_path / "results")
    ex = LocalExecutor(store, "dies", workers=1, progress=False, wandb_mode="disabled")
    states = ex.run([a, b])
    first, second = (a, b) if store.result(a.hash)["status"] == "failed" else (b, a)
    assert store.result(first.hash)["error"] == "process killed by signal 9"
    assert states == {first.hash: "failed", second.hash: "done"} and len(made) == 2


def test_killed_run_resumes_under_its_wandb_id_when_the_parent_runs_a_wandb_service(tmp_path):
    """wandb hands its service to child processes (WANDB_SERVICE). A worker that shared the parent's
    service and was killed would leave its run open there, and the resumed run would lose tracking
    ("run ID ... is in use"); each worker starts its own service instead. In a fresh interpreter:
    this one's wandb state depends on the tests before it."""
    code = f"import test_worker; test_worker.killed_then_resumed_beside_a_service({str(tmp_path)!r})"
    p = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).parent, capture_output=True, text=True,
                       env=dict(os.environ, OMP_NUM_THREADS="1"), timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]


def killed_then_resumed_beside_a_service(root: str) -> None:
    import wandb

    wandb.init(mode="offline", dir=root, project="svc").finish()
    assert os.environ.get("WANDB_SERVICE")   # this process now runs a service its children would inherit
    cfg = C.load(None, ["task=adding", "model.cell=lstm"] + TINY[:3] + ["trainer.max_steps=2000",
                                                                         "trainer.val_every=50"])
    store = Store(Path(root) / "results")
    out = {}
    first = LocalExecutor(store, "svc", workers=1, progress=False, wandb_mode="offline")
    thread = threading.Thread(target=lambda: out.update(first.run([cfg])))
    thread.start()
    deadline = time.time() + 300
    while not store.checkpoint(cfg.hash):
        assert time.time() < deadline and thread.is_alive()
        time.sleep(0.1)
    os.kill(_pid(store, cfg.hash), signal.SIGKILL)
    thread.join(timeout=300)
    assert out[cfg.hash] == "failed"
    again = LocalExecutor(store, "svc", workers=1, progress=False, wandb_mode="offline", retry_failed=True)
    assert again.run([cfg]) == {cfg.hash: "done"}
    r = store.result(cfg.hash)
    assert r["resumed_from_step"] >= 50 and r["wandb_id"] == cfg.hash, r
    runs = glob.glob(str(store.run_dir(cfg.hash) / "wandb" / "offline-run-*" / f"run-{cfg.hash}.wandb"))
    assert len(runs) == 2   # the killed attempt and the resumed one, both under the run's id


def test_worker_loads_every_family_and_cell_and_the_commit_before_its_first_run():
    """Editing the checkout during a sweep once failed 40 runs: workers started before the edit
    imported tasks/lm.py (new) at their first LM run beside tasks/base.py (old)."""
    code = ("import sys\nfrom bench.worker import preload\nfrom bench.provenance import git_commit\n"
            "from models.registry import CELLS, TREE_CELLS\nfrom tasks.registry import TASKS\n"
            "before = {v.split(':')[0] for v in TASKS.values()} - set(sys.modules)\n"
            "preload()\n"
            "mods = [v.split(':')[0] for v in TASKS.values()] + [s.path.split(':')[0] for s in [*CELLS.values(), *TREE_CELLS.values()]]\n"
            "print(bool(before), [m for m in mods if m not in sys.modules], git_commit.cache_info().currsize)\n")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                       cwd=Path(__file__).resolve().parents[1])
    assert p.returncode == 0, p.stderr
    assert p.stdout.split() == ["True", "[]", "1"]
