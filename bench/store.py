"""The local result store: one directory per run, named by the hash of its resolved config.

    <root>/runs/<hash>/config.yaml      resolved config
                       result.json      final status + metrics (written by rename)
                       logs/version_<k>/metrics.csv   step metrics, one file per attempt
                       checkpoints/last.ckpt
                       .lock            flock held by the process running it
    <root>/sweeps/<name>.json           which hashes a sweep holds
"""
from __future__ import annotations

import contextlib
import csv
import fcntl
import io
import json
import os
import tempfile
from pathlib import Path
from typing import Iterator, Optional

import torch
import yaml

FINISHED = ("done", "failed", "diverged")


def write_atomic(path: Path, text: str) -> None:
    """Write a file by rename so readers never see it half-written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_json(path: Path, obj) -> None:
    write_atomic(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


class Store:
    def __init__(self, root="results"):
        self.root = Path(root)

    # ---- runs
    def run_dir(self, h: str) -> Path:
        return self.root / "runs" / h

    def hashes(self) -> list[str]:
        runs = self.root / "runs"
        return sorted(p.name for p in runs.iterdir() if (p / "config.yaml").is_file()) if runs.is_dir() else []

    def config(self, h: str) -> dict:
        return yaml.safe_load((self.run_dir(h) / "config.yaml").read_text())

    def result(self, h: str) -> Optional[dict]:
        path = self.run_dir(h) / "result.json"
        return json.loads(path.read_text()) if path.is_file() else None

    def checkpoint(self, h: str) -> Optional[Path]:
        path = self.run_dir(h) / "checkpoints" / "last.ckpt"
        return path if path.is_file() else None

    def checkpoint_step(self, h: str) -> Optional[int]:
        """Global step of the run's last checkpoint; None without one."""
        path = self.checkpoint(h)
        if path is None:
            return None

        return int(torch.load(path, map_location="cpu", weights_only=True)["global_step"])

    @contextlib.contextmanager
    def claim(self, h: str) -> Iterator[bool]:
        """Hold the run's lock for the block; yields False if another process holds it.
        The kernel drops the lock when its process dies, so crashed runs are never stuck."""
        d = self.run_dir(h)
        d.mkdir(parents=True, exist_ok=True)
        fd = os.open(d / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield False
                return
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.uname().nodename} {os.getpid()}\n".encode())
            yield True
        finally:
            os.close(fd)

    def running(self, h: str) -> bool:
        lock = self.run_dir(h) / ".lock"
        if not lock.is_file():
            return False
        fd = os.open(lock, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            return False
        except BlockingIOError:
            return True
        finally:
            os.close(fd)

    def status(self, h: str) -> str:
        """pending | running | interrupted | done | failed | diverged"""
        result = self.result(h)
        if result is not None:
            return result["status"]
        if self.running(h):
            return "running"
        return "interrupted" if self.checkpoint(h) else "pending"

    # ---- step metrics
    def metric_files(self, h: str) -> list[Path]:
        logs = self.run_dir(h) / "logs"
        files = logs.glob("version_*/metrics.csv") if logs.is_dir() else []
        return sorted(files, key=lambda p: int(p.parent.name.split("_")[1]))

    def metrics(self, h: str) -> list[dict]:
        """All step-metric rows of a run, attempts concatenated in order."""
        rows = []
        for path in self.metric_files(h):
            with open(path, newline="") as f:
                rows += [{k: _num(v) for k, v in r.items() if v != ""} for r in csv.DictReader(f)]
        return rows

    def truncate_metrics(self, h: str, step: int) -> None:
        """Drop rows logged after the checkpoint at global step `step` (work lost with an
        interrupted attempt), by rename. Rows before that checkpoint carry steps <= step - 1."""
        for path in self.metric_files(h):
            with open(path, newline="") as f:
                reader = csv.DictReader(f)
                fields, rows = reader.fieldnames or [], list(reader)
            keep = [r for r in rows if r.get("step") in (None, "") or int(float(r["step"])) < step]
            if len(keep) == len(rows):
                continue
            buf = _csv_text(fields, keep)
            write_atomic(path, buf)

    # ---- sweeps
    def record_sweep(self, name: str, hashes: list[str], source: str = "") -> None:
        path = self.root / "sweeps" / f"{name}.json"
        old = json.loads(path.read_text())["hashes"] if path.is_file() else []
        merged = old + [h for h in hashes if h not in old]
        write_json(path, {"name": name, "source": source, "hashes": merged})

    def sweeps(self) -> list[str]:
        d = self.root / "sweeps"
        return sorted(p.stem for p in d.glob("*.json")) if d.is_dir() else []

    def sweep_hashes(self, name: str) -> list[str]:
        path = self.root / "sweeps" / f"{name}.json"
        if not path.is_file():
            raise FileNotFoundError(f"sweep {name!r}: not in store {self.root}; known: {', '.join(self.sweeps()) or 'none'}")
        return json.loads(path.read_text())["hashes"]


def _num(v: str):
    try:
        f = float(v)
    except ValueError:
        return v
    return int(f) if f.is_integer() and "." not in v and "e" not in v.lower() else f


def _csv_text(fields, rows) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=fields)
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()
