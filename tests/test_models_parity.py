"""Fused torch.nn.RNN/LSTM/GRU path vs the custom path with the same weights: outputs, final
states and gradients (float64), multi-layer, bidirectional, with lengths."""
import pytest
import torch

from bench.config import build
from models.config import ModelConfig
from models.recurrent import Recurrent

I, H = 3, 5
NAMES = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")


def pair(cell, **kw):
    fused = Recurrent(I, build(ModelConfig, {"cell": cell, "hidden_size": H, "impl": "fused", **kw},
                               "model.")).double()
    custom = Recurrent(I, build(ModelConfig, {"cell": cell, "hidden_size": H, "impl": "custom", **kw},
                                "model.")).double()
    assert fused.fused and not custom.fused
    copy_fused_to_custom(fused, custom)
    return fused, custom


def fused_params(net):
    """(layer, direction) -> the four torch-layout parameters of the fused modules."""
    out = {}
    for m, rnn in enumerate(net.rnns):
        for l in range(rnn.num_layers):
            for d, sfx in enumerate(("", "_reverse")[:net.dirs]):
                out[(m + l, d)] = [getattr(rnn, f"{n}_l{l}{sfx}") for n in NAMES]
    return out


def copy_fused_to_custom(fused, custom):
    with torch.no_grad():
        for (l, d), ps in fused_params(fused).items():
            cell = custom.layers[l][d]
            for n, p in zip(NAMES, ps):
                getattr(cell, n).copy_(p)


CASES = [dict(num_layers=1), dict(num_layers=2, bidirectional=True),
         dict(num_layers=3, residual=True), dict(num_layers=2, bidirectional=True, residual=True)]


@pytest.mark.parametrize("kw", CASES, ids=lambda k: "-".join(f"{a}={b}" for a, b in k.items()))
@pytest.mark.parametrize("lengths", [None, [7, 3, 5, 1]], ids=["full", "lengths"])
@pytest.mark.parametrize("cell", ["rnn_tanh", "rnn_relu", "irnn", "lstm", "gru"])
def test_fused_custom_parity(cell, lengths, kw):
    fused, custom = pair(cell, **kw)
    x = torch.randn(4, 7, I, dtype=torch.double)
    n = fused.num_layers * fused.dirs
    s0 = tuple(torch.randn(n, 4, H, dtype=torch.double) for _ in range(fused.state_size))
    lengths = None if lengths is None else torch.tensor(lengths)
    res = []
    for net in (fused, custom):
        xx = x.clone().requires_grad_()
        ss = tuple(s.clone().requires_grad_() for s in s0)
        out, state = net(xx, lengths=lengths, state=ss)
        w = torch.linspace(-1, 1, out.numel(), dtype=torch.double).view_as(out)
        loss = (out * w).sum() + sum((s * (k + 1)).sum() + s.pow(2).sum() for k, s in enumerate(state))
        loss.backward()
        res.append((out, state, xx.grad, [s.grad for s in ss]))
    (o1, s1, gx1, gs1), (o2, s2, gx2, gs2) = res
    tol = dict(atol=1e-10, rtol=1e-8)
    torch.testing.assert_close(o2, o1, **tol)
    for a, b in zip(s2, s1):
        torch.testing.assert_close(a, b, **tol)
    torch.testing.assert_close(gx2, gx1, **tol)
    for a, b in zip(gs2, gs1):
        torch.testing.assert_close(a, b, **tol)
    fp = fused_params(fused)
    for (l, d), ps in fp.items():
        cell_ = custom.layers[l][d]
        for name, p in zip(NAMES, ps):
            torch.testing.assert_close(getattr(cell_, name).grad, p.grad, **tol, msg=f"{name} l{l} d{d}")


def test_parity_float32_default_size():
    """The same in float32 at a bigger size, atol 1e-5 (what training actually runs)."""
    fused = Recurrent(16, build(ModelConfig, {"cell": "lstm", "hidden_size": 32, "num_layers": 2}, "model."))
    custom = Recurrent(16, build(ModelConfig, {"cell": "lstm", "hidden_size": 32, "num_layers": 2,
                                               "impl": "custom"}, "model."))
    copy_fused_to_custom(fused, custom)
    x = torch.randn(8, 20, 16)
    outs = []
    for net in (fused, custom):
        out, (h, c) = net(x)
        (out.square().mean() + c.sum()).backward()
        outs.append(out.detach())
    torch.testing.assert_close(outs[1], outs[0], atol=1e-5, rtol=1e-4)
    for (l, d), ps in fused_params(fused).items():
        for name, p in zip(NAMES, ps):
            torch.testing.assert_close(getattr(custom.layers[l][d], name).grad, p.grad, atol=1e-5, rtol=1e-4)
