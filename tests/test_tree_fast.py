"""The tree models' CPU fast paths give the numbers of the former ones: batches from per-tree
tensors, row-sparse word-vector gradients with RowAdagrad and clipping, the RNTN tensor term as a
matmul, node counts for the accuracies; and `bench.benchmarks.trees --compare` runs both."""
import pytest
import torch
import torch.nn.functional as F
import torchmetrics

from bench.benchmarks import trees as bench_trees
from bench.benchmarks import trees_legacy as legacy
from bench.config import load
from models.registry import TREE_CELLS, cell_class
from models.tree.base import batch_trees
from models.tree.rows import RowAdagrad, clip_grad_norm
from tasks.registry import task_class
from tasks.treebank_modules import TreeModule
from test_treebank import random_tree


def _net(cell: str, rows: bool, H: int = 6):
    cfg = load(None, ["task=sst_trees", f"model.cell={cell}", f"model.hidden_size={H}", f"model.embedding_size={H}"])
    torch.manual_seed(0)
    net = cell_class(cell)(40, 5, cfg.model)
    net.row_grad = rows
    return net


def _trees(n, max_k=2, seed=1):
    rng = torch.Generator().manual_seed(seed)
    return [random_tree(rng, k, 40, max_k) for k in n]


def _same_batch(a, b) -> None:
    for f in ("word", "label", "child", "leaves", "root"):
        assert torch.equal(getattr(a, f), getattr(b, f)), f
    assert len(a.level_nodes) == len(b.level_nodes)
    assert all(torch.equal(x, y) for x, y in zip(a.level_nodes + a.level_children, b.level_nodes + b.level_children))
    assert torch.equal(a.rows[a.inv], a.word[a.leaves]) and bool((a.rows[1:] > a.rows[:-1]).all())


def test_batches_from_tree_tensors_equal_the_list_built_ones(data_dir):
    for trees in (_trees((1, 2, 5, 9, 13)), _trees((1, 3, 4, 7), max_k=3, seed=2)):
        _same_batch(batch_trees(trees), legacy.batch_trees(trees))
    cfg = load(None, ["task=sst_trees", "task.max_train=100", "task.max_eval=10", "model.cell=recnn",
                      "model.hidden_size=4", "model.embedding_size=4"])
    dm = task_class("treebank")(cfg).datamodule()
    dm.setup()
    for idx in dm._loader("train", True).batch_sampler:       # the real SST trees, as batched
        items = [dm.examples["train"][i] for i in idx]
        _same_batch(dm.collate(items), legacy.batch_trees(items))


@pytest.mark.parametrize("cell", list(TREE_CELLS))
@pytest.mark.parametrize("scale,exact", [(1.0, True), (400.0, False)])
def test_row_sparse_gradients_train_as_dense_ones(cell, scale, exact):
    """Same weights after AdaGrad steps with clipping at 5: bit for bit while no step is clipped
    (scale 1), to float rounding when every step is (scale 400: the norm sums in another order)."""
    max_k = 3 if cell == "treelstm_childsum" else 2
    batches = [_trees((2, 5, 8), max_k, seed=s) for s in range(4)]
    out, clipped = [], []
    for rows in (False, True):
        net = _net(cell, rows)
        opt = RowAdagrad(net.parameters(), lr=0.1) if rows else torch.optim.Adagrad(net.parameters(), lr=0.1)
        norms = []
        for trees in batches:
            b = batch_trees(trees)
            loss = scale * F.cross_entropy(net(b), b.label)
            opt.zero_grad()
            loss.backward()
            assert net.embed.weight.grad.is_sparse == rows
            norms.append(float(clip_grad_norm(net.parameters(), 5.0) if rows
                               else torch.nn.utils.clip_grad_norm_(net.parameters(), 5.0)))
            opt.step()
        out.append(net.state_dict())
        clipped.append(min(norms) > 5.0 if scale > 1 else max(norms) < 5.0)
    assert all(clipped)
    for k in out[0]:
        if exact:
            assert torch.equal(out[0][k], out[1][k]), k
        else:
            torch.testing.assert_close(out[0][k], out[1][k], rtol=1e-5, atol=1e-6, msg=k)


def test_row_adagrad_refuses_weight_decay_on_row_gradients():
    net = _net("recnn", True)
    b = batch_trees(_trees((3, 4)))
    F.cross_entropy(net(b), b.label).backward()
    with pytest.raises(ValueError, match=r"^optim.weight_decay: row-sparse word-vector gradients need 0 "
                                         r"\(decay moves every row\); allowed: 0$"):
        RowAdagrad(net.parameters(), lr=0.1, weight_decay=1e-4).step()


def test_row_gradients_only_with_adagrad_without_decay():
    def module(*ov):
        cfg = load(None, ["task=sst_trees", "model.cell=recnn", "model.hidden_size=4", "model.embedding_size=4", *ov])
        return TreeModule(cfg, 30, 0, 5, [0, 0, -100, 1, 1])
    assert module("optim=adagrad").net.row_grad
    assert not module("optim=adagrad", "optim.weight_decay=0.001").net.row_grad
    assert not module("optim=adam").net.row_grad


def test_rntn_tensor_term_equals_bilinear():
    net = _net("rntn", False, H=5).double()
    trees = _trees((2, 6, 11))
    b = batch_trees(trees)
    out = net(b)
    g = torch.autograd.grad(out.sum(), list(net.parameters()))
    legacy.make_legacy(net)
    ref = net(b)
    g_ref = torch.autograd.grad(ref.sum(), list(net.parameters()))
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    for a, r in zip(g, g_ref):
        torch.testing.assert_close(a, r, rtol=1e-10, atol=1e-12)


def test_node_counts_give_torchmetrics_accuracies():
    cfg = load(None, ["task=sst_trees", "model.cell=recnn", "model.hidden_size=4", "model.embedding_size=4"])
    m = TreeModule(cfg, 30, 0, 5, [0, 0, -100, 1, 1])
    g = torch.Generator().manual_seed(0)
    counts, ref = 0, legacy.MetricsEval(m)
    for n in (7, 30, 1):
        logits, gold = torch.randn(n, 5, generator=g), torch.randint(0, 5, (n,), generator=g)
        root = torch.rand(n, generator=g) < 0.3
        counts = counts + m.node_counts(logits, gold, root)
        ref.step(logits, gold, root)
    ours = {k: float(v) for k, v in m.accuracies(counts).items()}
    assert ours == ref.result() and set(ours) == {"fine_root", "fine_all", "binary_root", "binary_all"}
    assert isinstance(ref.metrics["fine_all"], torchmetrics.Metric)


def test_bench_trees_compare_runs_both_sides(capsys):
    out = bench_trees.main(["--compare", "--cells", "recnn", "--batches", "1", "--repeats", "1",
                            "task.max_train=50", "task.max_eval=25"])
    r = out[0]
    assert r["first_loss"]["before"] == r["first_loss"]["after"] and r["accuracy"]["before"] == r["accuracy"]["after"]
    assert r["before_step"] > 0 and r["after_eval"] > 0 and "step before" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="--cells: 'treelstm_childsum' has no reference config"):
        bench_trees.main(["--compare", "--cells", "treelstm_childsum"])


def test_span_models_row_gradients_train_as_dense_ones():
    """Phrase-supervised sequence cells take the word vectors' row-sparse gradients too."""
    cfg = load(None, ["task=sst_trees", "task.max_train=30", "task.max_eval=5", "model.cell=lstm", "model.hidden_size=6",
                      "model.embedding_size=5", "model.bidirectional=true", "optim=adagrad", "task.batch_size=40"])
    task = task_class("treebank")(cfg)
    dm = task.datamodule()
    dm.setup()
    torch.manual_seed(0)
    dense, rows = task.module(dm), task.module(dm)
    rows.load_state_dict(dense.state_dict())
    dense.row_grad = False
    assert rows.row_grad
    for m in (dense, rows):
        opt = m.configure_optimizers()
        for i, (ids, lengths, y, _) in enumerate(dm.train_dataloader()):
            if i == 4:
                break
            opt.zero_grad()
            F.cross_entropy(m(ids, lengths), y).backward()
            assert m.embed.weight.grad.is_sparse == m.row_grad
            m.configure_gradient_clipping(opt, 5.0, "norm") if m.row_grad else \
                torch.nn.utils.clip_grad_norm_(m.parameters(), 5.0)
            opt.step()
    for (k, a), b in zip(dense.state_dict().items(), rows.state_dict().values()):
        assert torch.equal(a, b), k
