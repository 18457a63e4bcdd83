"""Harness overhead at the shapes the suite runs: a Lightning training step against a bare PyTorch
loop, and the bare loop against the fused recurrent kernel alone.

    python -m bench.benchmarks.harness [--shape default paper_copy] [--steps 300] [--repeats 5] [--quick]
    python -m bench.benchmarks.harness --shape custom task=adding task.T=100 ...   (any synthetic config)

Shapes: `default` = the default sweep's (copy T=10, LSTM 64, batch 64, Adam) and `paper_copy` =
paper_copy.yaml's LSTM (copy T=100, LSTM 40, batch 20, RMSProp, clip 1). Three loops, same
model, optimizer, clipping and data:

* fused kernel: `nn.LSTM` (the model's own) forward + backward of `out.sum()` on one fixed batch;
* bare loop: per step, make the batch (the task's generator), forward, loss, backward, clip by
  global norm, optimizer step;
* Lightning: `bench.train`'s real trainer (CSV logging, checkpoint and timer callbacks, clipping),
  the task's datamodule, validation off.

Steady-state time per step after a warm-up, in process CPU time (`--wall`: wall clock); the three loops are interleaved in each repeat and
medians are printed with ratios Lightning / bare (target <= 1.10) and bare / fused (target <= 1.3
at paper_copy's shape).
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import lightning as L
import torch

from bench import config as C
from bench.csv_log import AtomicCSVLogger
from bench.tracking import quiet_logs
from bench.train import make_trainer
from tasks.registry import task_class

SHAPES = {
    "default": ["task=copy", "task.T=10", "model.cell=lstm", "model.hidden_size=64", "task.batch_size=64",
                "optim.lr=0.005"],
    "paper_copy": ["task=copy", "task.T=100", "model.cell=lstm", "model.hidden_size=40", "task.batch_size=20",
                   "optim.name=rmsprop", "optim.lr=0.001", "optim.alpha=0.9", "optim.grad_clip=1.0"],
    "custom": [],
}
COMMON = ["trainer.val_every=100000"]
CLOCK = time.process_time   # CPU time of this process: on a shared machine, waits for a core do not count


class StepTimer(L.Callback):
    """Clock at the warm-up'th step and at the end of training (nothing per step)."""

    def __init__(self, warmup: int):
        self.warmup, self.t0, self.n = warmup, None, 0

    def on_train_batch_start(self, trainer, *_):
        if trainer.global_step == self.warmup:
            self.t0 = CLOCK()

    def on_train_end(self, trainer, *_):
        self.elapsed = CLOCK() - self.t0
        self.n = trainer.global_step - self.warmup


def _setup(cfg):
    L.seed_everything(cfg.seed, verbose=False)
    task = task_class(cfg.task.name)(cfg)
    return task, task.module(None)


def fused(cfg, steps: int, warmup: int) -> float:
    task, module = _setup(cfg)
    rnn = module.rnn.rnns[0] if module.rnn.fused else module.rnn
    x, _ = task.make(cfg.task.batch_size, torch.Generator().manual_seed(0))
    x = module.eye[x] if task.one_hot else x
    for i in range(steps + warmup):
        if i == warmup:
            t0 = CLOCK()
        out, _ = rnn(x)
        out.sum().backward()
    return (CLOCK() - t0) / steps


def bare(cfg, steps: int, warmup: int) -> float:
    task, module = _setup(cfg)
    opt = module.configure_optimizers()
    opt = opt["optimizer"] if isinstance(opt, dict) else opt
    module.train()
    params = list(module.parameters())
    for i in range(steps + warmup):
        if i == warmup:
            t0 = CLOCK()
        x, y = task.make(cfg.task.batch_size, torch.Generator().manual_seed(i))
        loss, _ = task.loss_and_metrics(module(x), y, metrics=False)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.optim.grad_clip:
            torch.nn.utils.clip_grad_norm_(params, cfg.optim.grad_clip)
        opt.step()
    return (CLOCK() - t0) / steps


def lightning(cfg, steps: int, warmup: int) -> float:
    task, module = _setup(cfg)
    timer = StepTimer(warmup)
    with tempfile.TemporaryDirectory() as d:
        trainer = make_trainer(cfg, Path(d), [AtomicCSVLogger(d, name="logs")], task)
        trainer.callbacks.append(timer)
        trainer.limit_val_batches = 0
        trainer.fit(module, datamodule=task.datamodule())
    return timer.elapsed / timer.n


LOOPS = {"fused kernel (fwd+bwd)": fused, "bare PyTorch loop": bare, "Lightning (rnnbench run setup)": lightning}


def measure(cfg, steps: int, warmup: int, repeats: int) -> dict[str, float]:
    times: dict[str, list[float]] = {k: [] for k in LOOPS}
    for _ in range(repeats):           # interleaved, so load changes hit every loop alike
        for name, fn in LOOPS.items():
            times[name].append(fn(cfg, steps, warmup))
    return {k: statistics.median(v) for k, v in times.items()}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", nargs="+", choices=sorted(SHAPES), default=["default", "paper_copy"])
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="100 steps x 3 repeats (about a minute)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1, as a 2-worker sweep on 2 cores)")
    ap.add_argument("--wall", action="store_true", help="time by wall clock instead of process CPU time")
    ap.add_argument("overrides", nargs="*", help="config overrides applied after the shape's")
    a = ap.parse_args(argv)
    global CLOCK
    if a.wall:
        CLOCK = time.perf_counter
    if a.quick:
        a.steps, a.repeats = 100, 3
    quiet_logs()
    torch.set_num_threads(a.threads)
    print(f"harness overhead, {a.steps} steps x {a.repeats} interleaved repeats, median ms/step "
          f"({'wall' if a.wall else 'process CPU'} time), threads={torch.get_num_threads()}")
    print("| shape | fused kernel | bare loop | Lightning | Lightning / bare (<= 1.10) | bare / fused (<= 1.3) |")
    print("|---|---|---|---|---|---|")
    for shape in a.shape:
        cfg = C.load(None, SHAPES[shape] + COMMON + a.overrides + [f"trainer.max_steps={a.steps + a.warmup}"])
        m = measure(cfg, a.steps, a.warmup, a.repeats)
        f, b, lt = (m[k] * 1e3 for k in LOOPS)
        desc = f"{shape}: {cfg.task.name} T={cfg.task.T}, {cfg.model.cell} {cfg.model.hidden_size}, batch {cfg.task.batch_size}"
        print(f"| {desc} | {f:.2f} | {b:.2f} | {lt:.2f} | {lt / b:.3f} | {b / f:.3f} |", flush=True)


if __name__ == "__main__":
    main()
