"""Persistent workers: one process imports torch and Lightning once and runs config after config.

    python -m bench.worker --reply-fd N --store DIR [--sweep NAME] [--wandb MODE] [--project P]

The parent (the local executor, or a SLURM array task with several runs: slurm/array_task.py)
writes one JSON line per
unit of work to the worker's stdin, and the worker answers one JSON line per finished unit on the
file descriptor `--reply-fd`:

    -> {"id": 3, "configs": ["<store>/runs/<hash>/config.yaml", ...], "packed": false, "retry_failed": false}
    <- {"id": 3, "status": ["done", ...], "pid": 1234}          (+ "stopped": true after a SIGTERM)

A unit is a list of configs: one run, or a packed group (`bench.packed.run_group`, as
`python -m bench.packed` would run it). A single config runs through `bench.train.run`, exactly as
`rnnbench train CONFIG` would, so claims, resume,
failure recording, W&B ids and run directories are the same as for a fresh process. While a run
runs, the worker's stdout and stderr (file descriptors 1 and 2) are that run's `run.log`, so what
it prints, and the traceback `faulthandler` writes when the interpreter crashes, land in its own
log. A run that kills the worker (segfault, OOM kill, os._exit) is recorded failed by the parent,
which starts a new worker for the next unit. The worker exits when its stdin closes, and after a
run that was interrupted (SIGTERM / Ctrl-C), leaving that run to resume later.
"""
from __future__ import annotations

import argparse
import contextlib
import faulthandler
import json
import os
import selectors
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Callable, Optional

from bench import config as C
from bench.packed import run_group
from bench.provenance import git_commit
from bench.schema import ConfigError
from bench.store import FINISHED, Store, disk_full, write_json
from bench.tracking import own_service, quiet_logs
from bench.train import run  # the import this worker exists to pay only once
from models.registry import CELLS, TREE_CELLS, cell_class
from tasks.registry import TASKS, task_class

STOPPED = ("interrupted", "stopped")
STOPPED_EXIT = 128 + signal.SIGTERM   # a worker stopped by SIGTERM, its run left resumable (143)


@contextlib.contextmanager
def output_to(path: Path):
    """Point file descriptors 1 and 2 (and so sys.stdout/stderr and C-level output) at `path`."""
    sys.stdout.flush(), sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.dup2(fd, 1), os.dup2(fd, 2)
        yield
    finally:
        sys.stdout.flush(), sys.stderr.flush()
        os.dup2(saved[0], 1), os.dup2(saved[1], 2)
        for f in (fd, *saved):
            os.close(f)


def run_unit(paths: list[str], store: str, sweep: Optional[str], wandb_mode: Optional[str], project: str,
             retry_failed: bool, packed: bool = False) -> list[str]:
    """Run a unit in this process: a packed group as one batched model (bench.packed), else each
    config after the other; returns their statuses."""
    if packed:
        with output_to(Path(paths[0]).with_name("run.log")):
            try:
                return [r["status"] for r in run_group([C.load(p, []) for p in paths], store, sweep,
                                                       wandb_mode, project, retry_failed)]
            except Exception as e:
                return [_exit_status(e, "python -m bench.packed")] * len(paths)
    statuses = []
    for path in paths:
        with output_to(Path(path).with_name("run.log")):
            try:
                cfg = C.load(path, [])
                statuses.append(run(cfg, store, sweep=sweep, wandb_mode=wandb_mode, project=project,
                                    retry_failed=retry_failed)["status"])
            except Exception as e:  # outside the run's own recording (bad config or data, no claim)
                statuses.append(_exit_status(e, "rnnbench train"))
    return statuses


def _exit_status(e: Exception, prog: str) -> str:
    """What the command would have printed and its exit code, as `exit N`: an input error (bad
    config or data) is one line and code 2, as the CLI's, anything else a traceback and code 1."""
    if disk_full(e):  # the store's disk is full (or its quota spent): resumable
        print(f"{prog}: error: no space left on device: {e.filename or ''}", file=sys.stderr)
        return "exit 75"
    if isinstance(e, (ConfigError, FileNotFoundError, ValueError)):
        print(f"{prog}: error: {e}", file=sys.stderr)
        return "exit 2"
    traceback.print_exc()
    return "exit 1"


def input_error(log: Path) -> Optional[str]:
    """The one-line error `rnnbench train` printed when it stopped before any work (exit 2)."""
    try:
        lines = log.read_text(errors="replace").splitlines()
    except OSError:
        return None
    mark = "rnnbench train: error: "
    return next((ln.split(mark, 1)[1] for ln in reversed(lines) if mark in ln), None)


def record_exit(store: Store, cfg, code: int, sweep: Optional[str]) -> str:
    """Status of a run whose process (or worker) ended with `code` (negative: killed by that
    signal; from an answer `exit N`, N); a run left without a result is recorded as failed."""
    status = store.status(cfg.hash)
    if status in FINISHED or status == "running":
        return status
    step = store.checkpoint_step(cfg.hash) or 0
    why = f"killed by signal {-code}" if code < 0 else f"exited with code {code}"
    result = {"hash": cfg.hash, "status": "failed", "step": step, "error": f"process {why}",
              "task": cfg.task.name, "cell": cfg.model.cell, "seed": cfg.seed, "metrics": {},
              "sweep": sweep, "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    error = input_error(store.run_dir(cfg.hash) / "run.log") if code == 2 else None
    if error:  # `rnnbench train` stopped on its input (its data) before any work: rerun it next time
        result.update(error=error, failed_on="data")
    with store.claim(cfg.hash) as mine:   # written under the run's claim: never over a run just started
        if not mine or store.result(cfg.hash) is not None:
            return store.status(cfg.hash)
        write_json(store.run_dir(cfg.hash) / "result.json", result)
    return "failed"


def preload() -> None:
    """Import every task family and cell, and read the checkout's commit, before the first unit: a
    worker then runs the code of its start to the end of a sweep, all of it, and records that
    code's commit, even if the checkout is edited meanwhile (a family imported at its first run
    would mix the new module with the old ones already loaded)."""
    for name in TASKS:
        task_class(name)
    for name in [*CELLS, *TREE_CELLS]:
        cell_class(name)
    git_commit()


def main(argv=None, stopped: Optional[Callable[[], bool]] = None) -> int:
    """The loop; `stopped()`: whether a stop signal came (slurm/array_task.py): the answer then
    says `"stopped": true` and the worker exits, as after an interrupted run."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reply-fd", type=int, required=True)
    ap.add_argument("--store", required=True)
    ap.add_argument("--sweep", default=None)
    ap.add_argument("--wandb", default=None)
    ap.add_argument("--project", default="rnnbench")
    a = ap.parse_args(argv)
    quiet_logs()
    faulthandler.enable(file=sys.stderr, all_threads=True)  # fd 2: the running run's log
    preload()

    reply = os.fdopen(a.reply_fd, "w", buffering=1)
    for line in sys.stdin:
        unit = json.loads(line)
        try:
            statuses = run_unit(unit["configs"], a.store, a.sweep, a.wandb, a.project, unit.get("retry_failed", False),
                                unit.get("packed", False))
        except SystemExit:   # Lightning's SIGTERMException (no code: exit 0) after a stop: say stopped
            if stopped is not None and stopped():
                raise SystemExit(STOPPED_EXIT) from None
            raise
        answer = {"id": unit["id"], "status": statuses, "pid": os.getpid()}
        if stopped is not None and stopped():   # came during the unit (outside one it exits at once)
            answer["stopped"] = True
        reply.write(json.dumps(answer) + "\n")
        if answer.get("stopped") or any(s in STOPPED for s in statuses):
            break
    return 0


class Worker:
    """The parent's handle on one worker process: send a unit, poll for its answer or its death."""

    def __init__(self, store, sweep: Optional[str], wandb_mode: Optional[str], project: str, env: dict,
                 module: str = "bench.worker"):
        # `module`: a `python -m` entry that ends in `main` above (slurm/array_task.py adds signal handling)
        r, w = os.pipe()
        cmd = [sys.executable, "-m", module, "--reply-fd", str(w), "--store", str(store),
               "--project", project]
        cmd += ["--sweep", sweep] if sweep else []
        cmd += ["--wandb", wandb_mode] if wandb_mode else []
        self.proc = subprocess.Popen(cmd, env=own_service(env), stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                     pass_fds=(w,), text=True)
        os.close(w)
        os.set_blocking(r, False)
        self.reply_fd, self.buffer = r, b""
        self.unit: Optional[dict] = None   # the message of the unit it is running, None when idle
        self.cfgs: list = []               # that unit's configs

    def send(self, cfgs: list, unit: dict) -> None:
        """A worker that died before reading it (killed, or crashed on import) runs it no further:
        its parent sees the death (`dead()`) and records the unit as for a death mid-run."""
        self.cfgs, self.unit = cfgs, unit
        with contextlib.suppress(BrokenPipeError):
            self.proc.stdin.write(json.dumps(unit) + "\n")
            self.proc.stdin.flush()

    def answer(self) -> Optional[dict]:
        """The answer to the unit it runs, once it came; None while it runs."""
        try:
            while chunk := os.read(self.reply_fd, 65536):
                self.buffer += chunk
        except BlockingIOError:
            pass
        if b"\n" not in self.buffer:
            return None
        line, self.buffer = self.buffer.split(b"\n", 1)
        self.unit = None
        return json.loads(line)

    def dead(self) -> Optional[int]:
        """Its exit code (negative: killed by that signal) once it died, else None."""
        return self.proc.poll()

    def close(self, timeout: float = 30) -> None:
        with contextlib.suppress(OSError):
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self.reply_fd)


def wait_any(workers: list[Worker], timeout: float) -> None:
    """Sleep until one of the workers answers or exits, or `timeout` seconds pass."""
    with selectors.DefaultSelector() as sel:
        for w in workers:
            sel.register(w.reply_fd, selectors.EVENT_READ)
        sel.select(timeout)


if __name__ == "__main__":
    sys.exit(main())
