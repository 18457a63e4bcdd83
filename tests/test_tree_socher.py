"""Socher et al.'s training details as options: model.tree_init=socher (the init of their code),
AdaGrad's initial sum and eps, the loss summed over nodes per tree, the tensor's own lr
(optim.tensor_lr); the RNTN with V = 0 is the RecNN; and their errors."""
import math

import pytest
import torch
import torch.nn.functional as F

from bench.config import ConfigError, load
from models.tree.base import batch_trees
from tasks.registry import task_class
from tasks.treebank_modules import TreeModule
from test_treebank import random_tree

TREE = ["task=sst_trees", "model.cell=rntn", "model.hidden_size=6", "model.embedding_size=6", "optim=adagrad"]


def _module(*ov):
    return TreeModule(load(None, [*TREE, *ov]), 50, 0, 5, [0, 0, -100, 1, 1])


def test_socher_init_ranges():
    torch.manual_seed(0)
    net = _module("model.tree_init=socher").net
    H = 6
    W = net.W.weight.detach()
    for block in (W[:, :H], W[:, H:]):
        off = block - torch.eye(H)
        assert off.abs().max() <= 1 / (2 * math.sqrt(H)) and off.abs().max() > 0.5 / (2 * math.sqrt(H))
    assert bool((net.W.bias == 0).all()) and net.V.abs().max() <= 1 / (4 * H)
    assert net.V.abs().max() > 0.5 / (4 * H) and bool((net.head.bias >= 0).all())
    words = net.embed.weight.detach()[1:]
    assert abs(float(words.std()) - 0.1) < 0.01 and bool((net.embed.weight[0] == 0).all())
    torch.manual_seed(0)
    default = _module().net
    assert default.V.abs().max() > 1 / (4 * H)            # U(+-1/(4 sqrt H)) unless socher
    assert _module("model.cell=recnn", "model.tree_init=socher").net.W.weight[:, :H].diagonal().min() > 0.5


def test_adagrad_init_and_eps_reach_the_optimizer():
    opt = _module("optim.adagrad_init=1.0", "optim.adagrad_eps=0.001").configure_optimizers()
    assert opt.defaults["eps"] == 1e-3 and opt.defaults["initial_accumulator_value"] == 1.0
    p = opt.param_groups[0]["params"][0]
    assert bool((opt.state[p]["sum"] == 1.0).all())


def test_tree_sum_loss_is_the_node_sum_per_tree():
    trees = [random_tree(torch.Generator().manual_seed(s), n, 50, 2) for s, n in ((1, 4), (2, 9))]
    b = batch_trees(trees)
    torch.manual_seed(0)
    mean = _module()
    torch.manual_seed(0)
    summed = _module("task.node_loss=tree_sum")
    logits = mean.net(b)
    assert torch.equal(logits, summed.net(b))
    assert float(mean.training_step(b, 0)) == pytest.approx(float(F.cross_entropy(logits, b.label)))
    assert float(summed.training_step(b, 0)) == pytest.approx(float(F.cross_entropy(logits, b.label, reduction="sum")) / 2)


def test_rntn_with_zero_tensor_is_the_recnn():
    """Same W, words and softmax, V = 0: the same logits and gradients (the only difference of the two code paths)."""
    trees = [random_tree(torch.Generator().manual_seed(s), n, 50, 2) for s, n in ((1, 5), (2, 12), (3, 3))]
    b = batch_trees(trees)
    torch.manual_seed(0)
    rntn = _module("model.tree_init=socher").double()
    recnn = _module("model.cell=recnn", "model.tree_init=socher").double()
    with torch.no_grad():
        rntn.net.V.zero_()
    recnn.net.load_state_dict({k: v for k, v in rntn.net.state_dict().items() if k != "V"})
    losses = [m.training_step(b, 0) for m in (rntn, recnn)]
    assert float(losses[0]) == float(losses[1]) and float(losses[0]) > 0
    grads = [torch.autograd.grad(loss, [m.net.W.weight, m.net.W.bias, m.net.embed.weight, m.net.head.weight])
             for loss, m in zip(losses, (rntn, recnn))]
    for a, r in zip(*grads):
        torch.testing.assert_close(a, r, rtol=1e-12, atol=1e-15)
        assert float(a.abs().sum()) > 0


def test_tensor_lr_is_the_lr_of_v_only():
    """AdaGrad's first step from a zero sum moves each weight by lr (g / |g|): V by optim.tensor_lr, the rest by optim.lr."""
    torch.manual_seed(0)
    m = _module("optim.lr=0.05", "optim.tensor_lr=0.001")
    opt = m.configure_optimizers()
    assert [g["lr"] for g in opt.param_groups] == [0.05, 0.001] and opt.param_groups[1]["params"] == [m.net.V]
    assert sum(len(g["params"]) for g in opt.param_groups) == len(list(m.parameters()))
    b = batch_trees([random_tree(torch.Generator().manual_seed(1), 9, 50, 2)])
    before = {n: p.detach().clone() for n, p in m.net.named_parameters()}
    m.training_step(b, 0).backward()
    opt.step()
    for name, lr in (("V", 0.001), ("W.weight", 0.05), ("head.weight", 0.05)):
        step = (m.net.get_parameter(name) - before[name]).abs()
        moved = step[step > 0]
        assert moved.numel() > 0.5 * step.numel()
        torch.testing.assert_close(moved, torch.full_like(moved, lr), rtol=1e-4, atol=0)
    torch.manual_seed(0)
    assert [g["lr"] for g in _module("optim.lr=0.05").configure_optimizers().param_groups] == [0.05]


@pytest.mark.parametrize("overrides,message", [
    (["model.cell=recnn", "optim.tensor_lr=0.001"],
     r"^optim.tensor_lr: only for cell 'rntn' \(its tensor V\); got cell 'recnn'; allowed: null$"),
    (["model.cell=treelstm_nary", "model.tree_init=socher"],
     r"^model.tree_init: 'socher' is for cells recnn, rntn; got cell 'treelstm_nary'; allowed: default$"),
    (["model.tree_init=socher", "model.init_range=0.1"],
     r"^model.init_range: overrides tree_init='socher'; allowed: one of them$"),
    (["optim=adam", "optim.adagrad_eps=0.001"],
     r"^optim.adagrad_eps: only for AdaGrad; got name='adam'; allowed: name adagrad$"),
])
def test_errors(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load(None, [*TREE, *overrides])


def test_tree_sum_loss_is_for_tree_cells():
    cfg = load(None, ["task=sst_trees", "model.cell=lstm", "task.node_loss=tree_sum"])
    with pytest.raises(ConfigError, match=r"^task.node_loss: 'tree_sum' is for tree cells; got cell 'lstm'; allowed: mean$"):
        task_class("treebank")(cfg)
