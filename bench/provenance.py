"""Where a run's numbers come from, recorded in its result.json: the code (`git_commit`) and the
machine and packages (`environment`). The same config and seed give the same numbers on CPU within
one environment; across CPUs (another ISA for oneDNN / MKL) or package versions the float order
can differ, so a run that does not repeat elsewhere can be told apart by this record. Its times
depend on the machine's load too, recorded as `environment.load` (a time taken under load is not
the code's alone)."""
from __future__ import annotations

import functools
import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Optional

import torch

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("torch", "lightning", "torchmetrics", "numpy")


@functools.lru_cache(None)
def git_commit() -> str:
    """HEAD of the checkout this code runs from, with '+dirty' if it has local changes."""
    try:
        head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True,
                              text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return head + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo on Linux), else platform.processor(), else 'unknown'."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


@functools.lru_cache(None)
def environment() -> dict:
    """The machine and package versions a run computed with: CPU model, the SIMD level torch's
    CPU kernels dispatch to (e.g. AVX512), Python, and the versions of PACKAGES."""
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {"cpu": cpu_model(), "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "machine": platform.machine(), "python": platform.python_version(), "packages": versions}


def load_average() -> Optional[float]:
    """The machine's 1-minute load average now; None where the OS has none."""
    try:
        return round(os.getloadavg()[0], 2)
    except (OSError, AttributeError):
        return None


def with_load(env: dict, start: Optional[float]) -> dict:
    """`env` (not changed: environment() is cached) plus `load`: the CPU count and the 1-minute
    load average at the start (`start`, taken as training began) and at the end (now) of training."""
    return {**env, "load": {"cpus": os.cpu_count(), "start": start, "end": load_average()}}


def under_load(result: Optional[dict]) -> bool:
    """Whether a run trained on a loaded machine: the larger of its start and end load averages
    above its CPU count. False for a run recorded without the field."""
    load = ((result or {}).get("environment") or {}).get("load") or {}
    seen = [x for x in (load.get("start"), load.get("end")) if isinstance(x, (int, float))]
    return bool(seen and load.get("cpus") and max(seen) > load["cpus"])
