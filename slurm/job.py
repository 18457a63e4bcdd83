"""What runs inside one SLURM array task: one config through `bench.train.run`, plus preemption.

Preemption and requeue (one mechanism: ours, on top of submitit's launcher; Lightning's SLURM
auto-requeue is kept off, submitit's own USR2 checkpoint/requeue handler is replaced):

- Checkpoints are the periodic ones `bench.train.run` takes at every validation
  (`runs/<hash>/checkpoints/last.ckpt`, written atomically), plus one where a SIGTERM stopped
  it (bench.checkpoints.SaveOnStop); a resumed run drops the metric rows logged after that
  checkpoint and continues with the same W&B run id (the config hash).
- SIGTERM (what SLURM sends on `scontrol requeue`, on preemption, on `scancel`, and at the time
  limit, `KillWait` seconds before SIGKILL): inside `trainer.fit` Lightning's own handler sets a
  flag and stops at the next batch boundary, checkpointed; outside it (setup, test) the run stops at once. The
  job then exits. Whether it comes back is SLURM's decision: `scontrol requeue` and
  `PreemptMode=REQUEUE` put it back in the queue (the job is submitted with `--requeue`); a time
  limit or a cancel ends it (`rnnbench status` shows `failed:timeout` / `failed:cancelled`).
- SIGUSR1 (and SIGUSR2): the advance warning `--signal=USR1@<signal_delay_s>` before the time
  limit, or an admin's "please go away". Handled as SIGTERM, and then the job requeues itself
  with `scontrol requeue` (at most `max_requeues` times per submission, counted by
  SLURM_RESTART_COUNT; past that the warning is ignored and the time limit ends the job).
- Registering our USR1 handler before the Trainer starts is what keeps Lightning's
  `SLURMEnvironment(auto_requeue=True)` from installing its own USR1 requeue handler (it only
  does when no handler is set), so there is never a second `scontrol requeue` nor an
  `hpc_ckpt_*.ckpt` beside ours.
"""
from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import time
from typing import Optional

import torch

from bench.config import resolve
from bench.ranks import rank
from bench.store import Store
from bench.train import run
from tasks.base import TaskModule

log = logging.getLogger("rnnbench.slurm")

WARN_SIGNALS = (signal.SIGUSR1, signal.SIGUSR2)


def slurm_job_id() -> Optional[str]:
    """`<array>_<task>` for an array task, else the job id; None outside SLURM."""
    array, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    if array and task:
        return f"{array}_{task}"
    return os.environ.get("SLURM_JOB_ID")


class Preemption:
    """Signal handling for one run in a SLURM job (see the module docstring)."""

    def __init__(self, max_requeues: int = 0):
        self.max_requeues = max_requeues
        self.terminated: Optional[str] = None   # name of the signal that asked us to stop
        self.requeue = False                     # whether we requeue ourselves after stopping
        self.stopping = False                    # the run has stopped; we are on our way out
        self.cut_run = False                     # a stop signal came before the run had stopped

    def install(self) -> None:
        signal.signal(signal.SIGTERM, self._on_term)
        for sig in WARN_SIGNALS:
            signal.signal(sig, self._on_warning)

    def _on_term(self, signum, frame) -> None:
        name = signal.Signals(signum).name
        log.warning("rnnbench: %s received; stopping at the next safe point", name)
        self.terminated = self.terminated or name
        if self.stopping:
            return
        self.cut_run = True
        if signal.getsignal(signal.SIGTERM) == self._on_term:   # ==: a bound method is new at each access
            # no Trainer is running (Lightning's handler, which chains to this one, would be
            # installed): nothing half-written can be lost, result and checkpoints are atomic
            self.stopping = True   # raised once: never again while the job handles this one
            raise SystemExit(f"stopped by {name}")
        # inside trainer.fit: Lightning's handler (which called us) has set its flag and raises
        # SIGTERMException at the next batch boundary

    def _on_warning(self, signum, frame) -> None:
        name = signal.Signals(signum).name
        restarts = int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0)
        if restarts >= self.max_requeues:
            log.warning("rnnbench: %s received but this job was requeued %d times (max_requeues=%d); "
                        "running on until the time limit", name, restarts, self.max_requeues)
            return
        self.requeue = True
        self.terminated = self.terminated or name
        handler = signal.getsignal(signal.SIGTERM)
        if callable(handler):
            handler(signal.SIGTERM, frame)

    def requeue_self(self) -> bool:
        """Ask SLURM to requeue this job (rank 0 only). True if scontrol accepted."""
        job = slurm_job_id()
        if job is None or rank() != 0:
            return False
        try:
            done = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.SubprocessError) as e:
            log.error("rnnbench: scontrol requeue %s failed: %s", job, e)
            return False
        if done.returncode != 0:
            log.error("rnnbench: scontrol requeue %s failed: %s", job, done.stderr.strip())
            return False
        log.warning("rnnbench: requeued SLURM job %s", job)
        return True


class RunJob:
    """The callable submitit pickles for each array task: run (or resume) one config."""

    def __init__(self, cfg: dict, store_root: str, sweep: Optional[str], wandb_mode: Optional[str],
                 retry_failed: bool = False, max_requeues: int = 0, project: str = "rnnbench",
                 step_delay_s: float = 0.0, hash: Optional[str] = None):
        self.cfg, self.store_root, self.sweep, self.hash = cfg, str(store_root), sweep, hash
        self.wandb_mode, self.retry_failed, self.max_requeues = wandb_mode, retry_failed, max_requeues
        self.project = project
        self.step_delay_s = step_delay_s   # tests only: slow training down, results unchanged

    def __call__(self) -> dict:
        pre = Preemption(self.max_requeues)
        h = before = None
        os.environ.pop("WANDB_SERVICE", None)   # sbatch exports the submitter's W&B service: start our own
        try:
            pre.install()   # in the try: a stop raised by the handler is always caught below
            threads = int(os.environ.get("SLURM_CPUS_PER_TASK", "0") or 0)
            if threads:
                torch.set_num_threads(threads)
            cfg = resolve(self.cfg)
            expected = getattr(self, "hash", None)   # (absent in jobs pickled by older code)
            if expected and cfg.hash != expected:  # the code changed between submit and start
                raise RuntimeError(f"config of run {expected} now resolves to {cfg.hash}: the code on "
                                   "the nodes differs from the code that submitted it")
            if self.step_delay_s:
                slow_down(self.step_delay_s)
            kwargs = dict(sweep=self.sweep, wandb_mode=self.wandb_mode, project=self.project)
            if self.retry_failed and int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0) == 0:
                kwargs["retry_failed"] = True   # a requeue of a retry must not drop a new result
            h, before = cfg.hash, result_stamp(self.store_root, cfg.hash)   # both set, or neither
            result = run(cfg, self.store_root, **kwargs)
            pre.stopping = True   # still in the try: a signal before this line raises in here
        except SystemExit:
            pre.stopping = True
            if pre.terminated is None:
                raise
            result = {"hash": h, "status": "stopped", "signal": pre.terminated}
            if h and result_stamp(self.store_root, h) != before:   # run() wrote its result, then the signal
                result = Store(self.store_root).result(h) or result
        # from here on, with pre.stopping set, a signal only sets pre.terminated (_on_term)
        if pre.cut_run and result.get("status") == "failed" and h and result_stamp(self.store_root, h) != before:
            # the shutdown itself broke the run: SLURM signals every process of the job, so the
            # W&B service process may be gone before training stops ("Connection lost"). That is
            # an interruption, not a failure of the config: forget the result, resume on requeue.
            # Only a failure this attempt recorded (its result.json changed) while the signal was
            # already here (cut_run; Python runs the handler before the main thread can raise what
            # the stop caused); an old stored failure, or one reported before the signal, stands.
            forget_result(Store(self.store_root), result.get("hash"))
            result = {"hash": result.get("hash"), "status": "stopped", "signal": pre.terminated}
        if pre.terminated is not None and result.get("status") not in ("done", "failed", "diverged", "busy"):
            # stopped early: the last periodic checkpoint is on disk, no result was written
            if pre.requeue:
                pre.requeue_self()
            print(f"rnnbench: run stopped by {pre.terminated}"
                  f"{' and requeued' if pre.requeue else ''}", file=sys.stderr, flush=True)
            sys.exit(1)
        return result


def result_stamp(store_root: str, h: str) -> Optional[tuple]:
    """(inode, mtime) of the run's result.json, None without one: a new result (written by rename) changes it."""
    try:
        st = os.stat(Store(store_root).run_dir(h) / "result.json")
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_mtime_ns


def forget_result(store: Store, h: Optional[str]) -> None:
    """Drop a run's result.json (the run failed only because it was being stopped), so a requeue resumes it."""
    if not h:
        return
    with contextlib.suppress(FileNotFoundError):
        (store.run_dir(h) / "result.json").unlink()
    log.warning("rnnbench: run %s failed while being stopped; result dropped so the requeued job resumes it", h)


def slow_down(seconds: float) -> None:
    """Test aid: sleep after every training batch (so a test can interrupt a tiny run mid-way).
    Numbers are unaffected; only wall time grows."""
    def on_train_batch_end(self, outputs, batch, batch_idx):
        time.sleep(seconds)

    TaskModule.on_train_batch_end = on_train_batch_end
