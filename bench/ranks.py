"""Ranks of one run. Under SLURM every rank of a DDP run starts at once (one task per device),
so the ranks > 0 learn from rank 0 whether it claimed the run: without that, a rank 0 that found
the run busy (another job trains it) returns, and the others wait in DDP's rendezvous for a rank 0
that never comes.

    rank() -> this process's global rank under DDP (Lightning's launcher or SLURM sets it); 0 alone
    tell(store, h, claimed)  rank 0: its decision on run h, for the other tasks of its SLURM job step;
                             'claimed' as it starts fit (set up), else 'not claimed'; the first stands
    told(store, h) -> bool   ranks > 0: wait for it; True to train, False when rank 0 did not claim
    GlooTeardown()           a callback: gloo's process group destroyed before interpreter teardown

Outside a multi-task SLURM step both do nothing (Lightning's own launcher starts ranks > 0 only
after rank 0 claimed the run and called fit). The decision is a file in the store,
`.ranks/<hash>.<job>.<restart>.<step>` (not in the run's directory: a data error leaves none), so a
requeued job never reads its earlier attempt's.
"""
from __future__ import annotations

import atexit
import logging
import os
import time
from pathlib import Path
from typing import Optional

import lightning as L
import torch

from bench.store import write_atomic

log = logging.getLogger("rnnbench")
WAIT_S = 3600.0   # rank 0 decides after its setup (data, checkpoint, W&B); past this, a rank > 0 gives up (one line)


def rank() -> int:
    for var in ("RANK", "SLURM_PROCID", "LOCAL_RANK"):
        if os.environ.get(var, "").isdigit():
            return int(os.environ[var])
    return 0


def _decision(store: Path, h: str) -> Optional[Path]:
    e = os.environ
    if int(e.get("SLURM_NTASKS", "1") or 1) < 2 or not e.get("SLURM_JOB_ID"):
        return None
    return Path(store) / ".ranks" / f"{h}.{e['SLURM_JOB_ID']}.{e.get('SLURM_RESTART_COUNT') or 0}.{e.get('SLURM_STEP_ID', '')}"


def tell(store: Path, h: str, claimed: bool) -> None:
    """Rank 0 only, once per job attempt (the first decision stands). A 'not claimed' that cannot
    be written is logged, not raised: it is told on the way out of run(), where it must not replace
    what is already ending the run (a stop signal, an error)."""
    if rank() > 0 or (path := _decision(store, h)) is None or path.is_file():
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, "claimed\n" if claimed else "not claimed\n")
    except OSError as e:
        if claimed:
            raise
        log.warning("rnnbench: could not tell the other ranks that run %s is not claimed (%s); they give up after %g s",
                    h, e, WAIT_S)


def told(store: Path, h: str, wait_s: float = WAIT_S) -> bool:
    if (path := _decision(store, h)) is None:
        return True
    end = time.monotonic() + wait_s
    while not path.is_file():
        if time.monotonic() > end:
            raise RuntimeError(f"rank {rank()}: rank 0 did not say within {wait_s:g} s whether it claimed run {h} "
                               f"({path} missing)")
        time.sleep(0.2)
    return path.read_text().strip() == "claimed"


class GlooTeardown(L.Callback):
    """Each gloo (CPU) DDP process destroys its process group at exit, before interpreter teardown,
    where gloo's threads can abort it (SIGABRT) after training. Lightning does this for NCCL only."""

    def setup(self, trainer, pl_module, stage) -> None:   # once a stage (fit, test): registered once
        dist = torch.distributed
        if dist.is_available() and dist.is_initialized() and dist.get_backend() == "gloo":
            atexit.unregister(dist.destroy_process_group)
            atexit.register(dist.destroy_process_group)
