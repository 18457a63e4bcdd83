"""One run: build task, data and model from a resolved config, train, test, record the result.

Re-running a config is safe: a finished run is returned as is, an interrupted one resumes from
its last checkpoint (metric rows logged after that checkpoint are dropped first), and two
processes never run the same config at once (see Store.claim).
"""
from __future__ import annotations

import contextlib
import logging
import math
import os
import time
import traceback
import warnings
from pathlib import Path
from typing import Optional

import lightning as L
import torch
import yaml
from lightning.pytorch.callbacks import EarlyStopping, Timer
from lightning.pytorch.callbacks.early_stopping import EarlyStoppingReason

from bench.checkpoints import (AtomicCheckpointIO, EvalState, FixedStateKey, PlateauOnRestart, RunCheckpoint, SaveOnStop,
                               Unreadable, clean_temp, finish_restored_fit, read_checkpoint, read_step)
from bench.config import RunConfig, reproduce_command
from bench.csv_log import AtomicCSVLogger
from bench.divergence import StopWhenExploded
from bench.provenance import environment, git_commit, load_average, with_load
from bench.ranks import GlooTeardown, rank, tell, told
from bench.schema import ConfigError
from bench.store import Store, beats_baseline, disk_full, write_atomic, write_json
from bench.tracking import agent_run, finish, wandb_logger
from models.config import ModelConfig
from models.init import uniform_all_
from models.recurrent import Recurrent
from tasks.base import Diverged
from tasks.registry import task_class

log = logging.getLogger("rnnbench")
# training loaders skip the batches a resumed epoch already did (tasks.base.SkipDone)
warnings.filterwarnings("ignore", message="You're resuming from a checkpoint that ended before the epoch ended")


def variant_tags(cfg: RunConfig) -> list[str]:
    """W&B tags: cell, task, and every model switch that differs from the defaults."""
    default = ModelConfig()
    tags = [cfg.model.cell, cfg.task.name]
    for k, v in cfg.model.__dict__.items():
        if k != "cell" and v != getattr(default, k):
            tags.append(f"{k}={v}")
    return tags


def monitor(cfg: RunConfig, task) -> tuple[str, str]:
    """(metric, mode) that picks the best checkpoint: trainer.monitor, else val/<primary metric>."""
    key = cfg.trainer.monitor or "val/" + task.primary.split("/", 1)[1]
    mode = task.mode if key.split("/", 1)[-1] == task.primary.split("/", 1)[1] else \
        ("min" if key.endswith(("loss", "ppl", "bpc")) else "max")
    return key, mode


class StopWhenSolved(FixedStateKey, EarlyStopping):
    """EarlyStopping on the task's solved threshold only: patience is infinite, so a plateau never
    stops a run. Checked at each validation; its state is in every checkpoint, so a resumed run
    stops at the same step, and one resumed from the checkpoint it stopped at stops at once."""

    def __init__(self, task):
        key, mode, threshold = task.solved_threshold()
        super().__init__(monitor=key, mode=mode, stopping_threshold=threshold, patience=math.inf,
                         check_finite=False, check_on_train_epoch_end=False, strict=True)
        self.stopped_step: Optional[int] = None

    @property
    def solved(self) -> bool:
        return self.stopping_reason == EarlyStoppingReason.STOPPING_THRESHOLD

    def on_validation_end(self, trainer, pl_module) -> None:
        super().on_validation_end(trainer, pl_module)
        if self.solved and self.stopped_step is None:
            self.stopped_step = int(trainer.global_step)

    def on_train_start(self, trainer, pl_module) -> None:
        if self.solved:  # resumed from the checkpoint written at the solving validation
            trainer.should_stop = True

    def state_dict(self) -> dict:
        return {**super().state_dict(), "stopped_step": self.stopped_step}

    def load_state_dict(self, state_dict: dict) -> None:
        super().load_state_dict(state_dict)
        self.stopped_step = state_dict.get("stopped_step")


def stop_when_solved(cfg: RunConfig, task) -> list:
    """[StopWhenSolved] when trainer.stop_when_solved is set (ConfigError if the task has no
    solved criterion), else []."""
    if not cfg.trainer.stop_when_solved:
        return []
    if task.solved_threshold() is None:
        raise ConfigError(f"trainer.stop_when_solved: task {cfg.task.name!r} has no solved criterion; "
                          f"allowed: true only for copy, adding")
    return [StopWhenSolved(task)]


def stopped(trainer) -> Optional[dict]:
    """{'reason': 'solved', 'step': N} when the run ended on its solved threshold, else None."""
    cb = next((c for c in trainer.callbacks if isinstance(c, StopWhenSolved)), None) if trainer else None
    return {"reason": "solved", "step": cb.stopped_step} if cb is not None and cb.solved else None


def last_validation(store: Store, h: str) -> dict:
    """The val/ metrics of the run's last logged validation (a run resumed from the checkpoint it
    stopped at validates no more)."""
    rows = [r for r in store.metrics(h) if any(k.startswith("val/") and r[k] not in (None, "") for k in r)]
    return {k: float(v) for k, v in rows[-1].items() if k.startswith("val/") and v not in (None, "")} if rows else {}


def make_trainer(cfg: RunConfig, run_dir: Path, loggers: list, task, result: Optional[dict] = None) -> L.Trainer:
    """`result`: the run's record so far (primary, mode, baseline), for trainer.divergence_factor."""
    t = cfg.trainer
    exploded = [StopWhenExploded(cfg, result)] if result is not None else []
    best = []
    if t.test_on == "best":
        key, mode = monitor(cfg, task)
        best = [RunCheckpoint(dirpath=run_dir / "checkpoints", filename="best", monitor=key, mode=mode,
                              save_top_k=1, enable_version_counter=False, save_last=False,
                              save_on_train_epoch_end=False)]
    val = dict(check_val_every_n_epoch=1) if t.val_every is None else \
        dict(val_check_interval=t.val_every, check_val_every_n_epoch=None)
    return L.Trainer(
        max_steps=t.max_steps, max_epochs=t.max_epochs if t.max_epochs else -1,
        accelerator=t.accelerator, devices=t.devices, strategy=t.strategy, num_nodes=t.num_nodes,
        precision=t.precision, deterministic=t.deterministic,
        gradient_clip_val=cfg.optim.grad_clip, gradient_clip_algorithm="norm",
        limit_val_batches=t.limit_val_batches, num_sanity_val_steps=0,
        reload_dataloaders_every_n_epochs=1, use_distributed_sampler=False,
        logger=loggers, log_every_n_steps=max(1, min(50, (t.val_every or 50) // 2)),
        # last.ckpt: the latest, at every validation (best first, so it records the best callback's
        # state). Saved at validation end, never train-epoch end: Lightning resumes from the latter
        # counting that epoch twice when max_epochs and max_steps are both set.
        callbacks=[*best, RunCheckpoint(dirpath=run_dir / "checkpoints", filename="last", save_top_k=1,
                                        enable_version_counter=False, save_on_train_epoch_end=False),
                   Timer(), EvalState(), GlooTeardown(), *stop_when_solved(cfg, task), *exploded,
                   SaveOnStop(), PlateauOnRestart()],
        plugins=[AtomicCheckpointIO()],  # temp file next to the target, fsync, rename (bench/checkpoints.py)
        enable_progress_bar=os.environ.get("RNNBENCH_PROGRESS", "0") == "1",
        enable_model_summary=False, default_root_dir=run_dir, **val,
    )


def model_bytes(cfg: RunConfig) -> int:
    """Upper estimate of the recurrent stack's weights + gradients + Adam moments (4 gates,
    float32), before anything is built: enough to refuse a model that cannot fit at once."""
    m = cfg.model
    dirs, h = 2 if m.bidirectional else 1, m.hidden_size
    params = sum(dirs * 4 * h * ((m.embedding_size if i == 0 else h * dirs) + h + 2) for i in range(m.num_layers))
    return 16 * params


def check_host(cfg: RunConfig) -> None:
    """Refuse, before anything is stored, a config this host cannot run."""
    gpu = cfg.trainer.accelerator == "gpu" or (cfg.trainer.accelerator == "auto" and torch.cuda.is_available())
    if cfg.trainer.accelerator == "gpu" and not torch.cuda.is_available():
        raise ConfigError("trainer.accelerator: invalid value 'gpu': this host has no GPU; allowed: cpu, auto")
    have = torch.cuda.get_device_properties(0).total_memory if gpu else \
        os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    need = model_bytes(cfg)
    if need > have:
        m = cfg.model
        raise ConfigError(f"model.hidden_size={m.hidden_size}, model.num_layers={m.num_layers}: about "
                          f"{need / 2**30:.1f} GiB for weights, gradients and optimizer state, more than the "
                          f"{have / 2**30:.1f} GiB of this host's {'GPU' if gpu else 'memory'}; allowed: a smaller model")


def run(cfg: RunConfig, store_root="results", sweep: Optional[str] = None,
        wandb_mode: Optional[str] = None, project: str = "rnnbench", retry_failed: bool = False) -> dict:
    """Run (or resume, or return) the run of `cfg` in the store; returns its result dict.

    A stored result comes back with `stored: true` (not written). The data is loaded before the
    run is claimed, so a data error raises (one line) and leaves nothing in the store; a run
    recorded as failed on its data (`failed_on: data`) is run again. A damaged result.json is set
    aside (the run resumes); temp files a killed writer left are removed. Under a multi-task SLURM
    step (DDP), a rank > 0 returns `busy` when rank 0 did not claim the run (bench.ranks)."""
    check_host(cfg)
    store = Store(store_root)
    h = cfg.hash
    d = store.run_dir(h)
    if rank() > 0:  # a DDP worker process: rank 0 holds the claim and owns the store files, and returns
        old = _stored(store, h, retry_failed)   # a finished run untrained: so does every rank SLURM started
        if old is None and not told(store.root, h):   # bench.ranks: rank 0 did not claim it (busy, stored, an error)
            return {"hash": h, "status": "busy"}
        return old if old is not None else _run(cfg, store, h, d, sweep, wandb_mode, project)
    try:
        return _claim_and_run(cfg, store, h, d, sweep, wandb_mode, project, retry_failed)
    finally:   # unless it said 'claimed' as it started fit: busy, stored, an error before fit
        tell(store.root, h, False)


def _claim_and_run(cfg, store, h, d, sweep, wandb_mode, project, retry_failed) -> dict:
    old = _stored(store, h, retry_failed)
    if old is not None:
        if sweep:  # `rnnbench train --sweep NAME` of a finished run: it joins the sweep
            store.record_sweep(sweep, [h])
        return old
    prepared = prepare(cfg)
    if sweep:  # the data loaded: list the run in the sweep (the executor listed its own already)
        store.record_sweep(sweep, [h])
    with store.claim(h) as mine:
        if not mine:
            return {"hash": h, "status": "busy"}
        clean_temp(d)  # what a killed writer left behind
        old = _stored(store, h, retry_failed)  # result() is None when missing or damaged (warned)
        if old is not None:
            return old
        if store.result(h) is not None:  # a failed run to rerun
            (d / "result.json").unlink()
        elif (d / "result.json").exists():  # damaged (warned): kept aside, the run resumes
            store.set_aside(d / "result.json")
        if store.config(h, quiet=True) is None:  # missing or damaged: this config is the truth
            write_atomic(d / "config.yaml", yaml.safe_dump(cfg.to_dict(), sort_keys=False))
        return _run(cfg, store, h, d, sweep, wandb_mode, project, prepared)


def _stored(store: Store, h: str, retry_failed: bool) -> Optional[dict]:
    """The stored result to return instead of running; None when the run is to (re)run."""
    old = store.result(h)
    if old is None or (old["status"] == "failed" and (retry_failed or old.get("failed_on") == "data")):
        return None
    return {**old, "stored": True}


def prepare(cfg: RunConfig):
    """Seed, make the task and load its data (datamodule setup): what a run does first, here so
    that data errors stop before any work. Returns (task, datamodule)."""
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    task = task_class(cfg.task.name)(cfg)
    stop_when_solved(cfg, task)   # a ConfigError before any work
    dm = task.datamodule()
    try:
        dm.setup("fit")
    except ValueError:  # ConfigError included: already one line naming the field or file
        raise
    except Exception as e:  # e.g. the hub unreachable: one line, the run is not claimed
        msg = str(e).splitlines()[0] if str(e) else ""
        raise ValueError(f"task data: {type(e).__name__}: {msg}") from e
    return task, dm


def _run(cfg, store, h, d, sweep, wandb_mode, project, prepared=None) -> dict:
    result = {"hash": h, "sweep": sweep, "task": cfg.task.name, "cell": cfg.model.cell, "seed": cfg.seed,
              "git_commit": git_commit(), "environment": environment(), "command": reproduce_command(cfg),
              "resumed_from_step": None, "error": None, "metrics": {}, "wandb_id": None}
    ckpt = store.checkpoint(h)
    try:
        step0 = read_step(ckpt) if ckpt is not None else None
    except Unreadable as e:  # recorded; set aside so that the next attempt starts over
        store.set_aside(ckpt)
        result.update(status="failed", error=str(e), step=0)
        if rank() == 0:
            write_json(d / "result.json", result)
        return result
    if rank() == 0:  # forget what was logged after the checkpoint (everything, without one)
        store.truncate_metrics(h, step0 or 0)
    result["resumed_from_step"] = step0
    # torch threads: a new run takes this process's count (OMP_NUM_THREADS, the executor's share of
    # the cores); every later attempt of the run reuses the count of its first (README)
    before = torch.get_num_threads()
    threads = store.threads(h, before) if rank() == 0 else before
    torch.set_num_threads(threads)
    result["threads"] = threads
    live, t0 = {}, time.time()  # the trainer, W&B logger and training seconds, as soon as known
    load0 = load_average()      # the machine's load as training starts (environment.load)
    try:
        _fit_and_test(cfg, store, h, d, sweep, wandb_mode, project, (ckpt, step0, prepared), result, live)
    except Diverged as e:
        result.update(status="diverged", error=str(e))
    except OSError as e:
        if disk_full(e):  # not the run's fault: leave it resumable, say so once (CLI)
            raise
        _record_failure(d, result, e)
    except Exception as e:  # recorded, never raised: one run must not stop a sweep
        _record_failure(d, result, e)
    finally:
        finish(live.get("wb"))
        torch.set_num_threads(before)
    trainer = live.get("trainer")
    if result.get("status") == "interrupted":
        return result
    # ddp_spawn trains in child processes: the parent's trainer never counts their steps
    result["step"] = max(int(trainer.global_step) if trainer else 0, store.checkpoint_step(h) or 0)
    train_s = live.get("train_s")
    if train_s is None and trainer is not None:
        train_s = _train_time(trainer)
    result["wall_time_s"] = round(train_s or (time.time() - t0), 3)
    result["beats_baseline"] = beats_baseline(result)
    result["environment"] = with_load(result["environment"], load0)
    result["finished_at"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    if rank() == 0 and (trainer is None or trainer.global_rank == 0):
        write_json(d / "result.json", result)
    return result


def _record_failure(d: Path, result: dict, e: Exception) -> None:
    with contextlib.suppress(OSError), (d / "run.log").open("a") as f:
        f.write(traceback.format_exc())
    result.update(status="failed", error=f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")


def _fit_and_test(cfg, store, h, d, sweep, wandb_mode, project, resume, result, live) -> None:
    """Build, fit (from `ckpt` if given), test; fills `result`, and `live` with trainer and logger."""
    ckpt, step0, prepared = resume
    task, dm = prepared or prepare(cfg)
    if getattr(dm, "info", None):
        result["data"] = dm.info
    module = task.module(dm)
    if cfg.model.init_range is not None:
        uniform_all_(module, cfg.model.init_range)
    pretrained = task.pretrained(module)   # after init_range, so that it is not overwritten
    if pretrained:
        result["pretrained"] = pretrained
    result.update(primary=task.primary, mode=task.mode, baseline=task.baseline(),
                  params=sum(p.numel() for p in module.parameters()))
    if val_baseline := task.val_baseline():   # the divergence bound's; synthetic tasks: none (the test one)
        result["val_baseline"] = val_baseline
    csv_logger = AtomicCSVLogger(save_dir=d, name="logs", version=len(store.metric_files(h)))
    wb = wandb_logger(d, h, cfg.to_dict(), mode=wandb_mode, project=project, group=sweep,
                      name=f"{cfg.model.cell}-{cfg.task.name}-s{cfg.seed}-{h[:6]}", tags=variant_tags(cfg))
    result["wandb_id"] = wb.experiment.id if wb else None
    if wb and agent_run():  # started by `wandb agent`: its run and sweep (the store and hash stay ours)
        result["wandb_sweep_id"] = agent_run()[1]
    live["wb"] = wb
    trainer = live["trainer"] = make_trainer(cfg, d, [csv_logger] + ([wb] if wb else []), task, result)
    tell(store.root, h, True)   # rank 0, set up: the other ranks may start (bench.ranks)
    trainer.fit(module, datamodule=dm, ckpt_path=str(ckpt) if ckpt else None, weights_only=True)
    result["implementation"] = implementation(module, trainer)
    if trainer.interrupted:  # Ctrl-C / SIGTERM: leave it interrupted, to resume later
        result.update(status="interrupted", step=int(trainer.global_step))
        return
    if ckpt is not None and trainer.global_step == step0:  # resumed from the final checkpoint
        finish_restored_fit(trainer)
    # read now: testing a best.ckpt restores the Timer's state as it was at that checkpoint
    live["train_s"] = _train_time(trainer)
    result["device"] = device_name(trainer)
    # a run resumed from its final checkpoint validates no more: the checkpoint kept the metrics
    evals = next(c for c in trainer.callbacks if isinstance(c, EvalState))
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()
               if k.startswith("val/") and v.numel() == 1} or dict(evals.val) or last_validation(store, h)
    best = next((c for c in trainer.checkpoint_callbacks if c.monitor), None)
    if best is not None:
        if not best.best_model_path:
            raise RuntimeError(f"trainer.test_on=best: no checkpoint scored on {best.monitor}")
        step = read_checkpoint(best.best_model_path)["global_step"]
        score = best.best_model_score  # None in a ddp_spawn parent: only the path comes back
        result["tested"] = {"checkpoint": "best", "step": int(step),
                            best.monitor: None if score is None else float(score)}
    tested = trainer.test(module, datamodule=dm, verbose=False,
                          ckpt_path=best.best_model_path if best is not None else None, weights_only=True)
    metrics.update({k: float(v) for k, v in (tested[0] if tested else {}).items()})
    finite = all(math.isfinite(v) for v in metrics.values())
    result.update(status="done" if finite else "diverged", metrics=metrics, solved=task.solved(metrics))
    if stopped(trainer):
        result["stopped"] = stopped(trainer)


def implementation(module, trainer, packed: Optional[int] = None) -> dict:
    """How the run computed, for fair wall times: the recurrence path of its Recurrent layers
    (`fused` torch kernels or the `custom` scan; several joined by '+'), the device type, torch
    threads, and the number of packed members (None: trained alone)."""
    paths = []
    for m in module.modules():
        if isinstance(m, Recurrent):
            path = getattr(m, "implementation", None) or ("fused" if m.fused else "custom")
            if path not in paths:
                paths.append(path)
    return {"recurrence": "+".join(paths) or None, "device": trainer.strategy.root_device.type,
            "threads": torch.get_num_threads(), "packed": packed}


def device_name(trainer) -> str:
    """Where the run trained: 'cpu', or e.g. 'cuda:0 (NVIDIA H200)', with ' x2' under 2-device DDP."""
    dev = trainer.strategy.root_device
    name = str(dev) + (f" ({torch.cuda.get_device_name(dev)})" if dev.type == "cuda" else "")
    return f"{name} x{trainer.world_size}" if trainer.world_size > 1 else name


def _train_time(trainer) -> float:
    """Training seconds of all attempts so far (Lightning's Timer, restored on resume)."""
    timer = next((c for c in trainer.callbacks if isinstance(c, Timer)), None)
    return timer.time_elapsed("train") if timer else 0.0
