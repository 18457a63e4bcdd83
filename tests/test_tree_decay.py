"""Socher et al.'s per-matrix L2 for the tree models (optim.decay_words / decay_composition /
decay_tensor / decay_classifier) and AdaGrad's per-epoch reset (optim.adagrad_reset): the update
of each group against AdaGrad's formula with its own decay, the param groups, the errors, and the
hashes of configs that leave the new fields at their defaults."""
import json
from types import SimpleNamespace

import pytest
import torch

from bench.config import ConfigError, load
from models.tree.base import batch_trees
from record_hashes import OUT
from tasks.treebank_modules import TreeModule, tree_group
from test_treebank import random_tree

TREE = ["task=sst_trees", "model.cell=rntn", "model.hidden_size=6", "model.embedding_size=6", "optim=adagrad"]
SOCHER = ["optim.decay_words=1e-4", "optim.decay_composition=1e-3", "optim.decay_tensor=1e-3",
          "optim.decay_classifier=1e-4"]


def _module(*ov):
    return TreeModule(load(None, [*TREE, *ov]), 50, 0, 5, [0, 0, -100, 1, 1])


def _batch():
    return batch_trees([random_tree(torch.Generator().manual_seed(s), n, 50, 2) for s, n in ((1, 9), (2, 5))])


def test_each_group_steps_by_adagrad_with_its_own_decay():
    """One step from sums at 1 (so the step depends on the decay): every parameter moves by
    lr * d / (sqrt(1 + d^2) + eps) with d = g + decay * p, decay that of its group (the softmax
    bias none); word vectors absent from the batch do not move."""
    decays = {"words": 3e-2, "composition": 5e-2, "tensor": 7e-2, "classifier": 2e-2, "": 0.0}
    torch.manual_seed(0)
    m = _module(*(f"optim.decay_{g}={v}" for g, v in decays.items() if g), "optim.lr=0.1",
                "optim.adagrad_init=1.0", "model.tree_init=socher").double()
    assert m.row_grad
    opt = m.configure_optimizers()
    b = _batch()
    before = {n: p.detach().clone() for n, p in m.net.named_parameters()}
    m.training_step(b, 0).backward()
    grads = {n: (p.grad.to_dense() if p.grad.is_sparse else p.grad).clone() for n, p in m.net.named_parameters()}
    assert m.net.embed.weight.grad.is_sparse
    opt.step()
    for name, p in m.net.named_parameters():
        d = grads[name] + decays[tree_group(name)] * before[name]
        want = before[name] - 0.1 * d / ((1 + d * d).sqrt() + 1e-10)
        if name == "embed.weight":
            used = torch.zeros(50, dtype=torch.bool)
            used[b.word] = True
            want[~used] = before[name][~used]
            assert bool((p[~used] == before[name][~used]).all()) and bool((p[used] != before[name][used]).any())
        torch.testing.assert_close(p.detach(), want, rtol=1e-12, atol=1e-15, msg=name)
        # and the decay counted: without it the step would differ
        if decays[tree_group(name)] and before[name].abs().max() > 0:   # (W.bias starts at 0)
            plain = before[name] - 0.1 * grads[name] / ((1 + grads[name] ** 2).sqrt() + 1e-10)
            assert (p.detach() - plain).abs().max() > 1e-5, name


def test_param_groups():
    torch.manual_seed(0)
    m = _module(*SOCHER, "optim.tensor_lr=0.001")
    groups = m.configure_optimizers().param_groups
    net = m.net
    by = [(g["lr"], g["weight_decay"], g.get("row_decay", False), g["params"]) for g in groups]
    assert by == [(0.05, 1e-4, True, [net.embed.weight]), (0.05, 1e-4, False, [net.head.weight]),
                  (0.05, 0.0, False, [net.head.bias]), (0.05, 1e-3, False, [net.W.weight, net.W.bias]),
                  (0.001, 1e-3, False, [net.V])]
    # groups of equal (lr, decay) share one param group; the uniform weight_decay fills the groups left null
    torch.manual_seed(0)
    m = _module("optim.weight_decay=1e-5", "optim.decay_tensor=1e-5", "optim.decay_classifier=0")
    assert m.row_grad is False
    assert [(g["weight_decay"], len(g["params"])) for g in m.configure_optimizers().param_groups] == [
        (1e-5, 5), (0.0, 1)]
    assert [g["weight_decay"] for g in _module().configure_optimizers().param_groups] == [0.0]   # one group as before
    torch.manual_seed(0)
    m = _module("model.cell=treelstm_nary", "model.hidden_size=6", "optim.decay_composition=1e-3")
    comp = next(g for g in m.configure_optimizers().param_groups if g["weight_decay"] == 1e-3)["params"]
    assert len(comp) == len(list(m.net.parameters())) - 3       # all of the cell but words and softmax


@pytest.mark.parametrize("overrides,message", [
    (["model.cell=recnn", "optim.decay_tensor=1e-3"],
     r"^optim.decay_tensor: only for cell 'rntn' \(its tensor V\); got cell 'recnn'; allowed: null$"),
    (["model.cell=lstm", "optim.decay_words=1e-4"],
     r"^optim.decay_words: only for the tree cells \(recnn, rntn, treelstm_childsum, treelstm_nary\); "
     r"got cell 'lstm'; allowed: null$"),
    (["model.cell=lstm", "optim.decay_classifier=1e-4"],
     r"^optim.decay_classifier: only for the tree cells \(.*\); got cell 'lstm'; allowed: null$"),
    (["optim=adam", "optim.decay_words=1e-4"],
     r"^optim.decay_words: decays the rows of a batch's words \(row-sparse gradients\), with AdaGrad on one "
     r"device; got name='adam', devices=1, num_nodes=1; allowed: null$"),
    (["optim=adam", "optim.decay_composition=1e-3", "trainer.devices=2"], None),   # fine: dense groups
    (["optim.decay_words=-1"], r"^optim.decay_words: invalid value -1.0; allowed: a number >= 0$"),
    (["optim=adam", "optim.adagrad_reset=true"],
     r"^optim.adagrad_reset: only for AdaGrad; got name='adam'; allowed: name adagrad$"),
])
def test_errors(overrides, message):
    if message is None:
        load(None, [*TREE, *overrides])
        return
    with pytest.raises(ConfigError, match=message):
        load(None, [*TREE, *overrides])


def test_new_fields_leave_recorded_hashes():
    recorded = json.loads(OUT.read_text())
    for name in ("sst_rntn", "sst_recnn"):
        if name in recorded["reference"]:
            cfg = load(f"bench/configs/reference/{name}.yaml")
            assert cfg.optim.decay_words is None and cfg.optim.adagrad_reset is False
            assert cfg.hash == recorded["reference"][name]
    ref = load("bench/configs/reference/sst_rntn.yaml")
    assert load("bench/configs/reference/sst_rntn.yaml", ["optim.decay_tensor=1e-3"]).hash != ref.hash
    assert load("bench/configs/reference/sst_rntn.yaml", ["optim.adagrad_reset=true"]).hash != ref.hash


def test_adagrad_reset_at_every_epoch_start():
    """The sums go back to adagrad_init at the first step of epochs 2, 3, ... (global_step a multiple
    of the epoch's batches), and nowhere else; off by default."""
    for reset in (True, False):
        torch.manual_seed(0)
        m = _module("optim.adagrad_init=0.5", f"optim.adagrad_reset={str(reset).lower()}")
        opt = m.configure_optimizers()
        m.training_step(_batch(), 0).backward()
        opt.step()
        sums = [s["sum"] for s in opt.state.values()]
        assert all(bool((s > 0.5).any()) for s in sums if s.numel() > 0)
        for step, resets in ((0, False), (3, False), (7, False), (6, reset), (12, reset)):
            before = [s.clone() for s in sums]
            m._trainer = SimpleNamespace(global_step=step, num_training_batches=6, optimizers=[opt])
            m.on_train_batch_start(None, step % 6)
            m._trainer = None
            if resets:
                assert all(bool((s == 0.5).all()) for s in sums)
                m.training_step(_batch(), 0).backward()
                opt.step()
            else:
                assert all(torch.equal(a, s) for a, s in zip(before, sums))


def test_adagrad_reset_in_a_trainer(monkeypatch):
    """Under Lightning: one reset at the start of each epoch after the first (3 epochs: steps 3 and 6)."""
    import tasks.base
    from test_treebank import fit, make
    calls = []
    real = tasks.base.reset_adagrad
    monkeypatch.setattr(tasks.base, "reset_adagrad", lambda opt, init: (calls.append(init), real(opt, init)))
    cfg, task, dm = make(*TREE, "task.max_train=60", "task.max_eval=5", "task.batch_size=25",
                         "optim.adagrad_reset=true", "optim.adagrad_init=0.25")
    module, trainer = fit(cfg, task, dm, 3)
    assert trainer.num_training_batches == 3 and trainer.global_step == 9 and calls == [0.25, 0.25]
