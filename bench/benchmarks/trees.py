"""Tree models: training throughput of level-by-level batching against node-by-node recursion.

    python -m bench.benchmarks.trees [--cells rntn,treelstm_nary] [--batches 8] [--repeats 3] [--quick]

Same model (one set of weights), same optimizer (AdaGrad), same batches of real SST training trees
(bench/configs/task/sst_trees.yaml, the first batches of a shuffled epoch): one training step is
forward, mean cross-entropy over every node, backward and an optimizer step. Level batching runs
each height of the whole batch as one composition (models/tree/base.py `forward`); recursion visits
one node at a time (`forward_recursive`, tree after tree). Repeats alternate the two and the medians
of trees/s are printed with their ratio. Dropout is off, so both compute the same loss.
`--quick`: RNTN and the N-ary Tree-LSTM, 3 batches, 3 repeats (about a minute on one core).
"""
from __future__ import annotations

import statistics
import time

import torch
import torch.nn.functional as F

from bench import config as C
from bench.benchmarks.common import parser
from models.registry import TREE_CELLS
from models.tree.base import batch_trees
from tasks.registry import task_class

SIZES = {"recnn": (30, 30), "rntn": (25, 25), "treelstm_childsum": (150, 300), "treelstm_nary": (150, 300)}


def _setup(cell: str, batch_size: int, n_batches: int, overrides: list[str]):
    H, E = SIZES[cell]
    cfg = C.load(None, ["task=sst_trees", f"model.cell={cell}", f"model.hidden_size={H}",
                        f"model.embedding_size={E}", f"task.batch_size={batch_size}", "optim=adagrad",
                        f"task.max_train={batch_size * n_batches}", "task.max_eval=1", *overrides])
    task = task_class("treebank")(cfg)
    dm = task.datamodule()
    dm.setup()
    module = task.module(dm)
    module.train()
    opt = module.configure_optimizers()
    trees = dm.examples["train"]
    groups = [trees[i:i + batch_size] for i in range(0, len(trees), batch_size)][:n_batches]
    return module, opt, groups


def _level_step(module, opt, batch) -> None:
    loss = F.cross_entropy(module.net(batch), batch.label)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def _node_step(module, opt, trees) -> None:
    n = sum(len(t["word"]) for t in trees)
    loss = sum(F.cross_entropy(module.net.forward_recursive(t["word"], t["children"]),
                               torch.tensor(t["label"]), reduction="sum") for t in trees) / n
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def measure(cell: str, batch_size: int, n_batches: int, repeats: int, overrides: list[str]) -> dict:
    module, opt, groups = _setup(cell, batch_size, n_batches, overrides)
    batches = [batch_trees(g) for g in groups]
    n_trees = sum(len(g) for g in groups)
    _level_step(module, opt, batches[0])          # warm-up
    _node_step(module, opt, groups[0][:2])
    level, node = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for b in batches:
            _level_step(module, opt, b)
        level.append(n_trees / (time.perf_counter() - t0))
        t0 = time.perf_counter()
        for g in groups:
            _node_step(module, opt, g)
        node.append(n_trees / (time.perf_counter() - t0))
    lv, nd = statistics.median(level), statistics.median(node)
    return {"cell": cell, "level_trees_s": lv, "node_trees_s": nd, "ratio": lv / nd, "trees": n_trees}


def main(argv=None) -> list[dict]:
    ap = parser("trees", __doc__.split("\n")[0])
    ap.add_argument("--cells", default=",".join(TREE_CELLS), help="comma-separated tree cells")
    ap.add_argument("--batch-size", type=int, default=25, help="trees a batch")
    ap.add_argument("--batches", type=int, default=8, help="batches a repeat")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1, help="torch threads")
    ap.add_argument("--quick", action="store_true", help="rntn and treelstm_nary, 3 batches, 3 repeats")
    ap.add_argument("overrides", nargs="*", help="key=value applied to both sides, e.g. model.hidden_size=50")
    a = ap.parse_args(argv)
    cells = ["rntn", "treelstm_nary"] if a.quick else a.cells.split(",")
    for c in cells:
        if c not in TREE_CELLS:
            raise SystemExit(f"--cells: unknown tree cell {c!r}; allowed: {', '.join(TREE_CELLS)}")
    batches = 3 if a.quick else a.batches
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    print(f"training throughput, batches of {a.batch_size} SST trees, {batches} batches x {a.repeats} repeats, "
          f"{a.threads} thread(s); medians")
    print(f"{'cell':20s} {'level-batched':>15s} {'node-by-node':>14s} {'ratio':>8s}")
    out = []
    for c in cells:
        r = measure(c, a.batch_size, batches, a.repeats, a.overrides)
        print(f"{c:20s} {r['level_trees_s']:11.1f} t/s {r['node_trees_s']:10.1f} t/s {r['ratio']:7.1f}x", flush=True)
        out.append(r)
    return out


if __name__ == "__main__":
    main()
