"""Training mechanics measured directly: gradient clipping clips the global norm, the teacher-forcing
ratio changes what the decoder is fed, inter-layer dropout is on in training and off in evaluation."""
import dataclasses

import pytest
import torch

from bench import config as C
from bench.train import run
from models.config import ModelConfig
from models.recurrent import Recurrent
from tasks.base import TaskModule
from tasks.translation import Seq2Seq


def global_norm(module) -> float:
    return float(torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in module.parameters()
                                                        if p.grad is not None])))


@pytest.mark.parametrize("clip", [0.05, None])
def test_grad_clip_clips_the_global_norm(store, monkeypatch, clip):
    """Through `rnnbench train`'s trainer: the global gradient norm the optimizer steps with is
    min(norm before clipping, optim.grad_clip); unchanged with grad_clip null."""
    before, after = [], []
    configure = TaskModule.configure_optimizers

    def configure_and_watch(self):
        opt = configure(self)
        (opt["optimizer"] if isinstance(opt, dict) else opt).register_step_post_hook(
            lambda *_: after.append(global_norm(self)))  # .grad is left as the step used it
        return opt

    monkeypatch.setattr(TaskModule, "configure_optimizers", configure_and_watch)
    monkeypatch.setattr(TaskModule, "on_before_optimizer_step", lambda self, opt: before.append(global_norm(self)))
    cfg = C.load(None, ["task=adding", "task.T=10", "task.eval_size=64", "model.hidden_size=16",
                        "trainer.max_steps=6", "trainer.val_every=6", f"optim.grad_clip={'null' if clip is None else clip}"])
    assert run(cfg, store, wandb_mode="disabled")["status"] == "done"
    assert len(before) == len(after) == 6
    if clip is not None:
        assert min(before) > 2 * clip                                     # clipping had work to do
        assert after == pytest.approx([min(b, clip) for b in before], rel=1e-4)
    else:
        assert after == pytest.approx(before, rel=1e-6)


def _seq2seq(attention: str):
    c = C.load(None, ["task.name=translation", f"task.attention={attention}", "model.hidden_size=16",
                      "model.embedding_size=8", "task.attention_size=8"])
    torch.manual_seed(0)
    m = Seq2Seq(c.model, c.task, 20, 15, 0, 0)
    with torch.no_grad():
        m.out.weight.mul_(5.0)
    return m.eval()


@pytest.mark.parametrize("attention", ["none", "additive"])
def test_teacher_forcing_ratio_changes_what_the_decoder_is_fed(attention):
    m = _seq2seq(attention)
    g = torch.Generator().manual_seed(0)
    B, S, T = 64, 6, 8
    src, src_len = torch.randint(4, 20, (B, S), generator=g), torch.full((B,), S)
    tgt = torch.randint(4, 15, (B, T), generator=g)
    fed = []
    m.tgt_emb.register_forward_hook(lambda mod, args, out: fed.append(args[0].reshape(B, -1)))

    def feed(ratio, seed=0):
        fed.clear()
        with torch.no_grad():
            logits = m(src, src_len, tgt, teacher_forcing=ratio, generator=torch.Generator().manual_seed(seed))
        return torch.cat(fed, 1), logits.argmax(-1)

    gold, _ = feed(1.0)
    assert torch.equal(gold, tgt)                                          # ratio 1: the gold previous token
    own, pred = feed(0.0)
    assert torch.equal(own[:, 0], tgt[:, 0]) and torch.equal(own[:, 1:], pred[:, :-1])  # ratio 0: its own argmax
    assert (own[:, 1:] != tgt[:, 1:]).float().mean() > 0.5
    mixed, pred = feed(0.5, seed=3)
    draws = torch.Generator().manual_seed(3)
    use_gold = torch.stack([torch.rand(B, generator=draws) < 0.5 for _ in range(T - 1)], 1)
    assert torch.equal(mixed[:, 1:], torch.where(use_gold, tgt[:, 1:], pred[:, :-1]))
    differ = pred[:, :-1] != tgt[:, 1:]
    share = (mixed[:, 1:] == tgt[:, 1:])[differ].float().mean()
    assert 0.4 < share < 0.6                                               # about half the steps fed gold


@pytest.mark.parametrize("impl, residual", [("auto", False), ("auto", True), ("custom", False)])
def test_inter_layer_dropout_on_in_training_off_in_eval(impl, residual):
    cfg = ModelConfig(cell="lstm", hidden_size=32, num_layers=2, dropout=0.5, impl=impl, residual=residual)
    torch.manual_seed(0)
    net = Recurrent(8, cfg)
    plain = Recurrent(8, dataclasses.replace(cfg, dropout=0.0))
    plain.load_state_dict(net.state_dict())
    x = torch.randn(4, 5, 8)
    net.eval()
    plain.train()
    ref = plain(x)[0]
    assert torch.equal(net(x)[0], ref) and torch.equal(net(x)[0], net(x)[0])   # eval: no dropout at all
    net.train()
    a, b = net(x)[0], net(x)[0]
    assert not torch.allclose(a, ref, atol=1e-4) and not torch.allclose(a, b, atol=1e-4)
    one = Recurrent(8, dataclasses.replace(cfg, num_layers=1, residual=False)).train()
    assert torch.equal(one(x)[0], one(x)[0])                                    # never after the last layer
