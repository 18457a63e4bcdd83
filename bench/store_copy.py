"""Compact copies of a result store: the finished runs of some sweeps without checkpoints, W&B
files, locks or logs other than the metrics CSVs, and seeding a working store from such a copy.

    <copy>/runs/<hash>/config.yaml, result.json, logs/version_<k>/metrics.csv (every attempt, as stored)
    <copy>/sweeps/<name>.json      the sweep index (the exported hashes)
    <copy>/sweep_times.txt         the source store's lines for those sweeps, if it had any

A compact copy is itself a valid `Store`: `rnnbench sweep FILE --store COPY` returns its finished
runs without training them. `seed_store` copies its runs into a working store, so a sweep there
trains only the runs the copy does not hold (the way to resume a sweep in a fresh checkout).
"""
from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path
from typing import Optional, Union

from bench.store import FINISHED, Damaged, Store, write_atomic, write_json

KEPT = ("config.yaml", "result.json")   # plus logs/version_<k>/metrics.csv


def _as_store(s: Union[Store, str, Path]) -> Store:
    return s if isinstance(s, Store) else Store(s)


def finished(store: Store, h: str) -> bool:
    """A run with a readable config and a result.json saying done, failed or diverged."""
    return store.config(h, quiet=True) is not None and (store.result(h) or {}).get("status") in FINISHED


def copy_run(src: Store, dst: Store, h: str) -> None:
    """Copy one run's kept files; the old copy of the run (if any) is replaced. The files are
    written into `<dst>/.copying/<hash>` first and that directory renamed into runs/, so a copy
    killed half-way leaves no run directory with part of the run's files (metrics without the
    result, which a resumed sweep would take as an earlier attempt of its own)."""
    s, d = src.run_dir(h), dst.run_dir(h)
    tmp = dst.root / ".copying" / h
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    shutil.copyfile(s / "config.yaml", tmp / "config.yaml")
    for path in src.metric_files(h):
        rel = path.relative_to(s)
        (tmp / rel.parent).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, tmp / rel)
    shutil.copyfile(s / "result.json", tmp / "result.json")
    if d.exists():
        shutil.rmtree(d)
    d.parent.mkdir(parents=True, exist_ok=True)
    os.rename(tmp, d)
    with contextlib.suppress(OSError):
        tmp.parent.rmdir()


def _lines(path: Path) -> list[str]:
    try:
        return path.read_text(encoding="utf-8").splitlines() if path.is_file() else []
    except UnicodeDecodeError as e:
        raise Damaged(path, f"not UTF-8 (byte {e.object[e.start]:#04x} at offset {e.start})") from None


def _sweep_times(root: Path, names: set) -> list[str]:
    return [ln for ln in _lines(root / "sweep_times.txt") if len(ln.split()) == 4 and ln.split()[0] in names]


def _write_index(dst: Store, name: str, hashes: list[str], source: str) -> None:
    """The copy's sweep index, merged with the one it had; written directly, not through
    `Store.record_sweep`, which leaves a lock file (the copy has one writer and no locks)."""
    path = dst.root / "sweeps" / f"{name}.json"
    old = dst.sweep_hashes(name) if path.is_file() else []
    write_json(path, {"name": name, "source": source, "hashes": old + [h for h in hashes if h not in old]})
    (dst.root / "sweeps" / f".{name}.lock").unlink(missing_ok=True)


def export_runs(src, dst, sweeps: list[str], plan: Optional[dict] = None) -> dict:
    """Copy the finished runs of `sweeps` (those `src` knows) from `src` into the compact copy
    `dst`. Runs `dst` already holds and `src` lacks are kept; a run `src` has finished replaces
    its old copy. A damaged file it relies on raises Damaged before anything is written (see
    `export_plan`, which `plan` comes from if given). -> {sweep: number of runs exported}."""
    src, dst = _as_store(src), _as_store(dst)
    plan = export_plan(src, dst, sweeps) if plan is None else plan
    for name, hashes in plan.items():
        for h in hashes:
            copy_run(src, dst, h)
        if hashes:
            _write_index(dst, name, hashes, f"exported from {src.root.name}")
    lines = _sweep_times(src.root, set(plan))
    if lines:  # the source's lines for these sweeps replace the copy's
        names = {ln.split()[0] for ln in lines}
        path = dst.root / "sweep_times.txt"
        old = [ln for ln in _lines(path) if ln.split() and ln.split()[0] not in names]
        write_atomic(path, "".join(f"{ln}\n" for ln in old + lines))
    return {name: len(hashes) for name, hashes in plan.items()}


def export_plan(src, dst, sweeps: list[str]) -> dict:
    """{sweep: the finished runs `src` has of it}, having read every file the export trusts (the
    sweep indexes on both sides, the source's run files, both sweep_times.txt): Damaged (one line
    naming the file, not warned) for a damaged one."""
    src, dst = _as_store(src), _as_store(dst)
    plan = {}
    for name in sweeps:
        if name not in src.sweeps():
            continue
        hashes = src.sweep_hashes(name, warn=False)
        for h in hashes:
            src.check(h)
        if (dst.root / "sweeps" / f"{name}.json").is_file():
            dst.sweep_hashes(name, warn=False)
        plan[name] = [h for h in hashes if finished(src, h)]
    _lines(src.root / "sweep_times.txt"), _lines(dst.root / "sweep_times.txt")
    return plan


def seed_store(copy, store) -> dict:
    """Copy the finished runs of a compact copy into a working store, with their sweep indexes.
    A run the store already has in any state but pending (a result, a checkpoint, metrics, or a
    live lock) is left alone. A damaged sweep index or run file on either side raises Damaged
    (one line naming it) before anything is written. -> {"imported": n, "kept": n (already
    there), "skipped": [hash, ...]}."""
    copy, store = _as_store(copy), _as_store(store)
    counts = {"imported": 0, "kept": 0, "skipped": []}
    for name, hashes in _seed_plan(copy, store).items():
        for h in hashes:
            d = store.run_dir(h)
            if (d / "result.json").is_file():
                counts["kept"] += 1
            elif store.running(h) or store.checkpoint(h) or store.metric_files(h):
                counts["skipped"].append(h)
            else:
                copy_run(copy, store, h)
                counts["imported"] += 1
        store.record_sweep(name, hashes, source=f"seeded from {copy.root}")
    return counts


def _seed_plan(copy: Store, store: Store) -> dict:
    """{sweep: the copy's finished runs}, having read every file seeding would trust; Damaged
    (not warned) for a damaged one (`record_sweep` would overwrite a damaged index)."""
    plan = {}
    for name in copy.sweeps():
        if (store.root / "sweeps" / f"{name}.json").is_file():
            store.sweep_hashes(name, warn=False)
        hashes = copy.sweep_hashes(name, warn=False)
        for h in hashes:
            copy.check(h)
            store.check(h)
        plan[name] = [h for h in hashes if finished(copy, h)]
    return plan
