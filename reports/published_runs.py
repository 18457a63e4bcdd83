"""The raw results of the published comparisons (reports/papers.py): which runs a comparison's
full sweep holds, how many of them are finished, which ones each claim needs, and the compact
copies of the store committed under `reports/published/<name>/` (bench/store_copy.py).

A claim is given a verdict only when every run of the full sweep that it needs is finished
(done, failed or diverged); until then its verdict is `pending: k of n runs of the full sweep
finished`, whatever the finished runs say.
"""
from __future__ import annotations

import functools
from collections import Counter
from pathlib import Path
from typing import Optional

import yaml

from bench.schema import ConfigError
from bench.store import FINISHED, Store
from bench.store_copy import export_plan, export_runs, seed_store
from bench.sweep import expand
from reports.claims import SWEEPS, matches
from reports.collect import flatten, machine_s

PENDING = "pending"
FULL_SWEEPS = Path(__file__).resolve().parent / "published" / "full_sweeps.yaml"


# ---------------------------------------------------------------- sweep files


def file_sweep_name(path: Path) -> str:
    spec = yaml.safe_load(Path(path).read_text()) or {}
    return str(spec.get("name") or Path(path).stem)


@functools.lru_cache(maxsize=None)
def sweep_files(name: str) -> tuple[Path, ...]:
    """Every sweep file in bench/sweeps/ whose sweep name is `name` (paper_socher has three)."""
    return tuple(p for p in sorted(SWEEPS.glob("*.yaml"))
                 if not p.name.endswith(".claims.yaml") and file_sweep_name(p) == name)


@functools.lru_cache(maxsize=None)
def _expected(name: str) -> tuple:
    seen: dict = {}
    for path in sweep_files(name):
        for cfg in expand(path)[1]:
            seen.setdefault(cfg.hash, cfg.to_dict())
    return tuple(seen.items())


def expected(name: str) -> list[dict]:
    """The runs the sweep's files give, as pending run dicts {hash, status, config, metrics}."""
    return [{"hash": h, "status": PENDING, "config": cfg, "metrics": {}} for h, cfg in _expected(name)]


def sweep_names(claims: dict) -> tuple[str, str]:
    """(full sweep name, reduced sweep name) of a claims file; a file with no `reduced` sweep gives
    the full one twice."""
    return file_sweep_name(SWEEPS / claims["full"]), file_sweep_name(SWEEPS / claims.get("reduced", claims["full"]))


def evidence_names(claims: dict) -> list[str]:
    """The sweep names of the claims file's `evidence` sweep files (reports/evidence.py)."""
    return [file_sweep_name(SWEEPS / f) for f in claims.get("evidence") or []]


def check_evidence(claims: dict) -> None:
    """ConfigError (one line) when an evidence sweep holds a run of the comparison's own sweeps: the
    store keys runs by hash, so exporting it would replace the comparison's committed run with the
    evidence store's, and the report would list a verdict run as evidence."""
    missing = [f for f in claims.get("evidence") or [] if not (SWEEPS / f).is_file()]
    if missing:
        raise ConfigError(f"{claims['name']}: evidence: no sweep file {missing[0]} in {SWEEPS}")
    own = {h for name in set(sweep_names(claims)) for h, _ in _expected(name)}
    for f, name in zip(claims.get("evidence") or [], evidence_names(claims)):
        shared = [h for h, _ in _expected(name) if h in own]
        if shared:
            raise ConfigError(f"{claims['name']}: evidence sweep {f} repeats {len(shared)} run(s) of the comparison's "
                              f"own sweeps (first: {shared[0]}); an evidence run must differ from them in its config "
                              "(e.g. trainer.max_steps)")


def with_pending(runs: list[dict], name: str) -> list[dict]:
    """`runs` plus a pending run dict for every run of the sweep that `runs` lacks."""
    have = {r["hash"] for r in runs}
    return runs + [r for r in expected(name) if r["hash"] not in have]


# ---------------------------------------------------------------- progress and pending verdicts


def progress(runs: list[dict], name: str) -> dict:
    """How far the sweep `name` is in `runs`: total, finished, per status, seeds, early stops."""
    by = {r["hash"]: r for r in runs}
    exp = expected(name)
    statuses = Counter(by[r["hash"]]["status"] if r["hash"] in by else PENDING for r in exp)
    fin = [by[r["hash"]] for r in exp if r["hash"] in by and by[r["hash"]]["status"] in FINISHED]
    return {"name": name, "total": len(exp), "finished": len(fin), "statuses": dict(sorted(statuses.items())),
            "seeds": sorted({r["config"].get("seed") for r in exp}, key=str),
            "solved_stops": sum(1 for r in fin if (r.get("stopped") or {}).get("reason") == "solved"),
            "train_s": sum(machine_s(r) for r in fin),
            "outside": sorted(set(by) - {r["hash"] for r in exp})}


def required(claim: dict, runs: list[dict]) -> list[dict]:
    """The runs among `runs` (e.g. the full sweep's `expected`) that the claim's check reads."""
    rs = [r for r in runs if matches(r, claim.get("task"))]
    if claim["kind"] == "beats_baseline":
        Ts = {int(t) for t in claim["expect"]}
        return [r for r in rs if matches(r, claim["select"]) and flatten(r["config"]).get("task.T") in Ts]
    rs = [r for r in rs if matches(r, claim["select"]) or matches(r, claim["ref"])]
    return [r for r in rs if r["config"].get("seed") == 0] if claim["kind"] == "gradflow_ratio" else rs


def pending(claim: dict, result: dict, runs: list[dict], full: str) -> dict:
    """The claim's result, or `pending` while runs of the full sweep `full` it needs are unfinished."""
    by = {r["hash"]: r for r in runs}
    need = required(claim, expected(full))
    count = lambda rs: sum(1 for r in rs if (by.get(r["hash"]) or {}).get("status") in FINISHED)  # noqa: E731
    rows = []
    for row in result.get("rows") or []:   # per T (beats_baseline): pending until that T's runs are finished
        at = [r for r in need if flatten(r["config"]).get("task.T") == row["T"]]
        k = count(at)
        rows.append(row if k == len(at) else {**row, "verdict": PENDING, "why": f"{k} of {len(at)} runs finished"})
    result = {**result, "rows": rows}
    k = count(need)
    if k == len(need):
        return result
    return {**result, "verdict": PENDING, "why": f"{k} of {len(need)} runs of the full sweep `{full}` finished"}


# ---------------------------------------------------------------- full-sweep estimates


def full_sweeps() -> dict:
    """reports/published/full_sweeps.yaml: {note, sweeps: [{file, runs, seeds, steps, hours_*, command}]}."""
    return yaml.safe_load(FULL_SWEEPS.read_text()) if FULL_SWEEPS.is_file() else {"note": "", "sweeps": []}


def estimate(claims: dict) -> Optional[dict]:
    """The full sweep's entry of full_sweeps.yaml (estimated hours, start command), if it has one."""
    return next((s for s in full_sweeps()["sweeps"] if s["file"] == claims["full"]), None)


def start_command(claims: dict) -> str:
    e = estimate(claims)
    if e:
        return e["command"]
    return " && ".join(f"RNNBENCH_DATA=/work/shared/data nice -n 19 rnnbench sweep bench/sweeps/{p.name} --workers 2 "
                       "--store results_published --wandb disabled"
                       for p in sweep_files(sweep_names(claims)[0]))


# ---------------------------------------------------------------- compact copies


def export(all_claims: list[dict], store, out_root) -> dict:
    """Copy the finished runs of every comparison's full, reduced and evidence sweeps from the working
    store into `<out_root>/<name>/` (runs/, sweeps/); every comparison's files are checked first
    (Damaged, or ConfigError for an evidence sweep that repeats a run of its own: nothing written). -> {name: {sweep: runs exported}}."""
    for c in all_claims:   # before anything is read or written
        check_evidence(c)
    dst = {c["name"]: Store(Path(out_root) / c["name"]) for c in all_claims}
    plans = {c["name"]: export_plan(Store(store), dst[c["name"]], list(dict.fromkeys([*sweep_names(c), *evidence_names(c)])))
             for c in all_claims}
    return {name: export_runs(Store(store), dst[name], [], plan) for name, plan in plans.items()}


def seed(all_claims: list[dict], out_root, store) -> dict:
    """Copy every committed compact copy's finished runs into the working store (to resume the
    full sweeps there without training them again). -> {name: counts}."""
    return {c["name"]: seed_store(Store(Path(out_root) / c["name"]), Store(store)) for c in all_claims
            if (Path(out_root) / c["name"] / "sweeps").is_dir()}
