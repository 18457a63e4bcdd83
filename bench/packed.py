"""Packed runs: K runs that differ only in what changes no shape train as one batched model in one
process (one bmm per step over the K members, models/packed.py).

    groups(cfgs, k, store) -> [[cfg, ...], ...]        what `rnnbench sweep FILE --pack K` runs together
    run_group(cfgs, store_root, ...) -> [result, ...]  train (or resume, or return) one group
    python -m bench.packed CONFIG.yaml ... --store DIR  the same, as the sweep executor starts it

Each member is built as its unpacked run builds it (its seed, its init), fed its own data stream,
clipped by its own gradient norm and stepped by its own optimizer (the losses are summed, so no
gradients mix); it writes its own run directory, result.json, metrics CSV, checkpoint and W&B run,
under its own config hash. A member whose loss turns NaN/inf, or whose validation loss explodes
(bench/divergence.py), is recorded diverged at that step and leaves the pack; the others go on. A group killed at any point resumes from its members'
checkpoints (written at every validation) to the same numbers.

Packable (`packable`): the synthetic tasks (copy, adding) with fresh training data, the variants of
models.packed.packable_model, one device, precision 32-true or 64-true, no lr schedule,
trainer.test_on=last. Members may differ in `seed`, `task.data_seed`, the whole `optim` section
and the init switches (`recurrent_init`, `input_init`, `forget_bias`, `init_range`, `impl`), and
`trainer.stop_on_divergence`, `divergence_factor` and `stop_when_solved`; everything else must be equal. A
member that solves its task (`trainer.stop_when_solved`) is tested and recorded at that
validation, as its unpacked run stops there, and leaves the pack like a diverged one.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import itertools
import math
import os
import sys
import time
import traceback
from types import SimpleNamespace
from typing import Callable, Optional, Union

import lightning as L
import torch
import yaml

from bench.config import RunConfig, load, reproduce_command
from bench.schema import ConfigError, config_hash
from bench import packed_step
from bench.packed_records import MetricLog, StopSignal, Tracker, is_packed_checkpoint, save_checkpoint

__all__ = ["PackSize", "auto_size", "groups", "is_packed_checkpoint", "pack_key", "packable", "run_group",
           "trains_on_gpu"]
from bench.store import Store, beats_baseline, disk_full, write_atomic, write_json
from bench.provenance import environment, git_commit, load_average, with_load
from bench.train import last_validation, variant_tags
from models.init import uniform_all_
from models.packed import has_packed_kernel, packable_model, recurrence
from tasks.registry import task_class
from tasks.synthetic import SyntheticTask

# fields members may differ in: none of them changes a shape or the training loop
FREE = {"": ("seed",), "task": ("data_seed",), "model": ("recurrent_init", "input_init", "forget_bias",
                                                         "init_range", "impl"),
        "trainer": ("stop_on_divergence", "divergence_factor", "stop_when_solved")}
AUTO_CPU, AUTO_GPU = 8, 64   # --pack auto: runs a group on CPU (cells with a C++ packed scan), per GPU
PackSize = Union[int, Callable[[RunConfig], int]]   # --pack K, or auto_size's rule per run


def packable(cfg: RunConfig) -> Optional[str]:
    """None when `cfg` can train in a packed group; else why not (one line)."""
    t, o = cfg.trainer, cfg.optim
    if not issubclass(task_class(cfg.task.name), SyntheticTask):
        return f"task {cfg.task.name} (packable: the synthetic tasks copy, adding)"
    if not cfg.task.fresh_data:
        return "task.fresh_data=false"
    why = packable_model(cfg.model)
    if why:
        return why
    for key, ok in (("devices", t.devices == 1), ("num_nodes", t.num_nodes == 1),
                    ("precision", t.precision in ("32-true", "64-true")), ("test_on", t.test_on == "last"),
                    ("max_epochs", t.max_epochs is None)):
        if not ok:
            return f"trainer.{key}={getattr(t, key)}"
    if o.lr_decay is not None or o.plateau_factor is not None:
        return "an lr schedule"
    if o.adagrad_reset:
        return "optim.adagrad_reset"
    return None


def pack_key(cfg: RunConfig) -> str:
    """Equal for configs that may share a group: the config less the fields members may differ in."""
    d = copy.deepcopy(cfg.to_dict())
    d.pop("optim")
    for section, keys in FREE.items():
        for k in keys:
            (d[section] if section else d).pop(k, None)
    return config_hash(d)


def trains_on_gpu(cfg: RunConfig, gpu: bool) -> bool:
    """Whether the run trains on a GPU where one is visible to it (`gpu`), as `_device` decides."""
    return cfg.trainer.accelerator == "gpu" or (cfg.trainer.accelerator == "auto" and gpu)


def auto_size(gpu: bool) -> Callable[[RunConfig], int]:
    """`--pack auto`, per run, where a GPU is visible to it (`gpu`) or not: 64 runs a group for a
    run that trains on GPU; on CPU 8 for a cell with a C++ packed scan (has_packed_kernel) and 1
    (alone) for the others, whose members each run their own kernel: bench/benchmarks/packed.py
    measured LSTM packs at 0.92x the runs alone."""
    return lambda cfg: AUTO_GPU if trains_on_gpu(cfg, gpu) else AUTO_CPU if has_packed_kernel(cfg.model) else 1


def groups(cfgs: list[RunConfig], k: Union[int, Callable[[RunConfig], int]],
           store: Store) -> list[list[RunConfig]]:
    """`cfgs` in groups of at most `k` packable, mutually packable runs at the same checkpoint step,
    in first-appearance order; every other run alone. `k` may be a function of the run (`auto_size`).
    A run with an unpacked (Lightning) checkpoint stays alone so that it resumes where it was; one
    with a packed checkpoint never goes unpacked."""
    size = k if callable(k) else lambda cfg: k
    if not callable(k) and (not isinstance(k, int) or k < 1):
        raise ConfigError(f"--pack: invalid value {k!r}; allowed: an integer >= 1")
    out, open_ = [], {}
    for cfg in cfgs:
        ckpt = store.checkpoint(cfg.hash)
        packed_ckpt = ckpt is not None and is_packed_checkpoint(ckpt)
        if packable(cfg) is not None or (ckpt is not None and not packed_ckpt) \
                or (size(cfg) == 1 and not packed_ckpt):
            out.append([cfg])
            continue
        key = (pack_key(cfg), store.checkpoint_step(cfg.hash))
        group = open_.get(key)
        if group is None or len(group) >= size(cfg):
            group = open_[key] = []
            out.append(group)
        group.append(cfg)
    return out


def run_group(cfgs: list[RunConfig], store_root="results", sweep: Optional[str] = None,
              wandb_mode: Optional[str] = None, project: str = "rnnbench",
              retry_failed: bool = False) -> list[dict]:
    """Train (or resume, or return) the runs of one packed group; results in the order of `cfgs`."""
    for cfg in cfgs:
        why = packable(cfg)
        if why is not None:
            raise ConfigError(f"run {cfg.hash}: not packable: {why}")
    if len({pack_key(c) for c in cfgs}) > 1:
        raise ConfigError("packed group: configs differ in more than seed, data_seed, optim and init")
    store = Store(store_root)
    if sweep:  # as bench.train.run: the group's runs join the sweep's list
        store.record_sweep(sweep, [c.hash for c in cfgs])
    out, todo = {}, []
    with contextlib.ExitStack() as claims:
        for cfg in cfgs:
            h, d = cfg.hash, store.run_dir(cfg.hash)
            if not claims.enter_context(store.claim(h)):
                out[h] = {"hash": h, "status": "busy"}
                continue
            old = store.result(h)
            if old is not None and not (retry_failed and old["status"] == "failed"):
                out[h] = {**old, "stored": True}   # as bench.train returns a stored result
                continue
            if old is not None:
                (d / "result.json").unlink()
            if not (d / "config.yaml").is_file():
                write_atomic(d / "config.yaml", yaml.safe_dump(cfg.to_dict(), sort_keys=False))
            todo.append(cfg)
        # members at one checkpoint step and one torch thread count (their first attempt's, as
        # bench.train: threads.json) train together
        before = torch.get_num_threads()
        key = {c.hash: (store.checkpoint_step(c.hash) or 0, store.threads(c.hash, before)) for c in todo}
        for step, threads in sorted(set(key.values())):
            torch.set_num_threads(threads)
            try:
                out.update(_train([c for c in todo if key[c.hash] == (step, threads)], store, sweep, wandb_mode, project))
            finally:
                torch.set_num_threads(before)
    return [out[c.hash] for c in cfgs]


class _Member:
    """One run of the group: its module, data, optimizer and records, as its unpacked run has them."""

    def __init__(self, cfg: RunConfig, store: Store, k: int, device, dtype, sweep, wandb_mode, project, load0):
        self.cfg, self.h, self.d = cfg, cfg.hash, store.run_dir(cfg.hash)
        self.load0 = load0   # the machine's load as the group starts (environment.load)
        ckpt = store.checkpoint(self.h)
        self.step0 = store.checkpoint_step(self.h)
        if ckpt is not None and not is_packed_checkpoint(ckpt):
            raise RuntimeError(f"run {self.h}: its checkpoint was written by an unpacked run")
        store.truncate_metrics(self.h, self.step0 or 0)   # rows after the checkpoint (all, without one)
        self.result = {"hash": self.h, "sweep": sweep, "task": cfg.task.name, "cell": cfg.model.cell,
                       "seed": cfg.seed, "git_commit": git_commit(), "environment": environment(),
                       "command": reproduce_command(cfg),
                       "resumed_from_step": self.step0, "error": None, "metrics": {}, "wandb_id": None,
                       "implementation": {"recurrence": None, "device": str(device),
                                          "threads": torch.get_num_threads(), "packed": k}}
        L.seed_everything(cfg.seed, workers=True, verbose=False)
        self.task = task_class(cfg.task.name)(cfg)
        self.dm = self.task.datamodule()
        self.module = self.task.module(self.dm)
        if cfg.model.init_range is not None:
            uniform_all_(self.module, cfg.model.init_range)
        self.result.update(primary=self.task.primary, mode=self.task.mode, baseline=self.task.baseline(),
                           params=sum(p.numel() for p in self.module.parameters()))
        val_baseline = self.task.val_baseline()   # the divergence bound's (bench/divergence.py)
        if val_baseline:
            self.result["val_baseline"] = val_baseline
        self.module.to(device=device, dtype=dtype)
        self.result["implementation"]["recurrence"] = f"packed-{recurrence(device, self.module.rnn)}"
        self.opt = self.module.configure_optimizers()
        self.params = [p for g in self.opt.param_groups for p in g["params"]]
        self.elapsed, self.stopped = 0.0, False
        if ckpt is not None:
            state = torch.load(ckpt, map_location=device, weights_only=True)
            self.module.load_state_dict(state["state_dict"])
            self.opt.load_state_dict(state["optimizer_states"][0])
            self.elapsed = float(state["packed"]["wall_time_s"])
            self.stopped = bool(state["packed"].get("stopped", False))   # solved at that validation
        self.log = MetricLog(self.d / "logs" / f"version_{len(store.metric_files(self.h))}",
                             {"config": cfg.to_dict()})
        self.wb = Tracker(self.d, self.h, cfg.to_dict(), mode=wandb_mode, project=project, group=sweep,
                          name=f"{cfg.model.cell}-{cfg.task.name}-s{cfg.seed}-{self.h[:6]}",
                          tags=variant_tags(cfg))
        self.result["wandb_id"] = self.h if self.wb.run is not None else None
        self.val: dict = last_validation(store, self.h) if self.stopped else {}
        self.test: dict = {}

    def loader(self, split: str, epoch: int = 0):
        # the task's own datamodule, with the little of a trainer it reads (epoch, rank 0 of 1)
        self.dm.trainer = SimpleNamespace(current_epoch=epoch, global_rank=0, world_size=1)
        return getattr(self.dm, f"{split}_dataloader")()

    def add(self, row: dict) -> None:
        self.log.add(row)
        self.wb.log(row)

    def checkpoint(self, step: int, epoch: int, group: list[str], wall: float) -> None:
        self.log.flush()
        save_checkpoint({"global_step": step, "epoch": epoch, "state_dict": self.module.state_dict(),
                         "optimizer_states": [self.opt.state_dict()], "lr_schedulers": [],
                         "hyper_parameters": {"config": self.cfg.to_dict()}, "rng_torch": torch.get_rng_state(),
                         "packed": {"members": group, "wall_time_s": wall, "stopped": self.stopped}},
                        self.d / "checkpoints" / "last.ckpt")

    def finish(self, status: str, step: int, wall: float, error: Optional[str] = None) -> dict:
        r = self.result
        r.update(status=status, step=step, wall_time_s=round(wall, 3))
        if error is not None:
            r["error"] = error
        r["beats_baseline"] = beats_baseline(r)
        r["environment"] = with_load(r["environment"], self.load0)
        r["finished_at"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        self.log.flush()
        self.wb.finish()
        write_json(self.d / "result.json", r)
        return r


def _device(cfg: RunConfig):
    acc = cfg.trainer.accelerator
    if acc == "gpu" or (acc == "auto" and torch.cuda.is_available()):
        return torch.device("cuda", 0)
    return torch.device("cpu")


def _train(cfgs: list[RunConfig], store: Store, sweep, wandb_mode, project) -> dict:
    c0 = cfgs[0]
    device = _device(c0)
    dtype = torch.float64 if c0.trainer.precision == "64-true" else torch.float32
    if device.type == "cuda":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # as Lightning's deterministic mode
    torch.use_deterministic_algorithms(c0.trainer.deterministic)
    load0 = load_average()
    members = [_Member(c, store, len(cfgs), device, dtype, sweep, wandb_mode, project, load0) for c in cfgs]
    results, t0 = {}, time.perf_counter()
    alive = list(members)
    step = members[0].step0 or 0
    wall = lambda m: m.elapsed + time.perf_counter() - t0  # noqa: E731
    try:
        with StopSignal() as stop:
            step = _fit(alive, step, results, device, dtype, wall, stop)
        if alive:
            packed_step.evaluate(alive, "test", math.ceil(step / (c0.trainer.val_every or 100)), step, device, dtype)
        for m in alive:
            metrics = {**m.val, **m.test}
            status = "done" if all(math.isfinite(v) for v in metrics.values()) else "diverged"
            m.result.update(metrics=metrics, solved=m.task.solved(metrics))
            results[m.h] = m.finish(status, step, wall(m))
    except Exception as e:  # recorded for every member still training, never raised (as bench.train)
        if disk_full(e):   # ... except a full disk: every member stays resumable, the sweep stops
            raise
        error = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        for m in alive:
            if m.h not in results:
                with (m.d / "run.log").open("a") as f:
                    f.write(traceback.format_exc())
                results[m.h] = m.finish("failed", max(step, m.step0 or 0), wall(m), error)
    finally:
        for m in members:
            m.wb.finish()
    return results


def _forward(members, x):
    """The members' SequenceModule forward, packed -> logits (K, B, T, O) (bench/packed_step.py)."""
    return packed_step.forward(members, x)


def _fit(alive: list, step: int, results: dict, device, dtype, wall, stop: StopSignal) -> int:
    """Train to max_steps; validation + checkpoints every epoch (= trainer.val_every steps), and
    at the step a SIGTERM came (then the signal goes on to its earlier handler)."""
    t = alive[0].cfg.trainer
    E, S = t.val_every or 100, t.max_steps
    every = max(1, min(50, (t.val_every or 50) // 2))     # as bench.train's log_every_n_steps
    group = [m.h for m in alive]
    opt = packed_step.Optimizers(alive)
    _stop_solved(alive, [m for m in alive if m.stopped], opt, results, step, wall, device, dtype)
    while step < S and alive:
        epoch = step // E
        batches = {m.h: itertools.islice(packed_step.train_batches(m, epoch), step % E, None) for m in alive}
        for _ in range(E - step % E):   # resumed mid-epoch: its remaining batches
            if step >= S or not alive:
                break
            if stop.received:
                for m in alive:
                    m.checkpoint(step, epoch, group, wall(m))
                stop.deliver()
            x, y = packed_step.batch([next(batches[m.h]) for m in alive], device, dtype)
            opt.zero_grad()
            logits = _forward(alive, x)
            loss = packed_step.losses(alive, logits, y)
            kept = packed_step.drop_diverged(alive, loss.detach(), opt, results, step, wall)
            if kept:
                (loss if len(kept) == len(loss) else loss[kept]).sum().backward()
                _own_grads(opt.params)
                opt.clip_and_step()
            if (step + 1) % every == 0:
                packed_step.log_train(alive, kept, loss.detach(), logits.detach(), y, epoch, step)
            step += 1
        if step % E == 0 and alive:
            packed_step.evaluate(alive, "val", epoch, step - 1, device, dtype)
            packed_step.drop_exploded(alive, opt, results, step, wall)
            for m in alive:
                m.stopped = m.stopped or packed_step.solved(m)
                m.checkpoint(step, epoch, group, wall(m))
            _stop_solved(alive, [m for m in alive if m.stopped], opt, results, step, wall, device, dtype)
    return step


def _stop_solved(alive, solved, opt, results, step, wall, device, dtype) -> None:
    """Members that solved their task stop here, as their unpacked runs would: tested on their last
    weights, recorded done (with `stopped`), and masked out of the pack; the others go on."""
    if not solved:
        return
    E = solved[0].cfg.trainer.val_every or 100
    packed_step.evaluate(solved, "test", math.ceil(step / E), step, device, dtype)
    for m in solved:
        alive.remove(m)
        opt.drop(m)
        metrics = {**m.val, **m.test}
        status = "done" if all(math.isfinite(v) for v in metrics.values()) else "diverged"
        m.result.update(metrics=metrics, solved=m.task.solved(metrics), stopped={"reason": "solved", "step": step})
        results[m.h] = m.finish(status, step, wall(m))


def _own_grads(params) -> None:
    """Give each parameter a gradient of its own. Stacking hands the members views of one gradient,
    and a gradient that reaches two parameters (b_ih + b_hh) can land on both as the same tensor,
    which in-place clipping would then scale twice."""
    seen = set()
    for p in params:
        if p.grad is None:
            continue
        ptr = p.grad.data_ptr()            # the members' slices of one stacked gradient never alias
        if ptr in seen:
            p.grad = p.grad.clone()
        else:
            seen.add(ptr)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.packed", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("configs", nargs="+", help="resolved run configs (config.yaml of each member)")
    ap.add_argument("--store", default="results")
    ap.add_argument("--sweep", default=None)
    ap.add_argument("--project", default="rnnbench")
    ap.add_argument("--wandb", choices=("online", "offline", "disabled"), default=None)
    ap.add_argument("--retry-failed", action="store_true")
    a = ap.parse_args(argv)
    try:
        cfgs = [load(p) for p in a.configs]
        results = run_group(cfgs, a.store, a.sweep, a.wandb, a.project, a.retry_failed)
    except ConfigError as e:
        print(f"python -m bench.packed: error: {e}", file=sys.stderr)
        return 2
    for r in results:
        print(f"run {r['hash']}: {r['status']}  ->  {Store(a.store).run_dir(r['hash'])}")
    return 0 if all(r["status"] in ("done", "diverged", "busy") for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
