"""Sweep files (W&B sweep shape) and the local executor.

    name: default
    method: grid                      # grid | random (random needs run_cap)
    command: [rnnbench, train, "${args_no_hyphens}"]   # lets `wandb sweep` / `wandb agent` run it too
    parameters:
      task: {values: [copy, adding]}  # a string for a section loads its preset
      task.T: {value: 20}
      model: {values: [{cell: lstm, forget_bias: 1.0}, {cell: gru}]}   # dicts merge into the section
      seed: {values: [0, 1, 2]}

Keys apply in file order, whole sections first. Nested `parameters:` blocks name sub-keys.
"""
from __future__ import annotations

import errno
import itertools
import math
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

import torch
import yaml
from tqdm import tqdm

from bench.config import SECTIONS, RunConfig, load_yaml, merge, parse_overrides, resolve, set_key, to_overrides
from bench.packed import PackSize, groups, is_packed_checkpoint
from bench.schema import ConfigError, fmt_value
from bench.store import FINISHED, Store, check_sweep_name, write_atomic
from bench.tracking import own_service
from bench.worker import Worker, record_exit, wait_any
from models.registry import cell_class

DISK_FULL = 75  # exit code of `rnnbench train` stopped by a full store disk (sysexits EX_TEMPFAIL)
DISTRIBUTIONS = ("uniform", "int_uniform", "log_uniform_values", "normal", "q_uniform", "categorical")


def _flatten(params: dict, prefix: str = "") -> list[tuple[str, dict]]:
    if not isinstance(params, dict):
        where = f"parameters.{prefix}parameters" if prefix else "parameters"
        raise ConfigError(f"{where.replace('.parameters.parameters', '.parameters')}: expected a mapping of "
                          f"key: {{value|values|distribution}}, got a {type(params).__name__}")
    out = []
    for key, spec in params.items():
        if not isinstance(spec, dict):
            raise ConfigError(f"parameters.{prefix}{key}: expected a mapping with value/values/distribution")
        if "parameters" in spec:
            out += _flatten(spec["parameters"], f"{prefix}{key}.")
        else:
            if not ({"value", "values", "distribution", "min"} & set(spec)):
                raise ConfigError(f"parameters.{prefix}{key}: needs one of value, values, distribution")
            _check_spec(prefix + key, spec)
            out.append((prefix + key, spec))
    # whole sections (presets or dicts) first, then the finer keys, each in file order
    return sorted(out, key=lambda kv: kv[0] not in SECTIONS)


def _check_spec(key: str, spec: dict) -> None:
    """Refuse a parameter spec that cannot be drawn from, naming the key."""
    if "value" in spec:
        return
    if "values" in spec:
        values = spec["values"]
        if not isinstance(values, list) or not values:
            raise ConfigError(f"parameters.{key}.values: invalid value {values!r}; allowed: a non-empty list")
        probs = spec.get("probabilities")
        if probs is not None and (not isinstance(probs, list) or len(probs) != len(values) or
                                  not all(isinstance(p, (int, float)) and p >= 0 for p in probs) or not sum(probs)):
            raise ConfigError(f"parameters.{key}.probabilities: invalid value {probs!r}; allowed: "
                              f"{len(values)} numbers >= 0, not all 0")
        return
    dist = spec.get("distribution", "uniform")
    if dist not in DISTRIBUTIONS[:-1]:
        raise ConfigError(f"parameters.{key}.distribution: invalid value {dist!r}; allowed: {', '.join(DISTRIBUTIONS[:-1])}")
    if dist == "normal":
        return
    for end in ("min", "max"):
        v = spec.get(end)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or \
                (dist == "int_uniform" and not isinstance(v, int)):
            kind = "an integer" if dist == "int_uniform" else "a finite number"
            raise ConfigError(f"parameters.{key}.{end}: invalid value {v!r}; allowed: {kind} ({dist})")
    if spec["min"] > spec["max"]:
        raise ConfigError(f"parameters.{key}.min: invalid value {spec['min']!r}; allowed: a number <= max ({spec['max']!r})")
    if dist == "log_uniform_values" and spec["min"] <= 0:
        raise ConfigError(f"parameters.{key}.min: invalid value {spec['min']!r}; allowed: a number > 0 "
                          f"(log_uniform_values)")


def _sample(key: str, spec: dict, rng: random.Random):
    if "value" in spec:
        return spec["value"]
    if "values" in spec:
        probs = spec.get("probabilities")
        return rng.choices(spec["values"], weights=probs)[0] if probs else rng.choice(spec["values"])
    dist = spec.get("distribution", "uniform")
    lo, hi = spec.get("min"), spec.get("max")
    if dist == "uniform":
        return rng.uniform(lo, hi)
    if dist == "int_uniform":
        return rng.randint(lo, hi)
    if dist == "log_uniform_values":
        return math.exp(rng.uniform(math.log(lo), math.log(hi)))
    if dist == "normal":
        return rng.gauss(spec.get("mu", 0.0), spec.get("sigma", 1.0))
    if dist == "q_uniform":
        q = spec.get("q", 1.0)
        return round(rng.uniform(lo, hi) / q) * q
    raise ConfigError(f"parameters.{key}.distribution: invalid value {dist!r}; allowed: {', '.join(DISTRIBUTIONS[:-1])}")


def _apply(tree: dict, key: str, value) -> None:
    if "." in key:
        set_key(tree, key, value)
    else:
        merge(tree, {key: value})


def expand(path, overrides: list[str] = ()) -> tuple[str, list[RunConfig]]:
    """Sweep file -> (name, resolved configs), duplicates removed, in grid order."""
    spec = load_yaml(path)
    name = str(spec.get("name") or Path(path).stem)
    try:
        check_sweep_name(name)
    except ValueError as e:
        raise ConfigError(f"name: {str(e).split(': ', 1)[1]}") from None
    method = spec.get("method", "grid")
    if method not in ("grid", "random"):
        raise ConfigError(f"method: invalid value {method!r}; allowed: grid, random")
    params = _flatten(spec.get("parameters") or {})
    extra = parse_overrides(list(overrides))
    trees = []
    if method == "grid":
        for key, s in params:
            if "value" not in s and "values" not in s:
                raise ConfigError(f"parameters.{key}: grid search needs value or values, not a distribution")
        choices = [[s["value"]] if "value" in s else list(s["values"]) for _, s in params]
        for combo in itertools.product(*choices):
            tree: dict = {}
            for (key, _), value in zip(params, combo):
                _apply(tree, key, value)
            trees.append(tree)
    else:
        cap = spec.get("run_cap")
        if not isinstance(cap, int) or cap < 1:
            raise ConfigError("run_cap: random search needs an integer run_cap >= 1")
        rng = random.Random(spec.get("seed", 0))
        for _ in range(cap):
            tree = {}
            for key, s in params:
                _apply(tree, key, _sample(key, s, rng))
            trees.append(tree)
    cfgs, seen = [], set()
    for tree in trees:
        for k, v in extra:
            set_key(tree, k, v)
        cfg = resolve(tree)
        if cfg.hash not in seen:
            seen.add(cfg.hash)
            cfgs.append(cfg)
    return name, cfgs


def register(store: Store, sweep: str, cfgs: list[RunConfig]) -> None:
    """Config files first, then the sweep's list: the store knows every run of the sweep."""
    for cfg in cfgs:
        path = store.run_dir(cfg.hash) / "config.yaml"
        if not path.is_file():
            write_atomic(path, yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    store.record_sweep(sweep, [c.hash for c in cfgs])


def differences(cfgs: list[RunConfig]):
    """(cfg -> its seed and its value of every field that some run sets to another value, the
    overrides every run shares): what `sweep --dry-run` prints."""
    def flat(d, prefix=""):
        for k, v in d.items():
            yield from flat(v, f"{prefix}{k}.") if isinstance(v, dict) else [(f"{prefix}{k}", fmt_value(v))]
    over = {c.hash: to_overrides(c) for c in cfgs}
    common = set.intersection(*map(set, over.values())) if over else set()
    keys = list(dict.fromkeys(o.split("=", 1)[0] for os_ in over.values() for o in os_ if o not in common))
    keys = [k for k in keys if k != "seed"]
    every = {c.hash: dict(flat(c.to_dict())) for c in cfgs}
    return (lambda c: [f"seed={c.seed}"] + [f"{k}={every[c.hash][k]}" for k in keys if k in every[c.hash]]), \
        [o for o in (over[cfgs[0].hash] if cfgs else []) if o in common and not o.startswith("seed=")]


def only(name: str, cfgs: list[RunConfig], items: list[str]) -> list[RunConfig]:
    """The runs of a sweep whose resolved config has every `--only KEY=VALUE` (e.g. task.name=adding);
    a list VALUE, KEY=[a,b], keeps the runs that have any of its values."""
    if not items:
        return cfgs
    picked = cfgs
    for key, want in parse_overrides(list(items)):
        seen = []
        for c in cfgs:
            node = c.to_dict()
            for part in key.split("."):
                if not isinstance(node, dict) or part not in node:
                    raise ConfigError(f"--only: unknown field {key!r}; give a resolved config key, e.g. task.name")
                node = node[part]
            seen.append(node)
        wants = want if isinstance(want, list) and not any(isinstance(v, list) for v in seen) else [want]
        if not wants:
            raise ConfigError(f"--only: {key}=[] picks no run; give a value or a list of values, e.g. {key}=[a,b]")
        hits = [[v == w or str(v) == str(w) for w in wants] for v in seen]   # run x wanted value
        for i, w in enumerate(wants):
            if not any(h[i] for h in hits):
                vals = sorted({str(v) for v in seen})
                raise ConfigError(f"--only: no run of sweep {name} has {key}={w}; its values: {', '.join(vals)}")
        keep = {c.hash for c, h in zip(cfgs, hits) if any(h)}
        picked = [c for c in picked if c.hash in keep]
    return picked


# ---------------------------------------------------------------- local executor


def _busy(slot) -> bool:
    return isinstance(slot, tuple) or (isinstance(slot, Worker) and slot.unit is not None)


def _gpu_count() -> int:
    try:
        return torch.cuda.device_count()
    except Exception:
        return 0


def run_cost(cfg: RunConfig) -> float:
    """A rough relative cost of a run (about ms of one CPU thread): the executor starts the costliest
    units first, so that the sweep does not end on one long run while the other workers idle.
    Only the order of the queue depends on it (each run seeds itself): steps x (a per-step floor +
    sequence length x batch x gates x hidden^2 x layers multiply-adds / 5e6)."""
    t, m = cfg.task, cfg.model
    steps = cfg.trainer.max_steps if cfg.trainer.max_steps and cfg.trainer.max_steps > 0 else 1
    length = getattr(t, "T", 1) + 2 * getattr(t, "n_symbols", 0)
    macs = length * getattr(t, "batch_size", 1) * getattr(cell_class(m.cell), "gates", 1) * m.hidden_size ** 2
    return steps * (3 + macs * m.num_layers * (2 if m.bidirectional else 1) / 5e6)


class LocalExecutor:
    """Runs configs in persistent worker processes (bench.worker): `workers` at a time, each
    importing once and running config after config, torch threads split between them, one GPU
    per worker on a multi-GPU host (or all GPUs for one run). A run that crashes is recorded as
    failed and never stops the others; one that kills its worker gets a new worker for the next
    run. Multi-device runs (DDP relaunches its command per rank) get a fresh `rnnbench train`."""

    def __init__(self, store: Store, sweep: str, workers: int = 0, threads: int = 0,
                 gpus_per_run: str = "1", wandb_mode: Optional[str] = None, project: str = "rnnbench",
                 retry_failed: bool = False, progress: bool = True, pack: PackSize = 1):
        self.store, self.sweep, self.pack = store, sweep, pack
        self.gpus = _gpu_count()
        cores = os.cpu_count() or 1
        if self.gpus and gpus_per_run == "all":
            self.workers = 1
        elif self.gpus:
            self.workers = workers or self.gpus
        else:
            self.workers = workers or cores
        self.threads = threads or max(1, cores // self.workers)
        self.gpus_per_run, self.wandb_mode, self.project = gpus_per_run, wandb_mode, project
        self.retry_failed, self.progress = retry_failed, progress

    def _env(self, slot: int) -> dict:
        env = own_service(dict(os.environ, OMP_NUM_THREADS=str(self.threads), MKL_NUM_THREADS=str(self.threads)))
        if self.gpus and self.gpus_per_run != "all":
            env["CUDA_VISIBLE_DEVICES"] = str(slot % self.gpus)
        return env

    def _command(self, item: list[RunConfig]) -> list[str]:
        """`rnnbench train` for one run; `python -m bench.packed` for a packed group (bench/packed.py)."""
        paths = [str(self.store.run_dir(c.hash) / "config.yaml") for c in item]
        packed = len(item) > 1 or is_packed_checkpoint(self.store.checkpoint(item[0].hash))
        cmd = [sys.executable, "-m", "bench.packed", *paths] if packed else \
            [sys.executable, "-m", "bench.cli", "train", *paths]
        cmd += ["--store", str(self.store.root), "--sweep", self.sweep, "--project", self.project]
        if self.wandb_mode:
            cmd += ["--wandb", self.wandb_mode]
        if self.retry_failed:
            cmd += ["--retry-failed"]
        return cmd

    def todo(self, cfgs: list[RunConfig]) -> list[RunConfig]:
        """Unfinished runs, and failed ones with --retry-failed or when they failed on their data."""
        skip = ("done", "diverged") if self.retry_failed else FINISHED
        return [c for c in cfgs if self.store.status(c.hash) not in skip
                or (self.store.result(c.hash) or {}).get("failed_on") == "data"]

    def run(self, cfgs: list[RunConfig]) -> dict:
        register(self.store, self.sweep, cfgs)
        queue = groups(self.todo(cfgs), self.pack, self.store)   # units: a packed group, or one run
        queue.sort(key=lambda unit: -sum(map(run_cost, unit)))  # longest first: no worker waits alone at the end
        bar = self._bar(len(cfgs), len(cfgs) - sum(map(len, queue)))
        slots: list = [None] * self.workers   # per slot: a Worker, a (Popen, unit) of a DDP run, or None
        try:
            while queue or any(_busy(s) for s in slots):
                for i, s in enumerate(slots):
                    if queue and not _busy(s):
                        slots[i] = self._start(i, s, queue.pop(0))
                for i, s in enumerate(slots):
                    done = self._poll(s)
                    if done == ["disk full"]:  # left resumable; stop the sweep (one line, CLI)
                        raise OSError(errno.ENOSPC, "No space left on device", str(self.store.root))
                    if done is not None:
                        if isinstance(s, tuple):
                            slots[i] = None
                        elif s.dead() is not None or "interrupted" in done:  # it exits after one
                            s.close()
                            slots[i] = None   # replaced when the next unit starts
                        if bar is not None:
                            bar.update(len(done))
                workers = [s for s in slots if isinstance(s, Worker) and s.unit is not None]
                if workers and len(workers) == sum(_busy(s) for s in slots):
                    wait_any(workers, 0.5)
                else:
                    time.sleep(0.2)
        except KeyboardInterrupt:
            for s in slots:
                if s is not None:
                    (s[0] if isinstance(s, tuple) else s.proc).send_signal(signal.SIGTERM)
            raise
        finally:
            for s in slots:
                if isinstance(s, Worker):
                    s.close()
            if bar is not None:
                bar.close()
        return {h: self.store.status(h) for h in (c.hash for c in cfgs)}

    def _start(self, slot: int, current, unit: list[RunConfig]):
        """Start `unit` in `slot`: in its worker (a new one if it has none), or as a fresh process."""
        multi = any(c.trainer.devices > 1 or c.trainer.num_nodes > 1 for c in unit)
        if multi:  # Lightning's DDP launcher reruns the process's command line for every rank
            if isinstance(current, Worker):
                current.close()
            log = open(self.store.run_dir(unit[0].hash) / "run.log", "a")
            proc = subprocess.Popen(self._command(unit), env=self._env(slot), stdout=log,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
            log.close()
            return proc, unit
        worker = current if isinstance(current, Worker) and current.dead() is None else \
            Worker(self.store.root, self.sweep, self.wandb_mode, self.project, self._env(slot))
        packed = len(unit) > 1 or is_packed_checkpoint(self.store.checkpoint(unit[0].hash))
        worker.send(unit, {"id": unit[0].hash, "retry_failed": self.retry_failed, "packed": packed,
                           "configs": [str(self.store.run_dir(c.hash) / "config.yaml") for c in unit]})
        return worker

    def _poll(self, s) -> Optional[list[str]]:
        """Statuses of the unit `s` was running, once it ended (recording crashes); else None."""
        if isinstance(s, tuple):
            proc, unit = s
            if proc.poll() is None:
                return None
            return ["disk full"] if proc.returncode == DISK_FULL else [self._finish(c, proc.returncode) for c in unit]
        if s is None or s.unit is None:
            return None
        answer = s.answer()
        if answer is not None:
            if f"exit {DISK_FULL}" in answer["status"]:
                return ["disk full"]
            # "exit N": the run stopped as `rnnbench train` would have exited with code N
            return [self._finish(c, int(st.split()[1])) if st.startswith("exit ") else self.store.status(c.hash)
                    for c, st in zip(s.cfgs, answer["status"])]
        code = s.dead()
        if code is None:
            return None
        s.unit = None
        return [self._finish(c, code) for c in s.cfgs]

    def _finish(self, cfg: RunConfig, code: int) -> str:
        """Status of a finished run; a crash without a result is recorded as failed."""
        return record_exit(self.store, cfg, code, self.sweep)

    def _bar(self, total: int, done: int):
        if not self.progress:
            return None

        return tqdm(total=total, initial=done, desc=f"sweep {self.sweep}", unit="run", file=sys.stderr)

