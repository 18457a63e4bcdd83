"""Harness overhead: a Lightning training step against a bare PyTorch loop, same model and data.

    python -m bench.benchmarks.harness [--steps 300] [--repeats 3] [task=adding task.T=100 ...]

Both run the same SequenceModule, optimizer, gradient clipping and batches. The Lightning side
uses the real run setup (CSV logging, clipping by global norm, no validation). Steady-state time
per step is measured after a warm-up, repeats are interleaved, medians are printed.
"""
from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.loggers import CSVLogger

from bench import config as C
from bench.benchmarks.common import median_ms, parser, setup, table
from bench.tracking import quiet_logs
from bench.train import make_trainer
from tasks.registry import task_class

DEFAULT = ["task=adding", "task.T=100", "model.hidden_size=128", "trainer.val_every=100000"]


class StepTimer(L.Callback):
    def __init__(self, warmup: int):
        self.warmup, self.t0, self.n = warmup, None, 0

    def on_train_batch_start(self, trainer, *_):
        if trainer.global_step == self.warmup:
            self.t0 = time.perf_counter()

    def on_train_batch_end(self, trainer, *_):
        if self.t0 is not None:
            self.n += 1
            self.elapsed = time.perf_counter() - self.t0


def bare(cfg, steps: int, warmup: int) -> float:
    L.seed_everything(cfg.seed, verbose=False)
    task = task_class(cfg.task.name)(cfg)
    module = task.module(None)
    opt = module.configure_optimizers()
    opt = opt["optimizer"] if isinstance(opt, dict) else opt
    batches = first_batches(task.datamodule(), steps + warmup)
    module.train()
    for i, (x, y) in enumerate(batches):
        if i == warmup:
            t0 = time.perf_counter()
        loss, _ = task.loss_and_metrics(module(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(module.parameters(), cfg.optim.grad_clip)
        opt.step()
    return (time.perf_counter() - t0) / steps


def first_batches(dm, n):
    """The first `n` training batches, the datamodule run without a trainer, epoch after epoch."""
    class _T:  # the datamodule asks its trainer for the epoch and rank
        current_epoch, global_rank, world_size = 0, 0, 1
    dm.trainer = _T()
    out = []
    while len(out) < n:
        out += list(dm.train_dataloader())
        _T.current_epoch += 1
    return out[:n]


def lightning(cfg, steps: int, warmup: int) -> float:
    L.seed_everything(cfg.seed, verbose=False)
    task = task_class(cfg.task.name)(cfg)
    timer = StepTimer(warmup)
    with tempfile.TemporaryDirectory() as d:
        trainer = make_trainer(cfg, Path(d), [CSVLogger(d, name="logs")], task)
        trainer.callbacks.append(timer)
        trainer.limit_val_batches = 0
        trainer.fit(task.module(None), datamodule=task.datamodule())
    return timer.elapsed / timer.n


def main(argv=None):
    ap = parser("harness", __doc__)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's choice)")
    ap.add_argument("overrides", nargs="*", help=f"config overrides (default: {' '.join(DEFAULT)})")
    a = ap.parse_args(argv)
    quiet_logs()
    setup(a.threads)
    cfg = C.load(None, DEFAULT + a.overrides + [f"trainer.max_steps={a.steps + a.warmup}"])
    times = {"bare PyTorch loop": [], "Lightning (rnnbench run setup)": []}
    for _ in range(a.repeats):
        times["bare PyTorch loop"].append(bare(cfg, a.steps, a.warmup))
        times["Lightning (rnnbench run setup)"].append(lightning(cfg, a.steps, a.warmup))
    base = statistics.median(times["bare PyTorch loop"])
    print(f"harness overhead: {cfg.task.name} T={getattr(cfg.task, 'T', '-')}, {cfg.model.cell} "
          f"hidden {cfg.model.hidden_size}, batch {cfg.task.batch_size}, {a.steps} steps x {a.repeats} "
          f"(median, threads={torch.get_num_threads()})")
    print(table(["loop", "ms/step", "ratio"],
                [[name, f"{median_ms(ts):.2f}", f"{statistics.median(ts) / base:.3f}x"] for name, ts in times.items()]))
    print("target: Lightning <= 1.10x")


if __name__ == "__main__":
    main()
