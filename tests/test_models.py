"""Every registry cell through models.recurrent.Recurrent: shapes, gradients, lengths masking,
the hand-written BPTT against the autograd step loop, and the config errors."""
import pytest
import torch

from bench.config import ConfigError, build
from models.cells.base import loop_scan
from models.config import ModelConfig
from models.recurrent import Recurrent, choose
from models.registry import CELLS, FEEDBACK_ONLY, cell_class

I, H = 3, 4


def make(cell, **kw) -> Recurrent:
    cfg = build(ModelConfig, {"cell": cell, "hidden_size": H, **kw}, "model.")
    return Recurrent(I, cfg).double()


def _paths(name):
    """(impl) values worth testing: both paths for variants torch can express."""
    cfg = build(ModelConfig, {"cell": name}, "model.")
    return ["fused", "custom"] if cell_class(name).fusable(cfg) else ["auto"]


# every cell with a hidden-to-hidden weight (jordan's recurrence is the output feedback: tests/test_feedback.py)
STACK_CELLS = [n for n in CELLS if n not in FEEDBACK_ONLY]
CELL_PATHS = [(n, p) for n in STACK_CELLS for p in _paths(n)]
STACKS = [(1, False, False), (1, True, False), (2, False, False), (2, True, False),
          (2, False, True), (2, True, True)]


@pytest.mark.parametrize("layers,bi,res", STACKS, ids=lambda v: str(v))
@pytest.mark.parametrize("cell,impl", CELL_PATHS)
def test_shapes_and_grads(cell, impl, layers, bi, res):
    net = make(cell, impl=impl, num_layers=layers, bidirectional=bi, residual=res)
    assert net.fused == (net.implementation == "fused")
    assert net.implementation == choose(cell_class(cell), net.cfg)
    if impl == "custom" or not cell_class(cell).fusable(net.cfg):
        assert net.implementation == "custom"
    dirs = 2 if bi else 1
    assert net.output_size == H * dirs
    x = torch.randn(2, 5, I, dtype=torch.double)
    out, state = net(x)
    assert out.shape == (2, 5, H * dirs)
    assert len(state) == net.state_size
    for s, w in zip(state, net.state_widths):
        assert s.shape == (layers * dirs, 2, w)
    (out.sum() + sum(s.pow(2).sum() for s in state)).backward()
    for name, p in net.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name
    if bi:
        return
    # (unidirectional) carrying the state over chunks equals one pass
    out2, state2 = net(x[:, :3])
    out3, state3 = net(x[:, 3:], state=state2)
    torch.testing.assert_close(torch.cat([out2, out3], 1), out)
    for a, b in zip(state3, state):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("bi", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("cell,impl", CELL_PATHS)
def test_lengths_masking(cell, impl, bi):
    """A padded batch gives, at the valid steps and in the final state, exactly what each
    sequence gives alone; padded steps output zeros; gradients do not see the padding."""
    net = make(cell, impl=impl, num_layers=2, bidirectional=bi, residual=True)
    lengths = torch.tensor([6, 2, 4])
    x = torch.randn(3, 6, I, dtype=torch.double)
    pad = x.clone()
    for b, L in enumerate(lengths):
        pad[b, L:] = 1e3 * torch.randn(6 - L, I, dtype=torch.double)   # garbage in padding
    out, state = net(pad, lengths=lengths)
    for b, L in enumerate(lengths.tolist()):
        o1, s1 = net(x[b:b + 1, :L])
        torch.testing.assert_close(out[b:b + 1, :L], o1)
        assert (out[b, L:] == 0).all()
        for a, c in zip(state, s1):
            torch.testing.assert_close(a[:, b:b + 1], c)
    pad.requires_grad_(True)
    out, state = net(pad, lengths=lengths)
    (out.sum() + state[0].sum()).backward()
    for b, L in enumerate(lengths.tolist()):
        assert (pad.grad[b, L:] == 0).all()


@pytest.mark.parametrize("cell", STACK_CELLS)
def test_scan_matches_autograd_loop(cell):
    """The hand-written BPTT of each cell equals autograd through `step` (float64), with a
    mask, a given initial state and gradients from outputs and final states."""
    cfg = build(ModelConfig, {"cell": cell, "hidden_size": 5}, "model.")
    c = cell_class(cell)(3, 5, cfg).double()
    with torch.no_grad():
        for p in c.parameters():
            p.normal_(0, 0.5)
    x = torch.randn(6, 4, 3, dtype=torch.double)
    s0 = tuple(torch.randn(4, w, dtype=torch.double) for w in c.state_widths())
    mask = (torch.arange(6)[:, None] < torch.tensor([6, 2, 4, 1])[None]).unsqueeze(-1)
    w = torch.randn(6, 4, 5, dtype=torch.double)
    for m in (None, mask):
        results = []
        for scan in (c.scan, lambda xp, s, mm: loop_scan(c, xp, s, mm)):
            c.zero_grad()
            xx = x.clone().requires_grad_()
            ss = tuple(s.clone().requires_grad_() for s in s0)
            hs, fin = scan(c.project(xx), ss, m)
            loss = (hs * w).sum() + sum((f * (k + 1.5)).sum() + f.pow(2).sum() for k, f in enumerate(fin))
            loss.backward()
            results.append([hs, *fin, xx.grad, *[s.grad for s in ss],
                            *[p.grad.clone() for p in c.parameters()]])
        for a, b in zip(*results):
            torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-8)


def test_gradcheck_lstm_scan():
    """torch.autograd.gradcheck on the full-switch LSTM scan (peepholes + FGR + mask)."""
    cfg = build(ModelConfig, {"cell": "lstm_fgr", "hidden_size": 3}, "model.")
    c = cell_class("lstm_fgr")(2, 3, cfg).double()
    mask = (torch.arange(4)[:, None] < torch.tensor([4, 2])[None]).unsqueeze(-1)
    x = torch.randn(4, 2, 2, dtype=torch.double, requires_grad=True)
    s0 = tuple(torch.randn(2, w, dtype=torch.double, requires_grad=True) for w in c.state_widths())

    def f(x, h, cc, a):
        hs, fin = c.scan(c.project(x), (h, cc, a), mask)
        return (hs, *fin)
    assert torch.autograd.gradcheck(f, (x, *s0))


# ---------------------------------------------------------------- config errors

def _load_model(*overrides):
    """The model section through the full loader when the synthetic tasks exist."""
    try:
        from bench.config import load
        import tasks.synthetic  # noqa: F401
    except ImportError:
        data = {}
        for o in overrides:
            k, v = o.split("=", 1)
            data[k.split(".", 1)[1]] = {"true": True, "false": False}.get(v, int(v) if v.isdigit() else v)
        return build(ModelConfig, data, "model.")
    return load(None, ["task.name=copy", *overrides]).model


@pytest.mark.parametrize("overrides,message", [
    (["model.cell=gru", "model.peepholes=true"],
     "model.peepholes: not available for cell 'gru'; allowed cells: lstm, lstm_vanilla"),
    (["model.cell=lstm_vanilla", "model.impl=fused"],
     "model.impl: 'fused' not possible for this variant; allowed: auto, custom"),
    (["model.cell=lstm", "model.residual=true", "model.num_layers=1"],
     "model.residual: needs num_layers >= 2; got num_layers=1"),
    (["model.cell=lstm_nig", "model.input_gate=true"],
     "model.input_gate: cell 'lstm_nig' fixes it to False"),
    (["model.cell=lstm_cifg", "model.forget_bias=1"], "model.forget_bias: needs a forget gate"),
])
def test_config_errors(overrides, message):
    with pytest.raises(ConfigError) as e:
        _load_model(*overrides)
    text = str(e.value)
    assert "\n" not in text
    assert text.startswith(message)


def test_config_ok():
    assert _load_model("model.cell=lstm_fgr").gate_recurrence is True
    assert _load_model("model.cell=lstm", "model.forget_bias=1").forget_bias == 1.0


@pytest.mark.parametrize("cell", ["lstm_vanilla", "lstm_fgr", "gru", "rnn_relu"])
def test_custom_path_under_bf16_autocast(cell):
    """Mixed precision (trainer.precision=bf16-mixed) on the custom path: runs, float32 grads."""
    cfg = build(ModelConfig, {"cell": cell, "hidden_size": 8, "impl": "custom", "num_layers": 2}, "model.")
    net = Recurrent(I, cfg)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, state = net(torch.randn(2, 5, I), lengths=torch.tensor([5, 3]))
        loss = out.float().square().mean()
    loss.backward()
    for name, p in net.named_parameters():
        assert p.grad is not None and p.grad.dtype == torch.float32 and torch.isfinite(p.grad).all(), name


def test_inference_matches_training_forward():
    """no_grad (rolling buffers) gives the same outputs and state as the grad-enabled forward."""
    for cell in ("lstm_vanilla", "lstm_fgr", "gru"):
        net = make(cell, impl="custom", num_layers=2, bidirectional=True)
        x = torch.randn(3, 7, I, dtype=torch.double)
        out, state = net(x, lengths=torch.tensor([7, 4, 2]))
        with torch.no_grad():
            out2, state2 = net(x, lengths=torch.tensor([7, 4, 2]))
        torch.testing.assert_close(out2, out.detach())
        for a, b in zip(state2, state):
            torch.testing.assert_close(a, b.detach())
