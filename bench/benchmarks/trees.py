"""Tree models: training throughput of level-by-level batching against node-by-node recursion.

    python -m bench.benchmarks.trees [--cells rntn,treelstm_nary] [--batches 8] [--repeats 3] [--quick]

Same model (one set of weights), same optimizer (AdaGrad), same batches of real SST training trees
(bench/configs/task/sst_trees.yaml, the first batches of a shuffled epoch): one training step is
forward, mean cross-entropy over every node, backward and an optimizer step. Level batching runs
each height of the whole batch as one composition (models/tree/base.py `forward`); recursion visits
one node at a time (`forward_recursive`, tree after tree). Repeats alternate the two and the medians
of trees/s are printed with their ratio. Dropout is off, so both compute the same loss.
`--quick`: RNTN and the N-ary Tree-LSTM, 3 batches, 3 repeats (about a minute on one core).

    python -m bench.benchmarks.trees --compare [--cells recnn,rntn,treelstm_nary] [--batches 8] [--repeats 3]

Before / after the CPU speed-ups, side by side in one process, at the reference configs'
sizes (bench/configs/reference/sst_{recnn,rntn,treelstm}.yaml): ms per training step (collate,
forward, loss, backward, clipping, AdaGrad) over the first bucketed batches of the training
epoch, and ms per evaluation pass over the whole dev set (collate, forward, loss, the four
accuracies). "before" is bench/benchmarks/trees_legacy.py (list-built batches, dense word-vector
gradients, F.bilinear, torchmetrics updates), "after" the code in models/ and tasks/; both sides
start from the same weights, and the first step's loss and the accuracies of both are printed.
Lightning's own per-step cost (hooks, logging) is in neither.
"""
from __future__ import annotations

import statistics
import time

import torch
import torch.nn.functional as F

from bench import config as C
from bench.benchmarks import trees_legacy as legacy
from bench.benchmarks.common import parser
from models.registry import TREE_CELLS
from models.tree.base import batch_trees
from models.tree.rows import clip_grad_norm
from tasks.registry import task_class

SIZES = {"recnn": (30, 30), "rntn": (25, 25), "treelstm_childsum": (150, 300), "treelstm_nary": (150, 300)}
REFERENCE = {"recnn": "sst_recnn", "rntn": "sst_rntn", "treelstm_nary": "sst_treelstm"}


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


def _side(module, legacy_side: bool):
    """(collate, optimizer, clip) of one side; the net switched to the former paths for "before"."""
    if legacy_side:
        legacy.make_legacy(module.net)
        return legacy.batch_trees, legacy.optimizer(module.parameters(), module.run_cfg.optim), legacy.clip
    return batch_trees, module.configure_optimizers(), clip_grad_norm


def _train_steps(module, side, groups) -> float:
    collate, opt, clip = side
    for g in groups:
        b = collate(g)
        loss = F.cross_entropy(module.net(b), b.label)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        clip(module.parameters(), module.run_cfg.optim.grad_clip)
        opt.step()
    return float(loss.detach())


@torch.no_grad()
def _eval_pass(module, side, groups, legacy_side: bool) -> dict:
    module.eval()
    metrics = legacy.MetricsEval(module) if legacy_side else None
    counts = 0
    for g in groups:
        b = side[0](g)
        logits = module.net(b)
        root = torch.zeros_like(b.label, dtype=torch.bool)
        root[b.root] = True
        if legacy_side:
            metrics.step(logits, b.label, root)
        else:
            module.node_loss(logits, b.label)
            counts = counts + module.node_counts(logits, b.label, root)
    module.train()
    return metrics.result() if legacy_side else {k: float(v) for k, v in module.accuracies(counts).items()}


def compare(cell: str, n_batches: int, repeats: int, overrides: list[str]) -> dict:
    """ms per training step and per dev-set evaluation pass, before and after, same weights."""
    cfg = C.load(f"bench/configs/reference/{REFERENCE[cell]}.yaml", overrides)
    task = task_class("treebank")(cfg)
    dm = task.datamodule()
    dm.setup()
    torch.manual_seed(cfg.seed)
    modules = {"before": task.module(dm), "after": task.module(dm)}
    modules["after"].load_state_dict(modules["before"].state_dict())
    sides = {k: _side(m, k == "before") for k, m in modules.items()}
    ex = dm.examples["train"]
    train = [[ex[i] for i in idx] for idx in list(dm._loader("train", True).batch_sampler)[:n_batches]]
    dev = [[dm.examples["validation"][i] for i in idx] for idx in dm._loader("validation", False).batch_sampler]
    out = {"cell": cell, "first_loss": {}, "accuracy": {}}
    for k, m in modules.items():   # same weights, same first batch: the losses agree
        torch.manual_seed(1)
        out["first_loss"][k] = _train_steps(m, sides[k], train[:1])
    times = {f"{k}_{w}": [] for k in modules for w in ("step", "eval")}
    for r in range(repeats):
        for k, m in modules.items():
            torch.manual_seed(2 + r)   # the same dropout masks on both sides
            t0 = time.perf_counter()
            _train_steps(m, sides[k], train)
            times[f"{k}_step"].append((time.perf_counter() - t0) * 1e3 / len(train))
            t0 = time.perf_counter()
            out["accuracy"][k] = _eval_pass(m, sides[k], dev, k == "before")
            times[f"{k}_eval"].append((time.perf_counter() - t0) * 1e3)
    out.update({k: statistics.median(v) for k, v in times.items()})
    return out


def _main_compare(a, cells: list[str]) -> list[dict]:
    for c in cells:
        if c not in REFERENCE:
            raise SystemExit(f"--cells: {c!r} has no reference config; allowed with --compare: {', '.join(REFERENCE)}")
    print(f"before / after, reference configs, {a.batches} training batches + the dev set "
          f"({a.repeats} repeats, {a.threads} thread(s)); medians, ms")
    print(f"{'cell':15s} {'step before':>12s} {'after':>8s} {'ratio':>6s} {'eval before':>12s} {'after':>8s} "
          f"{'ratio':>6s}  first loss before / after; dev fine_root before / after")
    out = []
    for c in cells:
        r = compare(c, a.batches, a.repeats, a.overrides)
        fl, acc = r["first_loss"], r["accuracy"]
        print(f"{c:15s} {r['before_step']:12.1f} {r['after_step']:8.1f} {r['before_step'] / r['after_step']:5.1f}x "
              f"{r['before_eval']:12.0f} {r['after_eval']:8.0f} {r['before_eval'] / r['after_eval']:5.1f}x  "
              f"{fl['before']:.7f} / {fl['after']:.7f}; {acc['before']['fine_root']:.4f} / "
              f"{acc['after']['fine_root']:.4f}", flush=True)
        out.append(r)
    return out


def main(argv=None) -> list[dict]:
    ap = parser("trees", __doc__.split("\n")[0])
    ap.add_argument("--cells", default=",".join(TREE_CELLS), help="comma-separated tree cells")
    ap.add_argument("--batch-size", type=int, default=25, help="trees a batch")
    ap.add_argument("--batches", type=int, default=8, help="batches a repeat")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1, help="torch threads")
    ap.add_argument("--quick", action="store_true", help="rntn and treelstm_nary, 3 batches, 3 repeats")
    ap.add_argument("--compare", action="store_true", help="before / after the CPU speed-ups (ms per step and eval pass)")
    ap.add_argument("overrides", nargs="*", help="key=value applied to both sides, e.g. model.hidden_size=50")
    a = ap.parse_args(argv)
    if a.compare:
        torch.set_num_threads(a.threads)
        return _main_compare(a, list(REFERENCE) if a.cells == ",".join(TREE_CELLS) else a.cells.split(","))
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
