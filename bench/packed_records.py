"""What one member of a packed group writes into its own run directory, in the layout of an
unpacked run (bench/train.py): `logs/version_<attempt>/metrics.csv` (+ `hparams.yaml`),
`checkpoints/last.ckpt`, and its own W&B run (id = its config hash).

A member's `last.ckpt` loads with `torch.load(..., weights_only=True)` and holds what an unpacked
run's does that a packed run uses (`global_step`, `epoch`, `state_dict`, `optimizer_states`,
`hyper_parameters`, `rng_torch`) plus `packed` (the group's hashes and training wall time). It has no
Lightning loop state, so it resumes through the packed runner (`bench.packed`), never Lightning.
"""
from __future__ import annotations

import csv
import io
import logging
import signal
from pathlib import Path
from typing import Optional

import torch
import yaml

from bench.checkpoints import Unreadable, read_checkpoint, save_atomic
from bench.store import write_atomic
from bench.tracking import default_mode

log = logging.getLogger("rnnbench")


def is_packed_checkpoint(path: Optional[Path]) -> bool:
    """Whether a run's last.ckpt was written by a packed group (resumes through bench.packed)."""
    if path is None or not Path(path).is_file():
        return False
    try:
        return "packed" in read_checkpoint(path)
    except Unreadable:  # damaged: the unpacked path records it (bench.train) and starts over
        return False


def save_checkpoint(obj: dict, path: Path) -> None:
    """torch.save by rename: a reader (or a resume after SIGKILL) never sees half a checkpoint."""
    save_atomic(obj, path)


class MetricLog:
    """The rows of one attempt, as Lightning's CSVLogger writes them (columns sorted, blanks for
    the keys a row lacks); the file is rewritten whole at every flush, by rename."""

    def __init__(self, version_dir: Path, hparams: dict):
        self.path = version_dir / "metrics.csv"
        self.rows: list[dict] = []
        write_atomic(version_dir / "hparams.yaml", yaml.safe_dump(hparams, sort_keys=False))

    def add(self, row: dict) -> None:
        self.rows.append(row)

    def flush(self) -> None:
        if not self.rows:
            return
        fields = sorted({k for r in self.rows for k in r})
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=fields)
        w.writeheader()
        w.writerows(self.rows)
        write_atomic(self.path, buf.getvalue())


class Tracker:
    """One member's W&B run, as the WandbLogger of an unpacked run makes it (same id, name, group,
    tags, config, `trainer/global_step`), several at once in one process. Failures are warnings."""

    def __init__(self, run_dir: Path, run_id: str, config: dict, *, mode: Optional[str], project: str,
                 group: Optional[str], name: str, tags: list[str]):
        self.run = None
        mode = mode or default_mode()
        if mode == "disabled":
            return
        try:
            import wandb  # optional at import time: only runs that track need it

            self.run = wandb.init(name=name, project=project, dir=str(run_dir), id=run_id, resume="allow",
                                  group=group, tags=tags, mode=mode, config=config, job_type="train",
                                  reinit="create_new")
            self.run.define_metric("trainer/global_step")
            self.run.define_metric("*", step_metric="trainer/global_step", step_sync=True)
        except Exception as e:  # tracking must never fail a run; the CSV log is always kept
            log.warning("W&B tracking off for run %s: %s", run_id, str(e).splitlines()[0] if str(e) else e)
            self.run = None

    def log(self, row: dict) -> None:
        if self.run is None:
            return
        metrics = {k: v for k, v in row.items() if k != "step"}
        self._safe(self.run.log, dict(metrics, **{"trainer/global_step": row["step"]}))

    def finish(self) -> None:
        if self.run is not None:
            self._safe(self.run.finish)
            self.run = None

    def _safe(self, fn, *args) -> None:
        try:
            fn(*args)
        except Exception as e:
            log.warning("W&B logging stopped for this run (the CSV log goes on): %s", e)
            self.run = None


class StopSignal:
    """SIGTERM while a packed group trains (preemption, requeue, a stopped sweep): noted, so that
    the group checkpoints every member at the step it is at; `deliver` then hands the signal to
    the handler that was there before (SLURM worker: exit STOPPED_CODE; default: die of it). A
    signal noted but not delivered (it came during the last validation) is delivered on exit."""

    def __init__(self):
        self.received = False

    def __enter__(self):
        before = signal.signal(signal.SIGTERM, self._note)
        self.before = signal.SIG_DFL if before is None else before   # None: set outside Python
        return self

    def _note(self, signum, frame) -> None:
        self.received = True

    def __exit__(self, *exc) -> None:
        signal.signal(signal.SIGTERM, self.before)
        if self.received and exc[0] is None:
            self.deliver(again=False)

    def deliver(self, again: bool = True) -> None:
        """Hand the signal on, once. Returns only where the earlier handler lets the group go on
        (ignored, or a flag); then, with `again`, the next SIGTERM is noted as this one was."""
        self.received = False
        signal.signal(signal.SIGTERM, self.before)
        signal.raise_signal(signal.SIGTERM)
        if again:
            signal.signal(signal.SIGTERM, self._note)
