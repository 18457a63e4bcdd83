"""`rnnbench sweep FILE --executor slurm`: the sweep's pending runs as SLURM job arrays (submitit).

    submit(name, cfgs, store_root, slurm_overrides, wandb_mode) -> job ids
    resubmit_failed(name, store_root, slurm_overrides, wandb_mode) -> job ids
    job_states(store, hashes) -> {hash: state}   (slurm/states.py, for `rnnbench status`)

Every run is one array task running `slurm.job.RunJob` -> `bench.train.run` on the node, or, with
`runs_per_task` N > 1 or `--pack`, an array task takes up to N runs (`array_tasks`), run one after
another by one persistent worker (`slurm.array_task.TaskJob`). Results land in the same store as
local runs (the store must be on a file system the nodes share). Runs with different resource
needs (trainer.devices / num_nodes) go in separate arrays.
Each submitted run gets `runs/<hash>/slurm.json` (its job ids, newest last).

Nothing is written to the store before sbatch accepted the jobs: a bad partition, an option
sbatch rejects, no reachable SLURM or no submitit give one line (`SlurmError`, a ConfigError so
the CLI prints it as one line and exits 2) and leave the store as it was.
"""
from __future__ import annotations

import contextlib
import copy
import io
import math
import os
import re
import shutil
import subprocess
import time
from datetime import datetime
from pathlib import Path
from typing import Any, Optional

import yaml

from bench.config import from_resolved, parse_overrides
from bench.packed import PackSize, groups, is_packed_checkpoint
from bench.schema import ConfigError
from bench.store import FINISHED, Store, write_atomic, write_json
from slurm.array_task import TaskJob, failure_stamp  # TaskJob pickled by submitit by reference, as RunJob
from slurm.job import RunJob
from slurm.states import job_states, queued_or_running, run_command, slurm_info

DEFAULTS = Path(__file__).with_name("defaults.yaml")

_TYPES: dict[str, tuple] = {
    "partition": (str, type(None)), "time": (int,), "cpus_per_task": (int,), "mem_gb": (int, float, type(None)),
    "gpus_per_run": (int,), "array_parallelism": (int,), "signal": (str,), "signal_delay_s": (int,),
    "max_requeues": (int,), "job_name": (str,), "account": (str, type(None)), "qos": (str, type(None)),
    "constraint": (str, type(None)), "exclude": (str, type(None)), "setup": (list,), "srun_args": (list,),
    "sbatch": (dict,), "folder": (str, type(None)), "python": (str, type(None)),
    "step_delay_s": (int, float), "runs_per_task": (int, str),
}
_MIN = {"time": 1, "cpus_per_task": 1, "gpus_per_run": 0, "array_parallelism": 1, "signal_delay_s": 0,
        "max_requeues": 0, "mem_gb": 0, "step_delay_s": 0, "runs_per_task": 1}


class SlurmError(ConfigError):
    """Bad cluster input or an unreachable cluster; the message is one line."""


# ---------------------------------------------------------------- options


def load_options(overrides: list[str] = ()) -> dict:
    """defaults.yaml < RNNBENCH_SLURM_CONFIG / `config=FILE` < `key=value` overrides, validated."""
    opts = yaml.safe_load(DEFAULTS.read_text())
    pairs = parse_overrides([o for o in overrides]) if overrides else []
    files = [os.environ["RNNBENCH_SLURM_CONFIG"]] if os.environ.get("RNNBENCH_SLURM_CONFIG") else []
    files += [str(v) for k, v in pairs if k == "config"]
    for f in files:
        path = Path(f)
        if not path.is_file():
            raise SlurmError(f"slurm config {f}: not found")
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError:
            raise SlurmError(f"slurm config {f}: not valid YAML") from None
        if not isinstance(data, dict):
            raise SlurmError(f"slurm config {f}: expected a mapping")
        for k, v in data.items():
            _set(opts, k, v, f"slurm config {f}: ")
    for k, v in pairs:
        if k != "config":
            _set(opts, k, v, "--slurm ")
    return opts


def _set(opts: dict, key: str, value: Any, where: str) -> None:
    if key.startswith("sbatch."):
        flag = key.split(".", 1)[1]
        if not re.fullmatch(r"[a-z][a-z0-9_-]*", flag):
            raise SlurmError(f"{where}{key}: not an sbatch flag name")
        opts["sbatch"] = dict(opts.get("sbatch") or {}, **{flag: value})
        return
    if key not in _TYPES:
        raise SlurmError(f"{where}{key}: unknown key; allowed: {', '.join(sorted(_TYPES))}, sbatch.<flag>, config")
    types = _TYPES[key]
    if key == "runs_per_task" and value != "auto" and (type(value) is not int or value < 1):
        raise SlurmError(f"{where}runs_per_task: invalid value {value!r}; allowed: an integer >= 1, or auto")
    if value == "None" and type(None) in types:   # Python's spelling of null (bench.schema.null_text)
        value = None
    if isinstance(value, bool) or not isinstance(value, types):
        if str in types and isinstance(value, (int, float)) and not isinstance(value, bool):
            value = str(value)
        else:
            allowed = " or ".join("null" if t is type(None) else t.__name__ for t in types)
            raise SlurmError(f"{where}{key}: invalid value {value!r}; allowed: {allowed}")
    if key in _MIN and isinstance(value, (int, float)) and value < _MIN[key]:
        raise SlurmError(f"{where}{key}: invalid value {value!r}; allowed: a number >= {_MIN[key]}")
    if key == "signal" and value.upper().removeprefix("SIG") not in ("USR1", "USR2", "TERM"):
        raise SlurmError(f"{where}signal: invalid value {value!r}; allowed: USR1, USR2, TERM")
    opts[key] = copy.deepcopy(value)


# ---------------------------------------------------------------- cluster checks


def _first_error(text: str) -> str:
    lines = [l.strip() for l in text.splitlines() if l.strip()]
    errors = [l for l in lines if "error" in l.lower()]
    pick = errors or lines or ["no message"]
    # sbatch says the specific reason first, then "Batch job submission failed: ..."
    return pick[0].removeprefix("sbatch: error: ").removeprefix("sinfo: error: ")


def partitions() -> list[str]:
    """Partition names of the reachable cluster; raises SlurmError if none answers."""
    if shutil.which("sinfo") is None:
        raise SlurmError("slurm: sinfo not found; is this a SLURM login node? (locally: slurm/local_cluster.sh up)")
    try:
        out = run_command(["sinfo", "-h", "-o", "%R"])
    except subprocess.TimeoutExpired:
        raise SlurmError("slurm: sinfo timed out; the SLURM controller does not answer") from None
    if out.returncode != 0:
        raise SlurmError(f"slurm: no SLURM controller answers (sinfo: {_first_error(out.stderr)})")
    return sorted({p.strip() for p in out.stdout.split() if p.strip()})


def preflight(opts: dict) -> None:
    """Everything we can check before writing anything: submitit importable, SLURM reachable,
    partition known."""
    try:
        import submitit  # noqa: F401
    except ImportError:
        raise SlurmError("slurm: the submitit package is not installed (pip install submitit)") from None
    names = partitions()
    if opts.get("partition") and opts["partition"] not in names:
        raise SlurmError(f"slurm: unknown partition {opts['partition']!r}; available: {', '.join(names) or 'none'}")


def check_configs(cfgs: list) -> None:
    """Run configs SLURM cannot start as asked. Under SLURM, a run on several devices gets one
    SLURM task per device and Lightning's SLURMEnvironment wires them up (strategy ddp); the
    spawn launcher would start devices x tasks processes, and Lightning refuses the mismatch."""
    for c in cfgs:
        t = c.trainer
        if (t.devices > 1 or t.num_nodes > 1) and t.strategy == "ddp_spawn":
            raise SlurmError(f"run {c.hash}: trainer.strategy=ddp_spawn cannot run under SLURM; "
                             "use trainer.strategy=ddp (one SLURM task per device)")


# ---------------------------------------------------------------- submission


def _resources(cfg) -> tuple[int, int, bool]:
    t = cfg.trainer
    return t.devices, t.num_nodes, t.accelerator == "gpu"


def _executor(folder: Path, opts: dict, resources: tuple[int, int, bool]):
    import submitit  # optional dependency: only --executor slurm needs it (checked in preflight)

    devices, nodes, gpu = resources
    gpus = opts["gpus_per_run"] or (devices if gpu else 0)
    ex = submitit.SlurmExecutor(folder=str(folder), python=opts.get("python"), max_num_timeout=0)
    params = dict(
        job_name=opts["job_name"], time=opts["time"], cpus_per_task=opts["cpus_per_task"],
        nodes=nodes, ntasks_per_node=devices,    # one task per device: Lightning's SLURM DDP
        array_parallelism=opts["array_parallelism"], signal_delay_s=opts["signal_delay_s"],
        setup=["export OMP_NUM_THREADS=${SLURM_CPUS_PER_TASK:-1} MKL_NUM_THREADS=${SLURM_CPUS_PER_TASK:-1}"]
              + list(opts["setup"]),
        additional_parameters={"requeue": True,
                               "signal": f"{opts['signal'].upper().removeprefix('SIG')}@{opts['signal_delay_s']}",
                               **{k: v for k, v in (opts["sbatch"] or {}).items() if v is not None}},
    )
    if gpus:
        params["gpus_per_node"] = gpus   # Lightning's trainer.devices is per node, too
    if opts.get("mem_gb"):
        params["mem"] = f"{int(round(opts['mem_gb'] * 1024))}MB"
    # a DDP run's tasks end together when one dies (OOM, segfault): no rank waits for a dead rank 0
    kill = ["--kill-on-bad-exit=1"] if devices * nodes > 1 else []
    if opts.get("srun_args") or kill:
        params["srun_args"] = kill + list(opts.get("srun_args") or [])
    for key in ("partition", "account", "qos", "constraint", "exclude"):
        if opts.get(key):
            params[key] = opts[key]
    ex.update_parameters(**params)
    return ex


def array_tasks(cfgs: list, store: Store, opts: dict, pack: PackSize = 1) -> list[list[list]]:
    """`cfgs` (of one resource group) as array tasks, each a list of units: one run, or a packed
    group of up to `pack` runs (bench.packed.groups; `pack` may be bench.packed.auto_size's rule).
    A task takes up to `runs_per_task` runs, a packed group counting as its members and never
    split; `auto`: as many runs a task as make `array_parallelism` tasks. A multi-device (DDP) run is always a task of its own."""
    units = groups(cfgs, pack, store)
    n = opts.get("runs_per_task", 1)
    if n == "auto":
        n = max(1, math.ceil(len(cfgs) / opts["array_parallelism"]))
    tasks: list[list[list]] = []
    open_: Optional[list] = None     # the task that still takes runs
    for unit in units:
        devices, nodes, _ = _resources(unit[0])
        if devices > 1 or nodes > 1:
            tasks.append([unit])
        elif open_ is not None and sum(map(len, open_)) + len(unit) <= n:
            open_.append(unit)
        else:
            open_ = [unit]
            tasks.append(open_)
    return tasks


def task_job(task: list[list], store: Store, name: str, wandb_mode, retry_failed: bool, opts: dict, project: str):
    """The callable of one array task: RunJob for one unpacked run (as ever), else TaskJob."""
    common = dict(retry_failed=retry_failed, max_requeues=opts["max_requeues"], project=project,
                  step_delay_s=opts["step_delay_s"])
    root = str(store.root.resolve())
    if len(task) == 1 and len(task[0]) == 1 and not is_packed_checkpoint(store.checkpoint(task[0][0].hash)):
        c = task[0][0]
        return RunJob(c.to_dict(), root, name, wandb_mode, hash=c.hash, **common)
    stamps = {c.hash: failure_stamp(store, c.hash) for u in task for c in u} if retry_failed else {}
    return TaskJob([[c.to_dict() for c in u] for u in task], root, name, wandb_mode,
                   hashes=[[c.hash for c in u] for u in task],
                   retry_of={h: s for h, s in stamps.items() if s is not None}, **common)


def _submit(name: str, cfgs: list, store_root, opts: dict, wandb_mode: Optional[str], retry_failed: bool,
            project: str, pack: PackSize = 1) -> list[str]:
    """Submit `cfgs` (already filtered) as arrays grouped by resources; write the store records."""
    import submitit  # optional dependency: only --executor slurm needs it (checked in preflight)

    store = Store(store_root)
    root_existed = store.root.exists()
    folder = Path(opts["folder"]) if opts.get("folder") else store.root / "slurm" / name
    folder_existed = folder.exists()
    by_resources: dict[tuple, list] = {}
    for c in cfgs:
        by_resources.setdefault(_resources(c), []).append(c)
    submitted: list[tuple[Any, str]] = []   # (cfg, job id)
    jobs: list[str] = []
    try:
        for res, group in by_resources.items():
            ex = _executor(folder, opts, res)
            tasks, handles = array_tasks(group, store, opts, pack), []
            # submitit echoes sbatch's stderr on failure; we report it as one line instead
            with contextlib.redirect_stderr(io.StringIO()), ex.batch():
                for task in tasks:
                    handles.append(ex.submit(task_job(task, store, name, wandb_mode, retry_failed, opts, project)))
            for task, j in zip(tasks, handles):
                submitted += [(c, j.job_id) for unit in task for c in unit]
                jobs.append(j.job_id)
    except (submitit.core.utils.FailedJobError, submitit.core.utils.FailedSubmissionError, OSError,
            subprocess.SubprocessError, ValueError) as e:
        if submitted:  # an earlier group went in: keep the store consistent with what runs
            _record(store, name, submitted, retry_failed)
        elif not folder_existed:
            shutil.rmtree(folder, ignore_errors=True)
            if not opts.get("folder"):
                with_suppress_rmdir(folder.parent)   # <store>/slurm, if we made it
            if not root_existed:
                with_suppress_rmdir(store.root)
        raise SlurmError(f"slurm: sbatch rejected the job: {_first_error(str(e))}") from None
    _record(store, name, submitted, retry_failed)
    return jobs


def with_suppress_rmdir(path: Path) -> None:
    try:
        path.rmdir()
    except OSError:
        pass


def _record(store: Store, name: str, submitted: list, retry_failed: bool) -> None:
    now = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    for cfg, job in submitted:
        d = store.run_dir(cfg.hash)
        if not (d / "config.yaml").is_file():
            write_atomic(d / "config.yaml", yaml.safe_dump(cfg.to_dict(), sort_keys=False))
        info = slurm_info(store, cfg.hash) or {"jobs": []}
        info["jobs"].append({"job_id": str(job), "sweep": name, "submitted_at": now, "retry_failed": retry_failed})
        info["job_id"] = str(job)
        write_json(d / "slurm.json", info)
    store.record_sweep(name, [c.hash for c, _ in submitted])


def submit(name: str, cfgs: list, store_root, slurm_overrides: list[str] = (), wandb_mode: Optional[str] = None,
           retry_failed: bool = False, project: str = "rnnbench", pack: PackSize = 1) -> list[str]:
    """Submit the runs of sweep `name` that are not finished, not running and not already queued.
    Returns the SLURM job ids (`<array>_<task>`, or `<job>` for a single run)."""
    opts = load_options(slurm_overrides)
    check_configs(cfgs)
    preflight(opts)
    store = Store(store_root)
    skip = ("done", "diverged") if retry_failed else FINISHED
    alive = {h for h, s in job_states(store, [c.hash for c in cfgs]).items() if s in ("pending", "requeued", "running")}
    todo = [c for c in cfgs if store.status(c.hash) not in skip + ("running",) and c.hash not in alive]
    if not todo:
        if store.root.exists():
            store.record_sweep(name, [c.hash for c in cfgs])
        return []
    jobs = _submit(name, todo, store_root, opts, wandb_mode, retry_failed, project, pack)
    store.record_sweep(name, [c.hash for c in cfgs])
    return jobs


def failed_runs(store: Store, hashes: list[str]) -> list[str]:
    """Runs whose SLURM job ended without a finished result, or whose result is `failed` and whose
    latest job is not still queued or running (a retry already on its way: not submitted twice)."""
    states = job_states(store, hashes)
    failed = [h for h in hashes if store.status(h) == "failed"]
    retrying = queued_or_running(store, [h for h in failed if _retry_after_failure(store, h)])
    out = []
    for h in hashes:
        if h in failed:
            if h not in retrying:
                out.append(h)
        elif states.get(h, "").startswith("failed:"):
            out.append(h)
    return out


def _retry_after_failure(store: Store, h: str) -> bool:
    """Whether run `h`'s latest job was submitted to retry failures after its result was written
    (a job that only carried it, or failed it, never reruns it)."""
    info, result = slurm_info(store, h) or {}, store.result(h) or {}
    last = (info.get("jobs") or [{}])[-1]
    stamp = lambda t: datetime.strptime(t, "%Y-%m-%dT%H:%M:%S%z").timestamp() if t else None  # noqa: E731
    try:
        submitted, failed = stamp(last.get("submitted_at")), stamp(result.get("finished_at"))
    except ValueError:
        return False
    return bool(last.get("retry_failed")) and submitted is not None and failed is not None and submitted >= failed


def resubmit_failed(name: str, store_root, slurm_overrides: list[str] = (), wandb_mode: Optional[str] = None,
                    project: str = "rnnbench", pack: PackSize = 1) -> list[str]:
    """Submit again (alone, or `runs_per_task` a task) the runs of sweep `name` that failed (their SLURM job timed out, was
    cancelled or crashed, or their result says failed). They resume from their checkpoints."""
    opts = load_options(slurm_overrides)
    preflight(opts)
    store = Store(store_root)
    hashes = store.sweep_hashes(name)
    todo = [from_resolved(store.config(h)) for h in failed_runs(store, hashes)]
    check_configs(todo)
    if not todo:
        return []
    return _submit(name, todo, store_root, opts, wandb_mode, True, project, pack)
