"""One SLURM array task that runs several runs (`rnnbench sweep FILE --executor slurm --runs-per-task N`).

    TaskJob(units, store_root, sweep, ...)()          the callable submitit pickles for such a task
    python -m slurm.array_task --reply-fd N --store DIR   its worker: bench/worker.py + signal handling

The task's process (submitit's) starts one persistent worker (bench/worker.py), which imports torch
and Lightning once and runs the task's units one after the other. A unit is one run
(`bench.train.run`) or a packed group (`bench.packed.run_group`, one batched model). So claims,
resume, failure recording, W&B ids (the config hash) and run directories are those of a single-run
task (slurm/job.py) or a local sweep.

- A run that kills the worker (segfault, OOM kill, os._exit) is recorded failed, as the local
  executor records it (`bench.worker.record_exit`), and a new worker runs the rest of the task.
- A unit whose runs are all finished is returned from the store and never sent to a worker, so a
  requeued task trains only what it had not finished; an interrupted run resumes from its
  checkpoint.
- Preemption (slurm/job.py explains the signals): SLURM signals every process of the job, the
  worker included. The worker stops on SIGTERM as a single-run task does: inside `trainer.fit` at
  the next batch boundary, elsewhere at once with exit code STOPPED_CODE; it leaves SIGUSR1/USR2 to
  the task process. The task process forwards SIGTERM to the worker (so a signal sent to it alone
  stops the run too; also one that came while the worker was starting, which then gets no unit),
  waits for the worker to stop, starts nothing more, and exits with code 1 (a worker killed by
  SIGTERM before its handler was installed is stopped too, never recorded failed; a worker stopped
  by its own SIGTERM while it runs a unit, exit 143 or an answer saying `stopped`, stops the task as
  well, and a failure recorded during that unit is left resumable, as in slurm/job.py; a worker
  that dies between units is replaced);
  after a warning signal (at most `max_requeues` times) it first requeues itself with
  `scontrol requeue`, as a single-run task does.
"""
from __future__ import annotations

import contextlib
import errno
import logging
import os
import signal
import sys
from typing import Optional

import yaml

from bench.config import resolve
from bench.packed import is_packed_checkpoint
from bench.store import FINISHED, Store, write_atomic
from bench.worker import STOPPED, STOPPED_EXIT, Worker, main as worker_loop, record_exit, wait_any
from slurm.job import WARN_SIGNALS, Preemption, forget_result, result_stamp, slow_down

log = logging.getLogger("rnnbench.slurm")

STOPPED_CODE = STOPPED_EXIT  # the worker stopped on SIGTERM, its run left resumable (128 + SIGTERM)
DISK_FULL = 75              # `exit 75` from the worker: the store's disk is full (bench.sweep.DISK_FULL)
STEP_DELAY_ENV = "RNNBENCH_STEP_DELAY_S"   # test aid passed to the worker (slurm/job.py slow_down)


class WorkerSignals:
    """In the worker: SIGTERM stops the run (Lightning's flag inside fit, SystemExit(STOPPED_CODE)
    outside, once however often it comes); SIGUSR1/2 are left to the task process, and having a
    handler for them keeps Lightning's own SLURM requeue handler out, as in slurm/job.py."""

    def __init__(self):
        self.terminated = False

    def install(self) -> None:
        signal.signal(signal.SIGTERM, self._on_term)
        for sig in WARN_SIGNALS:
            signal.signal(sig, self._on_warning)

    def _on_term(self, signum, frame) -> None:
        first, self.terminated = not self.terminated, True
        if first and signal.getsignal(signal.SIGTERM) == self._on_term:   # no Trainer is running (==, not is)
            raise SystemExit(STOPPED_CODE)

    def _on_warning(self, signum, frame) -> None:
        log.info("rnnbench worker: %s received; the task process decides", signal.Signals(signum).name)


class TaskPreemption(Preemption):
    """In the task process: signals only set flags (and reach the worker); the loop acts on them."""

    def __init__(self, max_requeues: int = 0):
        super().__init__(max_requeues)
        self.worker: Optional[Worker] = None
        self._told: Optional[Worker] = None   # the worker the stop was passed to

    def _on_term(self, signum, frame) -> None:
        name = signal.Signals(signum).name
        log.warning("rnnbench: %s received; stopping the task after its current run", name)
        self.terminated = self.terminated or name
        self.forward()

    def forward(self) -> None:
        """Pass a stop to the current worker, once; the loop calls it too, for a signal that came
        while a worker was being started (not yet known here)."""
        w = self.worker
        if self.terminated and w is not None and w is not self._told and w.dead() is None:
            self._told = w
            with contextlib.suppress(OSError):
                w.proc.send_signal(signal.SIGTERM)


def restarts() -> int:
    return int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0)


class TaskJob:
    """The callable submitit pickles for an array task of several units (see the module docstring).
    `units`: per unit, its runs' resolved configs (dicts); `hashes`: their hashes at submission."""

    retry_of: Optional[dict] = None   # also for a task pickled before the field existed (queued, then requeued)

    def __init__(self, units: list[list[dict]], store_root: str, sweep: Optional[str], wandb_mode: Optional[str],
                 retry_failed: bool = False, max_requeues: int = 0, project: str = "rnnbench",
                 step_delay_s: float = 0.0, hashes: Optional[list[list[str]]] = None,
                 retry_of: Optional[dict] = None):
        self.units, self.store_root, self.sweep, self.hashes = units, str(store_root), sweep, hashes
        self.wandb_mode, self.retry_failed, self.max_requeues = wandb_mode, retry_failed, max_requeues
        self.project, self.step_delay_s, self.retry_of = project, step_delay_s, retry_of

    def _retry(self, store: Store, unit: list) -> bool:
        """Whether the unit's failed runs run again. A retry submission (`retry_of`: hash -> stamp
        of the failed result it was made for, `failure_stamp`) reruns those failures on any attempt
        of the task, so a requeued task still reruns the runs its first attempt did not reach; a
        failure recorded since (a new result) stands. Without stamps: on the first attempt only."""
        if not self.retry_failed:
            return False
        if self.retry_of is None:
            return restarts() == 0
        return any(c.hash in self.retry_of and failure_stamp(store, c.hash) == self.retry_of[c.hash] for c in unit)

    def _resolved(self, store: Store) -> list[list]:
        """The units' configs, checked against their hashes, each with its run's config.yaml."""
        units = [[resolve(d) for d in unit] for unit in self.units]
        for unit, expected in zip(units, self.hashes or []):
            for cfg, h in zip(unit, expected):
                if cfg.hash != h:  # the code changed between submit and start
                    raise RuntimeError(f"config of run {h} now resolves to {cfg.hash}: the code on "
                                       "the nodes differs from the code that submitted it")
        for cfg in (c for unit in units for c in unit):
            path = store.run_dir(cfg.hash) / "config.yaml"
            if not path.is_file():   # written at submission; the worker reads it
                write_atomic(path, yaml.safe_dump(cfg.to_dict(), sort_keys=False))
        return units

    def _worker(self) -> Worker:
        env = dict(os.environ)
        if self.step_delay_s:
            env[STEP_DELAY_ENV] = str(self.step_delay_s)
        return Worker(self.store_root, self.sweep, self.wandb_mode, self.project, env, module="slurm.array_task")

    def __call__(self) -> list[dict]:
        pre = TaskPreemption(self.max_requeues)
        pre.install()
        store = Store(self.store_root)
        out: dict[str, str] = {}
        stop, cut = None, []        # why the task stops early; see `cut` below
        worker: Optional[Worker] = None
        try:
            for unit in self._resolved(store):
                if pre.terminated:
                    break
                retry = self._retry(store, unit)   # a requeue of a retry must not drop a new result
                skip = ("done", "diverged") if retry else FINISHED
                if all(store.status(c.hash) in skip for c in unit):
                    out.update((c.hash, store.status(c.hash)) for c in unit)
                    continue
                if worker is None or worker.dead() is not None:
                    worker = pre.worker = self._worker()
                    pre.forward()
                now = {c.hash: result_stamp(self.store_root, c.hash) for c in unit if store.status(c.hash) not in skip}
                statuses, stop = self._run(worker, unit, store, retry, pre)
                # the runs a stop cut short that recorded a result since (dropped if failed: _stopped)
                cut = [h for h, st in now.items() if result_stamp(self.store_root, h) != st] if stop else []
                out.update(zip((c.hash for c in unit), statuses))
                if worker.dead() is not None or stop:
                    worker.close()
                    worker = pre.worker = None
                if stop:
                    break
        finally:
            if worker is not None:
                worker.close()
        if stop == "disk full":
            raise OSError(errno.ENOSPC, "No space left on device", self.store_root)
        if pre.terminated or stop:
            self._stopped(store, pre, cut, out)
        return [{"hash": h, "status": s} for h, s in out.items()]

    def _run(self, worker: Worker, unit: list, store: Store, retry: bool, pre: TaskPreemption):
        """Run one unit in `worker`: (its statuses, None or why the task must stop now)."""
        if pre.terminated:   # came while the worker started: send nothing
            return [store.status(c.hash) for c in unit], "stopped"
        packed = len(unit) > 1 or is_packed_checkpoint(store.checkpoint(unit[0].hash))
        with contextlib.suppress(BrokenPipeError):   # died before reading it: its exit code says why
            worker.send(unit, {"id": unit[0].hash, "retry_failed": retry, "packed": packed,
                               "configs": [str(store.run_dir(c.hash) / "config.yaml") for c in unit]})
        while True:
            answer, code = worker.answer(), None
            if answer is None and (code := worker.dead()) is not None:
                answer = worker.answer()   # it may have answered just before it ended
            if answer is not None:
                statuses = answer["status"]
                if f"exit {DISK_FULL}" in statuses:
                    return statuses, "disk full"
                statuses = [record_exit(store, c, int(s.split()[1]), self.sweep) if s.startswith("exit ") else s
                            for c, s in zip(unit, statuses)]
                stopped = pre.terminated or answer.get("stopped") or any(s in STOPPED for s in statuses)
                return statuses, ("stopped" if stopped else None)
            if code is not None:
                worker.unit = None
                if pre.terminated or code in (STOPPED_CODE, -signal.SIGTERM):   # -15: before its handler; resumable
                    return [store.status(c.hash) for c in unit], "stopped"
                return [record_exit(store, c, code, self.sweep) for c in unit], None
            pre.forward()
            wait_any([worker], 1.0)

    def _stopped(self, store: Store, pre: TaskPreemption, cut: list, out: dict) -> None:
        """The task stops before its end: leave what did not finish resumable, requeue if asked.
        `cut`: the runs of the unit a stop (the task's signal or the worker's own) came during
        that recorded a result since it started; one that failed, failed of the stop (e.g. W&B's
        service killed first), as in slurm/job.py: resumed. A failure answered before, kept."""
        for h in cut:
            if out.get(h) == "failed":
                forget_result(store, h)
        pre.stopping = True
        if pre.requeue:
            pre.requeue_self()
        print(f"rnnbench: task stopped by {pre.terminated or 'its worker'}"
              f"{' and requeued' if pre.requeue else ''}", file=sys.stderr, flush=True)
        sys.exit(1)


def failure_stamp(store: Store, h: str) -> Optional[list]:
    """[finished_at, error] of the run's failed result; None when its result is not `failed`."""
    r = store.result(h) or {}
    return [r.get("finished_at"), r.get("error")] if r.get("status") == "failed" else None


def main(argv=None) -> int:
    """The worker of a multi-run array task: bench.worker's loop with SLURM signal handling."""
    signals = WorkerSignals()
    signals.install()
    delay = float(os.environ.get(STEP_DELAY_ENV) or 0)
    if delay:
        slow_down(delay)
    return worker_loop(argv, stopped=lambda: signals.terminated)


if __name__ == "__main__":
    sys.exit(main())
