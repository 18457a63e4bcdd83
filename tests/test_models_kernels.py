"""The C++ CPU scans (models/cells/kernels.py) against the Python scans they replace, float64:
outputs, final states and every gradient, with lengths, stacked and bidirectional; the auto
choice of implementation; fused <-> custom: same initial weights, state dicts load across."""
import pytest
import torch

from bench.config import build
from models.cells import kernels
from models.config import ModelConfig
from models.recurrent import Recurrent, choose
from models.registry import CELLS, FEEDBACK_ONLY, cell_class

I, H = 3, 5

needs_kernels = pytest.mark.skipif(not kernels.available(), reason="C++ scans could not be built here")


def make(cell, **kw):
    return Recurrent(I, build(ModelConfig, {"cell": cell, "hidden_size": H, **kw}, "model."))


def run(net, x, s0, lengths, cpp: bool):
    kernels.set_enabled(cpp)
    try:
        xx = x.clone().requires_grad_()
        ss = tuple(s.clone().requires_grad_() for s in s0)
        net.zero_grad(set_to_none=True)
        out, state = net(xx, lengths=lengths, state=ss)
        w = torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out)
        loss = (out * w).sum() + sum((s * (k + 1)).sum() + s.pow(2).sum() for k, s in enumerate(state))
        loss.backward()
        return [out, *state, xx.grad, *(s.grad for s in ss)], {n: p.grad for n, p in net.named_parameters()}
    finally:
        kernels.set_enabled(True)


@needs_kernels
@pytest.mark.parametrize("lengths", [None, [7, 3, 5, 1]], ids=["full", "lengths"])
@pytest.mark.parametrize("stack", [dict(num_layers=1), dict(num_layers=2, bidirectional=True, residual=True)],
                         ids=["1layer", "2layer-bi-res"])
@pytest.mark.parametrize("cell", [n for n in CELLS if n not in FEEDBACK_ONLY])   # jordan: test_feedback.py
def test_cpp_scan_equals_python_scan(cell, stack, lengths):
    net = make(cell, impl="custom", **stack).double()
    with torch.no_grad():                           # random, non-trivial peepholes / FGR too
        for p in net.parameters():
            p.uniform_(-0.6, 0.6)
    x = torch.randn(4, 7, I, dtype=torch.double)
    n = net.num_layers * net.dirs
    s0 = tuple(torch.randn(n, 4, w, dtype=torch.double) for w in net.state_widths)
    lengths = None if lengths is None else torch.tensor(lengths)
    (vals_c, grads_c), (vals_p, grads_p) = run(net, x, s0, lengths, True), run(net, x, s0, lengths, False)
    tol = dict(atol=1e-12, rtol=1e-10)
    for a, b in zip(vals_c, vals_p):
        torch.testing.assert_close(a, b, **tol)
    assert grads_c.keys() == grads_p.keys()
    for name in grads_p:
        torch.testing.assert_close(grads_c[name], grads_p[name], **tol, msg=name)


@needs_kernels
@pytest.mark.parametrize("cell", ["lstm_vanilla", "lstm_fgr", "gru", "rnn_tanh"])
def test_cpp_scan_float32_and_inference(cell):
    """float32 at a training size (atol 1e-5), and no_grad (rolling buffers) = grad forward."""
    net = Recurrent(10, build(ModelConfig, {"cell": cell, "hidden_size": 40, "impl": "custom"}, "model."))
    x = torch.randn(8, 30, 10)
    s0 = tuple(torch.zeros(1, 8, w) for w in net.state_widths)
    (vc, gc), (vp, gp) = run(net, x, s0, None, True), run(net, x, s0, None, False)
    for a, b in zip(vc, vp):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
    for name in gp:
        torch.testing.assert_close(gc[name], gp[name], atol=1e-5, rtol=1e-4, msg=name)
    with torch.no_grad():
        out, state = net(x)
    torch.testing.assert_close(out, vc[0].detach())


@needs_kernels
def test_relu_scan_keeps_nan():
    """A diverged IRNN must stay NaN (the divergence check reads the loss)."""
    net = make("irnn", impl="custom")
    with torch.no_grad():
        net.layers[0][0].weight_ih.fill_(float("nan"))
    assert torch.isnan(net(torch.randn(2, 4, I))[0]).all()


def test_auto_choice():
    cfg = lambda cell, **kw: build(ModelConfig, {"cell": cell, **kw}, "model.")
    k = "custom" if kernels.available() else "fused"
    for cell in ("gru", "rnn_tanh", "rnn_relu", "irnn"):
        assert choose(cell_class(cell), cfg(cell), "cpu") == k
        assert choose(cell_class(cell), cfg(cell), "cuda") == "fused"
        assert choose(cell_class(cell), cfg(cell, impl="fused"), "cpu") == "fused"
        assert choose(cell_class(cell), cfg(cell, num_layers=2, dropout=0.3), "cpu") == "fused"
        assert choose(cell_class(cell), cfg(cell, num_layers=2), "cpu") == k
    for cell in ("lstm", "lstm_np"):
        assert choose(cell_class(cell), cfg(cell), "cpu") == "fused"
        assert choose(cell_class(cell), cfg(cell, impl="custom"), "cpu") == "custom"
    assert choose(cell_class("lstm_vanilla"), cfg("lstm_vanilla"), "cuda") == "custom"
    net = make("gru")
    assert net.implementation == k and net.fused == (k == "fused")
    assert make("lstm").implementation == "fused"


def test_kernels_off_or_unbuildable_keeps_torch_fused_gru_and_rnn(monkeypatch):
    """RNNBENCH_CPU_KERNELS=0 (or no compiler): auto is what it was before the C++ scans, and
    the custom path runs the Python scans and F.linear."""
    cfg = build(ModelConfig, {"cell": "gru"}, "model.")
    monkeypatch.setenv("RNNBENCH_CPU_KERNELS", "0")
    assert not kernels.available() and not kernels.enabled() and not kernels.usable(torch.zeros(1))
    assert choose(cell_class("gru"), cfg, "cpu") == "fused"
    assert make("rnn_tanh").implementation == "fused"
    monkeypatch.delenv("RNNBENCH_CPU_KERNELS")
    monkeypatch.setattr(kernels, "available", lambda: False)
    assert choose(cell_class("gru"), cfg, "cpu") == "fused"


@pytest.mark.parametrize("stack", [dict(num_layers=1), dict(num_layers=2, bidirectional=True),
                                   dict(num_layers=3, residual=True)], ids=["1", "2bi", "3res"])
@pytest.mark.parametrize("cell", ["gru", "rnn_tanh", "irnn", "lstm"])
def test_fused_and_custom_same_init_and_state_dicts_load_across(cell, stack):
    nets = []
    for impl in ("fused", "custom"):
        torch.manual_seed(3)
        nets.append(make(cell, impl=impl, **stack))
        nets[-1].after = torch.rand(3)              # the same random numbers are left after
    fused, custom = nets
    torch.testing.assert_close(fused.after, custom.after, rtol=0, atol=0)
    keys_f, keys_c = fused.param_keys(), custom.param_keys()
    sf, sc = fused.state_dict(), custom.state_dict()
    for k in keys_f:
        torch.testing.assert_close(sf[keys_f[k]], sc[keys_c[k]], rtol=0, atol=0)
    # parameter order (what optimizer states are keyed by) is the same
    assert [keys_f[k] for k in keys_f] == [n for n, _ in fused.named_parameters()]
    assert [keys_c[k] for k in keys_c] == [n for n, _ in custom.named_parameters()]
    with torch.no_grad():
        for p in custom.parameters():
            p.add_(0.1 * torch.randn_like(p))
    fused.load_state_dict(custom.state_dict())       # custom checkpoint -> fused model
    x = torch.randn(2, 6, I)
    torch.testing.assert_close(fused(x)[0], custom(x)[0], atol=1e-6, rtol=1e-5)
    other = make(cell, impl="custom", **stack)
    other.load_state_dict(fused.state_dict())        # fused checkpoint -> custom model
    torch.testing.assert_close(other(x)[0], custom(x)[0], atol=1e-6, rtol=1e-5)
