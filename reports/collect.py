"""Read runs from the result store (and optionally W&B) and group them into tasks and variants.

* A *task* is a task name plus its resolved task config (the whole `task` section).
* A *variant* is a resolved run config minus `seed`: its runs are the seeds of one setting.
  Its label names the config keys that differ across everything being reported, e.g.
  `lstm forget_bias=0.0`; keys at their default value and keys a named cell fixes
  (e.g. `input_gate` for `lstm_nig`) are left out of the label unless that makes labels clash.
* Statistics use only runs with status `done` and a finite primary metric. Every other run
  (diverged, failed, interrupted, running, pending) is kept and listed, never averaged in.
* A run recorded `done` whose loss (mode min) is finite but beyond trainer.divergence_factor x its
  task's baseline is reported `diverged` (`exploded`): its loss blew up without turning NaN.
"""
from __future__ import annotations

import copy
import functools
import json
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Union

from bench.config import resolve
from bench.divergence import EXPLODED, exploded as exploded_loss
from bench.schema import ConfigError, config_hash, fmt_value, parse_value
from bench.store import Damaged, Store
from models.registry import CELLS
from reports import stats
from reports.baselines import exact_baseline
from tasks.registry import task_class

SECTION_ORDER = ("model", "optim", "trainer", "seed")


def exploded(result: Optional[dict], config: Optional[dict] = None) -> Optional[str]:
    """Why a run recorded `done` diverged all the same (one line), else None: its primary metric,
    a loss (mode min), is finite but beyond trainer.divergence_factor (default EXPLODED, also for
    runs stored before the field; null = off, as for the runner) x the task's baseline of that
    metric (bench.divergence)."""
    r = result or {}
    key = r.get("primary") or "test/loss"
    factor = ((config or {}).get("trainer") or {}).get("divergence_factor", EXPLODED)
    why = exploded_loss(key, (r.get("metrics") or {}).get(key), (r.get("baseline") or {}).get(key), factor) \
        if r.get("mode", "min") == "min" else None
    return f"{why}: finite but exploded (the runner recorded it done)" if why else None


# ---------------------------------------------------------------- records


@dataclass
class Run:
    hash: str
    config: dict                    # resolved config (config.yaml)
    result: Optional[dict]          # result.json, None while pending/running/interrupted
    status: str                     # done | failed | diverged | running | interrupted | pending
    source: str = "store"           # "store" or "wandb"
    rows: Optional[Callable[[], list]] = None   # step-metric rows (loaded lazily)
    note: str = ""                  # why a run recorded done is reported diverged (`exploded`)

    def __post_init__(self):
        why = exploded(self.result, self.config) if self.status == "done" else None
        if why:
            self.status, self.note = "diverged", why

    @property
    def seed(self):
        return self.config.get("seed")

    @property
    def step(self):
        return (self.result or {}).get("step")

    @property
    def error(self) -> str:
        return self.note or (self.result or {}).get("error") or ""

    def metric(self, key: str) -> Optional[float]:
        v = ((self.result or {}).get("metrics") or {}).get(key)
        return float(v) if isinstance(v, (int, float)) else None

    def metric_rows(self) -> list[dict]:
        return self.rows() if self.rows else []


@dataclass
class Variant:
    key: str                        # hash of the config minus seed
    config: dict                    # config minus seed
    runs: list[Run]
    label: str = ""
    label_keys: tuple = ()          # the config keys (besides model.cell) its label names
    primary: str = "test/loss"

    def usable(self, metric: Optional[str] = None) -> list[Run]:
        """Finished runs with a finite value of `metric`: the only ones that enter statistics."""
        metric = metric or self.primary
        return [r for r in self.runs
                if r.status == "done" and r.metric(metric) is not None and math.isfinite(r.metric(metric))]

    def excluded(self) -> list[Run]:
        ok = {r.hash for r in self.usable()}
        return [r for r in self.runs if r.hash not in ok]

    def values(self, metric: Optional[str] = None) -> list[float]:
        metric = metric or self.primary
        return [r.metric(metric) for r in self.usable(metric)]

    def summary(self, metric: Optional[str] = None) -> stats.Summary:
        return stats.summarize(self.values(metric))

    @property
    def seeds(self) -> list:
        return sorted(r.seed for r in self.runs)

    @property
    def params(self) -> Optional[int]:
        ps = sorted({(r.result or {}).get("params") for r in self.runs} - {None})
        return ps[0] if ps else None

    def timed(self) -> list[Run]:
        """The usable runs that recorded a training time."""
        return [r for r in self.usable() if r.result.get("wall_time_s") is not None]

    def wall_times(self) -> list[float]:
        return [float(r.result["wall_time_s"]) for r in self.timed()]

    def implementations(self) -> list[str]:
        """How its finished runs computed (see `implementation_label`), one label each, sorted."""
        return sorted({implementation_label((r.result or {}).get("implementation")) for r in self.usable()})

    def commits(self) -> list[str]:
        return sorted({(r.result or {}).get("git_commit") for r in self.runs} - {None})


@dataclass
class TaskGroup:
    key: str
    name: str
    config: dict                    # the resolved task section
    primary: str
    mode: str                       # "min" | "max"
    baseline: dict
    variants: list[Variant] = field(default_factory=list)
    title: str = ""
    long_dependency: bool = False

    @property
    def runs(self) -> list[Run]:
        return [r for v in self.variants for r in v.runs]

    def better(self, a: float, b: float) -> bool:
        return a < b if self.mode == "min" else a > b

    def baseline_value(self) -> Optional[float]:
        v = self.baseline.get(self.primary)
        return float(v) if isinstance(v, (int, float)) else None

    def metrics(self) -> list[str]:
        """Test metrics reported by finished runs: the primary first, then the others sorted."""
        keys = {k for r in self.runs if r.status == "done" for k in ((r.result or {}).get("metrics") or {})
                if k.startswith("test/")}
        return [self.primary] + sorted(keys - {self.primary})


# ---------------------------------------------------------------- loading


def implementation_label(impl: Optional[dict]) -> str:
    """A result's `implementation` record as a short label: 'fused, cpu, 2 threads[, packed 8]'."""
    if not impl:
        return "not recorded"
    threads = impl.get("threads")
    parts = [impl.get("recurrence") or "?", impl.get("device") or "?",
             f"{threads} thread{'s' if threads != 1 else ''}" if threads else "? threads"]
    if impl.get("packed"):
        parts.append(f"packed {impl['packed']}")
    return ", ".join(parts)


def as_store(store: Union[Store, str, Path]) -> Store:
    return store if isinstance(store, Store) else Store(store)


def store_runs(store: Union[Store, str, Path], sweeps: list[str] = ()) -> list[Run]:
    """Runs of the named sweeps (all runs in the store when none are named)."""
    store = as_store(store)
    if sweeps:
        hashes: list[str] = []
        for name in sweeps:
            hashes += [h for h in store.sweep_hashes(name) if h not in hashes]  # FileNotFoundError if unknown
    else:
        hashes = store.hashes()
        if not hashes:
            raise FileNotFoundError(f"result store {store.root}: no runs (nothing to report)")
    runs = []
    for h in hashes:
        if not (store.run_dir(h) / "config.yaml").is_file():
            continue
        try:
            config = store.config(h)
        except Damaged:  # warned (one line naming the file); `rnnbench status` lists it as damaged
            continue
        runs.append(Run(h, config, exact_baseline(store.result(h), config), store.status(h), "store",
                        rows=(lambda h=h: store.metrics(h))))
    if not runs:
        raise FileNotFoundError(f"sweep(s) {', '.join(sweeps)}: no runs with a config in store {store.root}")
    return runs


# ---------------------------------------------------------------- grouping


def machine_s(r: dict) -> float:
    """A finished run's share of machine time: its recorded training time (`wall_time_s`), divided
    among the members of its packed group, each of which records the whole group's time."""
    k = (r.get("implementation") or {}).get("packed") if isinstance(r.get("implementation"), dict) \
        else r.get("implementation.packed")
    return float(r.get("wall_time_s") or 0) / max(int(k or 1), 1)


def flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _task_info(name: str, config: dict, baseline: bool = True) -> tuple[str, str, dict, bool]:
    """(primary, mode, baseline, long_dependency) from the task class (runs without result.json);
    `baseline=False` skips computing the baseline (it may load the data set)."""
    try:
        cls = task_class(name)
        try:
            baseline = cls(resolve(config)).baseline() if baseline else {}
        except Exception:
            baseline = {}
        return cls.primary, cls.mode, baseline, bool(getattr(cls, "long_dependency", False))
    except Exception:
        return "test/loss", "min", {}, False


@functools.lru_cache(maxsize=None)
def _defaults(task_name: str) -> dict:
    try:
        return flatten(resolve({"task": {"name": task_name}}).to_dict())
    except Exception:
        return {}


def _fixed_by_cell(cell) -> set:
    try:
        return {f"model.{k}" for k in CELLS[cell].fixed}
    except Exception:
        return set()


def _key_order(k: str):
    sec = k.split(".")[0]
    return (SECTION_ORDER.index(sec) if sec in SECTION_ORDER else len(SECTION_ORDER), k != "model.cell", k)


def _short_key(k: str) -> str:
    return k[len("model."):] if k.startswith("model.") else k


def group(runs: list[Run]) -> list[TaskGroup]:
    """Runs -> task groups -> variants, with labels and task titles."""
    tasks: dict[str, TaskGroup] = {}
    for run in runs:
        task_cfg = run.config.get("task") or {}
        tkey = config_hash({"task": task_cfg})
        if tkey not in tasks:
            known = any((r.result or {}).get("baseline") for r in runs
                        if config_hash({"task": r.config.get("task") or {}}) == tkey)
            primary, mode, baseline, longdep = _task_info(task_cfg.get("name", "?"), run.config, not known)
            tasks[tkey] = TaskGroup(tkey, task_cfg.get("name", "?"), task_cfg, primary, mode, baseline,
                                    long_dependency=longdep or "T" in task_cfg)
        g = tasks[tkey]
        vcfg = copy.deepcopy(run.config)
        vcfg.pop("seed", None)
        vkey = config_hash(vcfg)
        v = next((v for v in g.variants if v.key == vkey), None)
        if v is None:
            v = Variant(vkey, vcfg, [])
            g.variants.append(v)
        v.runs.append(run)
    for g in tasks.values():
        # what result.json says wins over the class defaults (the runs were made with it)
        results = [r.result for r in g.runs if r.result and r.result.get("primary")]
        if results:
            g.primary, _ = Counter(r["primary"] for r in results).most_common(1)[0]
            g.mode = Counter(r.get("mode", "min") for r in results).most_common(1)[0][0]
            bl = [r.get("baseline") for r in results if r.get("baseline")]
            if bl:
                g.baseline = bl[0]
        for v in g.variants:
            v.primary = g.primary
            v.runs.sort(key=lambda r: (r.seed if isinstance(r.seed, int) else 0, r.hash))
    groups = list(tasks.values())
    _label_variants(groups)
    _title_tasks(groups)
    return sorted(groups, key=lambda g: (g.name, g.title))


def _label_variants(groups: list[TaskGroup]) -> None:
    variants = [v for g in groups for v in g.variants]
    flat = {v.key: {k: val for k, val in flatten(v.config).items() if not k.startswith("task.")} for v in variants}
    keys = sorted({k for f in flat.values() for k in f}, key=_key_order)
    differing = [k for k in keys if len({json.dumps(f.get(k), sort_keys=True, default=str) for f in flat.values()}) > 1]

    def label_keys(v: Variant, full: bool) -> tuple:
        f = flat[v.key]
        defaults = _defaults(v.config.get("task", {}).get("name", "copy")) if not full else {}
        skip = _fixed_by_cell(f.get("model.cell")) if not full else set()
        return tuple(k for k in differing if k != "model.cell" and k not in skip
                     and (full or k not in defaults or defaults[k] != f.get(k)))

    def label(v: Variant, full: bool) -> str:
        f = flat[v.key]
        return " ".join([str(f.get("model.cell", "?"))] +
                        [f"{_short_key(k)}={fmt_value(f.get(k), 6)}" for k in label_keys(v, full)])

    for full in (False, True):
        labels = {v.key: label(v, full) for v in variants}
        keys_of = {v.key: label_keys(v, full) for v in variants}
        by_task_ok = all(len({labels[v.key] for v in g.variants}) == len(g.variants) for g in groups)
        # a label must name one setting across the whole report (solved-vs-T joins tasks by label)
        same_label_same_cfg = True
        seen: dict[str, str] = {}
        for v in variants:
            ident = json.dumps(flat[v.key], sort_keys=True, default=str)
            if seen.setdefault(labels[v.key], ident) != ident:
                same_label_same_cfg = False
        if by_task_ok and same_label_same_cfg:
            break
    for g in groups:
        counts = Counter(labels[v.key] for v in g.variants)
        for v in g.variants:
            v.label = labels[v.key] + (f" [{v.key[:6]}]" if counts[labels[v.key]] > 1 else "")
            v.label_keys = keys_of[v.key]


def _title_tasks(groups: list[TaskGroup]) -> None:
    for g in groups:
        same = [h for h in groups if h.name == g.name]
        flat = {h.key: flatten(h.config) for h in same}
        keys = sorted({k for f in flat.values() for k in f})
        differing = [k for k in keys if k != "name" and len({json.dumps(f.get(k), default=str) for f in flat.values()}) > 1]
        mine = flatten(g.config)
        shown = differing or (["T"] if "T" in mine else [])
        g.title = " ".join([g.name] + [f"{k}={fmt_value(mine.get(k), 6)}" for k in shown])


# ---------------------------------------------------------------- reference variant


def parse_reference(items: list[str]) -> dict:
    """`KEY=VALUE` pairs naming the reference variant; keys may omit `model.` (cell=lstm)."""
    out = {}
    for item in items or []:
        if "=" not in item:
            raise ConfigError(f"--reference {item!r}: expected KEY=VALUE, e.g. model.cell=lstm_vanilla")
        k, v = item.split("=", 1)
        out[k.strip()] = parse_value(v)
    return out


def _matches(flat: dict, k: str, v) -> bool:
    keys = [k] if k in flat else [x for x in flat if x.endswith("." + k)]
    if len(keys) != 1:
        return False
    have = flat[keys[0]]
    if isinstance(have, float) and isinstance(v, (int, float)) and not isinstance(v, bool):
        return math.isclose(have, float(v))
    return have == v or fmt_value(have, 6) == fmt_value(v, 6)


def find_reference(g: TaskGroup, ref: dict) -> Optional[Variant]:
    """The one variant of the task matching every KEY=VALUE; None when none does. When several
    match, the one whose label names no key beyond the given ones (so `cell=lstm` picks "lstm",
    not "lstm forget_bias=1.0"); if that is not a single one, it is an error."""
    if not ref:
        return None
    all_keys = {k for v in g.variants for k in flatten(v.config)}
    for k in ref:
        if k not in all_keys and not any(x.endswith("." + k) for x in all_keys):
            raise ConfigError(f"--reference {k}: unknown config key; e.g. model.cell, model.forget_bias, optim.lr")
    hits = [v for v in g.variants if all(_matches(flatten(v.config), k, val) for k, val in ref.items())]
    if len(hits) > 1:  # the one whose label names nothing beyond the given keys (`cell=lstm` -> "lstm")
        exact = [v for v in hits if all(any(lk == k or lk.endswith("." + k) for k in ref) for lk in v.label_keys)]
        hits = exact if len(exact) == 1 else hits
    if len(hits) > 1:
        raise ConfigError(f"--reference {' '.join(f'{k}={fmt_value(v, 6)}' for k, v in ref.items())}: matches "
                          f"{len(hits)} variants of task {g.title} ({'; '.join(h.label for h in hits)}); add keys")
    return hits[0] if hits else None
