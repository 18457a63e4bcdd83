"""The local result store: one directory per run, named by the hash of its resolved config.

    <root>/runs/<hash>/config.yaml      resolved config
                       result.json      final status + metrics (written by rename)
                       logs/version_<k>/metrics.csv   step metrics, one file per attempt
                       checkpoints/last.ckpt
                       threads.json     torch threads of the first attempt (every attempt uses them)
                       .lock            flock held by the process running it
    <root>/sweeps/<name>.json           which hashes a sweep holds

A damaged file (truncated, not UTF-8, not the expected shape) never stops a reader: it is
skipped with one warning line on stderr naming it, and the run's status says `damaged`.
"""
from __future__ import annotations

import contextlib
import csv
import errno
import fcntl
import io
import json
import os
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator, Optional, Union

import yaml

from bench.checkpoints import Unreadable, read_step

FINISHED = ("done", "failed", "diverged")
SWEEP_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
_warned: set[str] = set()


def disk_full(e: BaseException) -> bool:
    """A full disk or an exhausted quota (EDQUOT: how a full disk shows on most clusters): not the
    run's fault; the run stays resumable and the sweep stops (exit 75)."""
    return isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT)


class Damaged(ValueError):
    """A store file that cannot be read as what it should be."""

    def __init__(self, path, why: str):
        super().__init__(f"damaged store file {path}: {why}")
        self.path, self.why = Path(path), why


def warn_damaged(e: Damaged) -> None:
    """One warning line per damaged file and process."""
    if str(e.path) not in _warned:
        _warned.add(str(e.path))
        print(f"warning: {e}; skipped", file=sys.stderr)


def check_sweep_name(name: str) -> str:
    if not SWEEP_NAME.fullmatch(name) or ".." in name:
        raise ValueError(f"sweep name: invalid value {name!r}; allowed: letters, digits, '_', '.', '-' "
                         f"(no path separators, no '..')")
    return name


def _read(path: Path, parse, kind: type, what: str):
    """Parse a store file; Damaged if it is not UTF-8, does not parse, or is not a `kind`."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise Damaged(path, f"not UTF-8 (byte {e.object[e.start]:#04x} at offset {e.start})") from None
    try:
        data = parse(text)
    except (ValueError, yaml.YAMLError):
        raise Damaged(path, f"not valid {what}" + (" (empty)" if not text.strip() else "")) from None
    if not isinstance(data, kind):
        raise Damaged(path, f"expected a {what} mapping, got {type(data).__name__}")
    return data


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK = _umask()   # read once, at import (os.umask sets it too, so not from threads later)


def write_atomic(path: Path, text: Union[str, bytes]) -> None:
    """Write a file by rename so readers never see it half-written (a kill or a full disk
    mid-write leaves the old file). Mode: the replaced file's, else open()'s default."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        mode = path.stat().st_mode & 0o777
    except FileNotFoundError:
        mode = 0o666 & ~_UMASK
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb" if isinstance(text, bytes) else "w") as f:
            os.fchmod(f.fileno(), mode)
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

    def config(self, h: str, quiet: bool = False, warn: bool = True) -> Optional[dict]:
        """The run's resolved config; Damaged if unreadable (None instead with quiet, or missing)."""
        path = self.run_dir(h) / "config.yaml"
        try:
            data = _read(path, yaml.safe_load, dict, "YAML")
            if not all(isinstance(data.get(s), dict) for s in ("task", "model")):
                raise Damaged(path, "no task and model sections")
            return data
        except FileNotFoundError:
            if quiet:
                return None
            raise
        except Damaged as e:
            if quiet:
                return None
            if warn:
                warn_damaged(e)
            raise

    def damage(self, h: str) -> Optional[str]:
        """Why the run's config or result file is damaged; None if neither is."""
        try:
            self.check(h, warn=True)
        except Damaged as e:
            return str(e)
        return None

    def check(self, h: str, warn: bool = False) -> None:
        """Damaged if the run's config or result file is damaged (a missing one is not)."""
        try:
            self.config(h, warn=warn)
        except FileNotFoundError:
            return
        self._result(h)

    def _result(self, h: str) -> Optional[dict]:
        path = self.run_dir(h) / "result.json"
        if not path.is_file():
            return None
        data = _read(path, json.loads, dict, "JSON")
        if not isinstance(data.get("status"), str):
            raise Damaged(path, "no status")
        return data

    def result(self, h: str) -> Optional[dict]:
        """The run's result; None when there is none yet, or when it is damaged (warned)."""
        try:
            return self._result(h)
        except Damaged as e:
            warn_damaged(e)
            return None

    def set_aside(self, path: Path) -> Path:
        """Rename a file that must not be trusted to `<name>.damaged` (kept to look at)."""
        path = Path(path)
        aside = path.with_name(path.name + ".damaged")
        os.replace(path, aside)
        return aside

    def threads(self, h: str, default: int) -> int:
        """The run's torch thread count: the one its first attempt recorded, else `default` (recorded)."""
        path = self.run_dir(h) / "threads.json"
        try:
            n = _read(path, json.loads, dict, "JSON").get("threads")
            if isinstance(n, int) and n >= 1:
                return n
        except FileNotFoundError:
            pass
        except Damaged as e:
            warn_damaged(e)
        write_json(path, {"threads": default})
        return default

    def checkpoint(self, h: str) -> Optional[Path]:
        path = self.run_dir(h) / "checkpoints" / "last.ckpt"
        return path if path.is_file() else None

    def checkpoint_step(self, h: str) -> Optional[int]:
        """Global step of the run's last checkpoint; None without one or if it is unreadable."""
        path = self.checkpoint(h)
        try:
            return None if path is None else read_step(path)
        except Unreadable:
            return None

    @contextlib.contextmanager
    def claim(self, h: str) -> Iterator[bool]:
        """Hold the run's lock for the block; yields False if another process holds it.
        The kernel drops the lock when its process dies, so crashed runs are never stuck."""
        d = self.run_dir(h)
        d.mkdir(parents=True, exist_ok=True)
        fd = os.open(d / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            for wait in [0.01] * 20 + [None]:   # `running` probes with a shared lock for an instant
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if wait is None:
                        yield False
                        return
                    time.sleep(wait)
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
        """pending | running | interrupted | done | failed | diverged | damaged"""
        result = self.result(h)
        if result is not None:
            return result["status"]
        if self.running(h):
            return "running"
        if self.damage(h):
            return "damaged"
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
            try:
                _, got, bad = _csv_rows(path)
            except Damaged as e:
                warn_damaged(e)
                continue
            if bad:
                warn_damaged(Damaged(path, f"{bad} incomplete row(s)"))
            rows += [{k: _num(v) for k, v in r.items() if v != ""} for r in got]
        return rows

    def truncate_metrics(self, h: str, step: int) -> None:
        """Drop rows logged after the checkpoint at global step `step` (work lost with an
        interrupted attempt), by rename. Rows before that checkpoint carry steps <= step - 1."""
        for path in self.metric_files(h):
            try:
                fields, rows, bad = _csv_rows(path)
            except Damaged:
                self.set_aside(path)  # unreadable: its rows cannot be trusted
                continue
            keep = [r for r in rows if r.get("step") in (None, "") or int(float(r["step"])) < step]
            if len(keep) == len(rows) and not bad:
                continue
            buf = _csv_text(fields, keep)
            write_atomic(path, buf)

    # ---- sweeps
    def record_sweep(self, name: str, hashes: list[str], source: str = "") -> None:
        """Add `hashes` to the sweep's list (kept in order, no repeats); read-merge-write under a
        lock file, so runs joining one sweep from several processes all stay listed."""
        path = self.root / "sweeps" / f"{check_sweep_name(name)}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path.parent / f".{name}.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                old = self.sweep_hashes(name) if path.is_file() else []
            except Damaged:  # warned; kept aside (<name>.json.damaged), the sweep file being run rebuilds the list
                self.set_aside(path)
                old = []
            seen = set(old)
            merged = old + [h for h in dict.fromkeys(hashes) if h not in seen]   # sets: O(n), not O(n^2)
            if merged != old or not path.is_file():
                write_json(path, {"name": name, "source": source, "hashes": merged})
        finally:
            os.close(fd)

    def sweeps(self) -> list[str]:
        d = self.root / "sweeps"
        return sorted(p.stem for p in d.glob("*.json")) if d.is_dir() else []

    def sweep_hashes(self, name: str, warn: bool = True) -> list[str]:
        path = self.root / "sweeps" / f"{check_sweep_name(name)}.json"
        if not path.is_file():
            raise FileNotFoundError(f"sweep {name!r}: not in store {self.root}; known: {', '.join(self.sweeps()) or 'none'}")
        try:
            hashes = _read(path, json.loads, dict, "JSON").get("hashes")
            if not isinstance(hashes, list) or not all(isinstance(x, str) for x in hashes):
                raise Damaged(path, "no list of hashes")
        except Damaged as e:
            if warn:
                warn_damaged(e)
            raise
        return hashes


def _csv_rows(path: Path) -> tuple[list[str], list[dict], int]:
    """(fields, complete rows, number of incomplete ones) of a metrics file. A row cut short by
    a kill has no final newline, too few or too many fields, or a step that is not a number."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise Damaged(path, "not UTF-8 text") from None
    lines = text.splitlines(keepends=True)
    cut = 1 if lines and not lines[-1].endswith("\n") and len(lines) > 1 else 0
    try:
        reader = csv.DictReader(lines[:len(lines) - cut])
        fields, got = reader.fieldnames or [], list(reader)
    except csv.Error as e:
        raise Damaged(path, f"not valid CSV ({e})") from None
    rows = [r for r in got if None not in r and None not in r.values() and (r.get("step") in (None, "") or _is_num(r["step"]))]
    return fields, rows, len(got) - len(rows) + cut


def _is_num(v) -> bool:
    try:
        float(v)
        return True
    except (TypeError, ValueError):
        return False


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


def beats_baseline(result: dict) -> Optional[bool]:
    """Whether a finished run's primary metric beats the task's trivial baseline; None if undefined."""
    key, m = result.get("primary"), result["metrics"]
    if result["status"] != "done" or key not in result.get("baseline", {}) or key not in m:
        return None
    return m[key] < result["baseline"][key] if result["mode"] == "min" else m[key] > result["baseline"][key]
