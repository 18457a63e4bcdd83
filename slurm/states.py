"""SLURM-side state of submitted runs (scontrol, else sacct), for `rnnbench status` and resubmission."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
from typing import Optional

from bench.store import Store

# SLURM job states (lower-case) after which the job will not run again by itself
ENDED = {"completed", "failed", "timeout", "cancelled", "node_fail", "preempted", "out_of_memory",
         "boot_fail", "deadline", "revoked", "special_exit", "unknown"}
ALIVE = {"pending", "requeued", "running", "completing", "configuring", "suspended", "resizing",
         "requeue_fed", "requeue_hold", "stopped", "signaling", "stage_out"}


def run_command(cmd: list[str], timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def slurm_info(store: Store, h: str) -> Optional[dict]:
    path = store.run_dir(h) / "slurm.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def scontrol_jobs() -> Optional[dict[str, dict]]:
    """Every job the controller still knows (finished ones for MinJobAge), keyed by
    `<array>_<task>` and by plain job id; pending array ranges are expanded. None: no controller."""
    try:
        out = run_command(["scontrol", "show", "job", "-o"], timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    jobs: dict[str, dict] = {}
    for line in out.stdout.splitlines():
        rec = dict(kv.split("=", 1) for kv in line.split() if "=" in kv)
        if "JobId" not in rec:
            continue
        state = {"state": rec.get("JobState", "UNKNOWN").lower(), "reason": rec.get("Reason", ""),
                 "restarts": int(rec.get("Restarts", "0") or 0)}
        jobs[rec["JobId"]] = state
        array, task = rec.get("ArrayJobId"), rec.get("ArrayTaskId")
        if array and task:
            for t in expand_array(task.split("%")[0]):
                jobs[f"{array}_{t}"] = state
    return jobs


def expand_array(spec: str) -> list[str]:
    out = []
    for part in spec.split(","):
        m = re.fullmatch(r"(\d+)(?:-(\d+))?(?::(\d+))?", part)
        if not m:
            continue
        lo, hi, step = int(m[1]), int(m[2] or m[1]), int(m[3] or 1)
        out += [str(i) for i in range(lo, hi + 1, step)]
    return out


def sacct(ids: list[str]) -> dict[str, str]:
    if not ids or shutil.which("sacct") is None:
        return {}
    try:
        out = run_command(["sacct", "-n", "-X", "-P", "-o", "JobID,State", "-j", ",".join(ids)], timeout=30)
    except (OSError, subprocess.SubprocessError):
        return {}
    if out.returncode != 0:
        return {}
    states = {}
    for line in out.stdout.splitlines():
        if "|" in line:
            jid, state = line.split("|", 1)
            states[jid.strip()] = state.split()[0].lower() if state.strip() else "unknown"
    return states


def job_states(store, hashes: list[str]) -> dict[str, str]:
    """SLURM-side state of the unfinished runs among `hashes` that were submitted to SLURM:
    `pending` (queued), `requeued` (queued again after a requeue), `running`, or
    `failed:<slurm state>` (e.g. `failed:timeout`, `failed:cancelled`) when the job ended without
    a finished result; such runs are what `resubmit_failed` submits again. Runs with a result, or
    never submitted to SLURM, are left out (their store status stands)."""
    store = store if isinstance(store, Store) else Store(store)
    wanted = {}
    for h in hashes:
        info = slurm_info(store, h)
        if info and info.get("job_id") and store.result(h) is None:
            wanted[h] = str(info["job_id"])
    if not wanted:
        return {}
    known = scontrol_jobs()
    if known is None:  # no controller answers (e.g. the store was copied off the cluster)
        return {}
    missing = [j for j in wanted.values() if j not in known]
    acct = sacct(missing)
    states = {}
    for h, job in wanted.items():
        rec = known.get(job)
        state = rec["state"] if rec else acct.get(job, "unknown")
        if state == "pending" and rec and (rec["restarts"] > 0 or rec["reason"] == "BeginTime"):
            state = "requeued"
        if state in ("pending", "requeued", "running"):
            states[h] = state
        elif state in ALIVE:
            states[h] = "running" if state in ("completing", "configuring") else "pending"
        elif store.running(h):
            states[h] = "running"
        else:
            states[h] = f"failed:{'no-result' if state == 'completed' else state}"
    return states


def queued_or_running(store, hashes: list[str]) -> set[str]:
    """Those of `hashes` whose latest SLURM job (slurm.json) is still queued or running: for a run
    whose result says failed, a retry on its way (it removes that result once it starts)."""
    store = store if isinstance(store, Store) else Store(store)
    ids = {h: str(info["job_id"]) for h in hashes if (info := slurm_info(store, h)) and info.get("job_id")}
    known = scontrol_jobs() if ids else None
    return {h for h, job in ids.items() if known and job in known and known[job]["state"] in ALIVE}
