"""The tiny sweep the report, leaderboard, gradient-flow and report-CLI tests share (trained once
per test session by the `sweep` fixture in conftest.py).

The sweep (copy task, T in {5, 8}, lstm/gru, seeds 0/1, 20 steps) runs in this process through
bench.train.run (the code every executor runs), plus: an adding-task run with an absurd learning
rate and no clipping (diverges at step 1), and a gru seed whose process "crashed" (recorded
by the LocalExecutor's own bookkeeping). Every number the tests check is recomputed from the
result.json files, never from the report code.
"""
from __future__ import annotations

from pathlib import Path

import yaml

from bench.config import config_hash, load
from bench.store import Store
from bench.sweep import LocalExecutor, expand
from bench.train import run

SWEEP = """
name: tiny
method: grid
parameters:
  task: {value: copy}
  task.T: {values: [5, 8]}
  task.n_symbols: {value: 3}
  task.eval_size: {value: 64}
  model.hidden_size: {value: 8}
  model.cell: {values: [lstm, gru]}
  trainer.max_steps: {value: 20}
  trainer.val_every: {value: 10}
  seed: {values: [0, 1]}
"""

# MSE with an absurd Adam step: after one step the head's bias alone is ~1e25, its square is inf
BAD = """
name: tiny
parameters:
  task: {value: adding}
  task.T: {value: 5}
  task.eval_size: {value: 64}
  model.hidden_size: {value: 8}
  model.cell: {value: lstm}
  optim.lr: {value: 1.0e+25}
  optim.grad_clip: {value: null}
  trainer.max_steps: {value: 20}
  trainer.val_every: {value: 10}
  seed: {value: 0}
"""


def run_all(store: Store, path: Path) -> list:
    name, cfgs = expand(path)
    store.record_sweep(name, [c.hash for c in cfgs])
    return [run(c, store.root, sweep=name, wandb_mode="disabled") for c in cfgs]


def make(root: Path) -> dict:
    """Train the tiny sweep, the diverging run and record the crashed one in a store under `root`."""
    store = Store(root / "results")
    (root / "tiny.yaml").write_text(SWEEP)
    (root / "bad.yaml").write_text(BAD)
    results = run_all(store, root / "tiny.yaml") + run_all(store, root / "bad.yaml")
    # a crashed run: config written and recorded, process killed -> the executor records it failed
    crashed = load(None, ["task=copy", "task.T=5", "task.n_symbols=3", "task.eval_size=64", "model.hidden_size=8",
                          "model.cell=gru", "trainer.max_steps=20", "trainer.val_every=10", "seed=2"])
    ex = LocalExecutor(store, "tiny", workers=1, progress=False)
    (store.run_dir(crashed.hash)).mkdir(parents=True)
    (store.run_dir(crashed.hash) / "config.yaml").write_text(yaml.safe_dump(crashed.to_dict(), sort_keys=False))
    store.record_sweep("tiny", [crashed.hash])
    assert ex._finish(crashed, -9) == "failed"
    statuses = sorted(r["status"] for r in results)
    assert statuses.count("done") == 8 and statuses.count("diverged") == 1, statuses
    return {"root": root, "store": store, "crashed": crashed.hash}


def results(store: Store) -> list[dict]:
    out = []
    for h in store.sweep_hashes("tiny"):
        cfg = store.config(h)
        out.append({"hash": h, "config": cfg, "result": store.result(h)})
    return out


def variant_key(cfg: dict) -> str:
    return config_hash({k: v for k, v in cfg.items() if k != "seed"})
