"""Preemption races of a multi-run array task (slurm/array_task.py), with real signals and a real
worker process, no cluster needed: a SIGTERM that reaches the worker before its handler is installed
is a stop (the run resumes), not a failure; one that reaches the task process while it starts a
worker stops the task before the run trains, and the requeue it asked for still happens."""
from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from bench.store import Store, write_json
from bench.worker import Worker
from slurm import array_task, job
from slurm.array_task import TaskJob
from slurm.job import RunJob
from test_slurm_tasks import _cfgs


@pytest.fixture
def own_handlers():
    saved = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2)}
    yield
    for s, h in saved.items():
        signal.signal(s, h)


def _job(store: Store, units: list, **kw) -> TaskJob:
    return TaskJob([[c.to_dict() for c in u] for u in units], str(store.root), "t", "disabled",
                   hashes=[[c.hash for c in u] for u in units], **kw)


def test_sigterm_before_the_worker_handler_is_a_stop(tmp_path, monkeypatch, own_handlers):
    """SLURM signals every process of the job: the worker may get SIGTERM while it still imports
    torch (default action: killed by signal 15). Its run is left resumable, the task stops."""
    a, b = _cfgs(0, 1)
    store = Store(tmp_path / "results")
    real = TaskJob._worker

    def killed_at_start(self):
        w = real(self)
        w.proc.send_signal(signal.SIGTERM)   # before the interpreter even runs its first line
        return w

    monkeypatch.setattr(TaskJob, "_worker", killed_at_start)
    with pytest.raises(SystemExit) as e:
        _job(store, [[a], [b]])()
    assert e.value.code == 1
    assert store.result(a.hash) is None and store.status(a.hash) == "pending"   # not recorded failed
    assert store.result(b.hash) is None                                         # nothing more started


def test_sigusr1_while_the_worker_starts_requeues_before_the_run(tmp_path, monkeypatch, own_handlers):
    """The warning signal reaching the task process after its between-units check, while it
    starts the worker (before the worker is known to its handler): no run trains, and the task
    requeues itself at once rather than after the run (or never, killed at the time limit)."""
    a, = _cfgs(0)
    store = Store(tmp_path / "results")
    real, requeued = TaskJob._worker, []

    def signalled_while_starting(self):
        os.kill(os.getpid(), signal.SIGUSR1)   # handled here, before the worker exists
        return real(self)

    monkeypatch.setattr(TaskJob, "_worker", signalled_while_starting)
    monkeypatch.setattr(array_task.TaskPreemption, "requeue_self", lambda self: requeued.append(1) or True)
    monkeypatch.setenv("SLURM_RESTART_COUNT", "0")
    with pytest.raises(SystemExit):
        _job(store, [[a]], max_requeues=1, step_delay_s=0.5)()
    assert requeued == [1]
    assert store.result(a.hash) is None and store.checkpoint_step(a.hash) is None   # the run never trained


def _stub_workers(monkeypatch, how: str) -> None:
    """The task's workers run tests/slurm_stub_worker.py: each run fails, stopped `how`."""
    monkeypatch.setenv("RNNBENCH_STUB", how)
    paths = [str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")]
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in paths if p))   # no empty entry: that is the cwd
    monkeypatch.setattr(TaskJob, "_worker", lambda self: Worker(self.store_root, self.sweep, self.wandb_mode,
                                                                self.project, dict(os.environ), "slurm_stub_worker"))


@pytest.mark.parametrize("how", ["exit", "fit", "lightning"])
def test_worker_stopped_alone_drops_the_failure_the_stop_caused(tmp_path, monkeypatch, own_handlers, how):
    """SIGTERM reaching the worker only (not the task process), then its run fails of it: outside
    fit the worker exits 143, inside fit it answers `failed`, or Lightning's SIGTERMException (exit
    code 0) ends it, which the worker turns into 143. Either way the run is left resumable
    and the task stops (exit 1) before its next run, as when the task process gets the signal."""
    a, b = _cfgs(0, 1)
    store = Store(tmp_path / "results")
    _stub_workers(monkeypatch, how)
    with pytest.raises(SystemExit) as e:
        _job(store, [[a], [b]])()
    assert e.value.code == 1
    assert store.result(a.hash) is None and store.status(a.hash) == "pending"
    assert store.result(b.hash) is None


def test_task_signal_after_a_unit_answered_keeps_its_failure(tmp_path, monkeypatch, own_handlers):
    """The task process gets SIGTERM after its unit answered `failed` (no stop then): a genuine
    failure, kept; the task stops before its next run."""
    a, b = _cfgs(0, 1)
    store = Store(tmp_path / "results")
    _stub_workers(monkeypatch, "none")
    real = TaskJob._run

    def signalled_after(self, *args):
        got = real(self, *args)
        os.kill(os.getpid(), signal.SIGTERM)
        return got

    monkeypatch.setattr(TaskJob, "_run", signalled_after)
    with pytest.raises(SystemExit) as e:
        _job(store, [[a], [b]])()
    assert e.value.code == 1
    assert store.result(a.hash)["error"] == "CommError: Connection lost" and store.result(b.hash) is None


def _signalled_run(status: str, calls: list):
    """bench.train.run stand-in: records `status` for the run as run() does, then SIGTERM reaches the
    job as run() returns (e.g. while W&B finishes), where no Trainer handler defers it."""
    def run(cfg, store_root, **kw):
        calls.append(cfg.hash)
        write_json(Store(store_root).run_dir(cfg.hash) / "result.json", {"hash": cfg.hash, "status": status})
        os.kill(os.getpid(), signal.SIGTERM)
        return {"hash": cfg.hash, "status": status}
    return run


def test_sigterm_as_the_run_returns_failed_drops_the_result(tmp_path, monkeypatch, own_handlers):
    """The run failed only because the job was being shut down: its result is dropped (the
    requeued job resumes it), though the signal cut run() short before the job saw its result."""
    a, = _cfgs(0)
    store, calls = Store(tmp_path / "results"), []
    monkeypatch.setattr(job, "run", _signalled_run("failed", calls))
    with pytest.raises(SystemExit) as e:
        RunJob(a.to_dict(), str(store.root), "t", "disabled", hash=a.hash)()
    assert e.value.code == 1 and calls == [a.hash]
    assert store.result(a.hash) is None and store.status(a.hash) == "pending"


def test_sigterm_as_the_run_returns_done_keeps_the_result(tmp_path, monkeypatch, own_handlers):
    a, = _cfgs(0)
    store, calls = Store(tmp_path / "results"), []
    monkeypatch.setattr(job, "run", _signalled_run("done", calls))
    got = RunJob(a.to_dict(), str(store.root), "t", "disabled", hash=a.hash)()
    assert got["status"] == "done" and store.status(a.hash) == "done"


class _LateSignal(job.Preemption):
    """SIGTERM reaches the job just after the stop flag is set, i.e. after run() returned."""

    @property
    def stopping(self):
        return self.__dict__.get("_stopping", False)

    @stopping.setter
    def stopping(self, value):
        self.__dict__["_stopping"] = value
        if value and self.terminated is None:
            os.kill(os.getpid(), signal.SIGTERM)


@pytest.mark.parametrize("stored", [True, False], ids=["old", "new"])
def test_sigterm_after_the_run_returned_keeps_its_failure(tmp_path, monkeypatch, own_handlers, stored):
    """A failure run() reported before the signal came (an old stored one, or one this attempt
    recorded) is the config's own: kept failed, returned, not retrained after a requeue."""
    a, = _cfgs(0)
    store = Store(tmp_path / "results")
    failed = {"hash": a.hash, "status": "failed", "error": "RuntimeError: genuine"}
    if stored:
        write_json(store.run_dir(a.hash) / "result.json", failed)

    def run(cfg, store_root, **kw):
        if stored:
            return {**Store(store_root).result(cfg.hash), "stored": True}
        write_json(Store(store_root).run_dir(cfg.hash) / "result.json", failed)
        return dict(failed)

    monkeypatch.setattr(job, "run", run)
    monkeypatch.setattr(job, "Preemption", _LateSignal)
    got = RunJob(a.to_dict(), str(store.root), "t", "disabled", hash=a.hash)()
    assert got["status"] == "failed" and store.result(a.hash)["error"] == "RuntimeError: genuine"


def test_sigterm_outside_fit_stops_the_job_at_once(tmp_path, monkeypatch, own_handlers):
    """No Trainer running (data loading, test, W&B finishing): the job stops at once, exit 1."""
    a, = _cfgs(0)
    after = []

    def run(cfg, store_root, **kw):
        os.kill(os.getpid(), signal.SIGTERM)
        after.append(cfg.hash)
        return {"hash": cfg.hash, "status": "done"}

    monkeypatch.setattr(job, "run", run)
    with pytest.raises(SystemExit) as e:
        RunJob(a.to_dict(), str(tmp_path / "results"), "t", "disabled", hash=a.hash)()
    assert e.value.code == 1 and after == []


def test_worker_sigterm_outside_fit_exits_at_once(own_handlers):
    array_task.WorkerSignals().install()
    with pytest.raises(SystemExit) as e:
        os.kill(os.getpid(), signal.SIGTERM)
    assert e.value.code == array_task.STOPPED_CODE
