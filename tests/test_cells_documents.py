"""Cells of the design documents (issue 18): the GRU with the reset gate before the recurrent
matmul, the leaky integrator, the deep transition RNN and the LSTM built gate by gate. Each one
against its equations written out step by step, its config errors and a short learning run."""
import pytest
import torch

from bench import config as C
from bench.config import build
from bench.schema import ConfigError
from bench.train import run
from models.config import ModelConfig
from models.recurrent import Recurrent

I, H, B, T = 3, 4, 2, 6
sig, tanh = torch.sigmoid, torch.tanh


def make(cell, **kw) -> Recurrent:
    return Recurrent(I, build(ModelConfig, {"cell": cell, "hidden_size": H, **kw}, "model.")).double()


def randomise(net, scale=0.6):
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(0, scale)
    return net


def blocks(t, names):
    return {n: t[k * H:(k + 1) * H].detach() for k, n in enumerate(names)}


def gru_reference(x, cell, reset_after):
    W, R = blocks(cell.weight_ih, "rzn"), blocks(cell.weight_hh, "rzn")
    bi, bh = blocks(cell.bias_ih, "rzn"), blocks(cell.bias_hh, "rzn")
    y, outs = x.new_zeros(B, H), []
    for t in range(T):
        xt = x[:, t]
        r = sig(xt @ W["r"].T + bi["r"] + y @ R["r"].T + bh["r"])
        u = sig(xt @ W["z"].T + bi["z"] + y @ R["z"].T + bh["z"])
        if reset_after:
            n = tanh(xt @ W["n"].T + bi["n"] + r * (y @ R["n"].T + bh["n"]))
        else:
            n = tanh(xt @ W["n"].T + (r * y) @ R["n"].T + bi["n"] + bh["n"])
        y = (1 - u) * n + u * y
        outs.append(y)
    return torch.stack(outs, 1)


def test_gru_reset_after_false_is_the_documents_form_and_differs_from_torch():
    torch.manual_seed(0)
    a = randomise(make("gru", impl="custom"))
    b = make("gru", reset_after=False)
    assert b.implementation == "custom" and not b.layers[0][0].reset_after
    b.load_state_dict(a.state_dict())                       # same weights, the other form
    x = torch.randn(B, T, I, dtype=torch.double)
    ya, yb = a(x)[0], b(x)[0]
    torch.testing.assert_close(ya, gru_reference(x, a.layers[0][0], True))
    torch.testing.assert_close(yb, gru_reference(x, b.layers[0][0], False))
    assert (ya - yb).abs().max() > 0.05                     # the two forms really differ
    fused = make("gru", impl="fused")                        # default: torch's form, both paths
    fused.load_state_dict(a.state_dict())
    torch.testing.assert_close(fused(x)[0], ya)


def test_gru_reset_after_false_gradients_match_autograd_of_the_equations():
    torch.manual_seed(1)
    net = randomise(make("gru", reset_after=False))
    x = torch.randn(B, T, I, dtype=torch.double)
    lengths = torch.tensor([T, T - 2])
    out, (h,) = net(x, lengths)
    assert torch.equal(out[1, T - 2:], torch.zeros_like(out[1, T - 2:]))
    torch.testing.assert_close(h[0, 1], out[1, T - 3])     # state frozen after the last valid step
    assert torch.autograd.gradcheck(lambda inp: net(inp)[0], (x.requires_grad_(),))


@pytest.mark.parametrize("learned", [False, True])
def test_leaky_equations(learned):
    torch.manual_seed(2)
    net = randomise(make("leaky", leak=0.8, leak_learned=learned))
    cell = net.layers[0][0]
    if learned:
        assert isinstance(cell.leak_logit, torch.nn.Parameter)
        with torch.no_grad():
            cell.leak_logit.copy_(torch.linspace(-2, 2, H))
        alpha = sig(torch.linspace(-2, 2, H)).double()
    else:
        alpha = torch.full((H,), 0.8, dtype=torch.double)
        assert "leak_logit" not in dict(cell.named_parameters())
    x = torch.randn(B, T, I, dtype=torch.double)
    W, R, b = cell.weight_ih.detach(), cell.weight_hh.detach(), (cell.bias_ih + cell.bias_hh).detach()
    h, outs = x.new_zeros(B, H), []
    for t in range(T):
        h = alpha * h + (1 - alpha) * tanh(x[:, t] @ W.T + h @ R.T + b)
        outs.append(h)
    torch.testing.assert_close(net(x)[0], torch.stack(outs, 1))
    if learned:                                              # alpha gets a gradient
        net(x)[0].sum().backward()
        assert cell.leak_logit.grad.abs().sum() > 0


def test_leaky_learned_starts_at_the_configured_alpha():
    cell = make("leaky", leak=0.9, leak_learned=True).layers[0][0]
    torch.testing.assert_close(cell.leak().double(), torch.full((H,), 0.9, dtype=torch.double))


@pytest.mark.parametrize("L", [1, 3])
def test_deep_transition_equations(L):
    torch.manual_seed(3)
    net = randomise(make("deep_transition", transition_layers=L))
    cell = net.layers[0][0]
    if L > 1:
        assert cell.weight_tr.shape == (L - 1, H, H) and cell.bias_tr.shape == (L - 1, H)
    x = torch.randn(B, T, I, dtype=torch.double)
    W, R, b = cell.weight_ih.detach(), cell.weight_hh.detach(), (cell.bias_ih + cell.bias_hh).detach()
    h, outs = x.new_zeros(B, H), []
    for t in range(T):
        a = tanh(x[:, t] @ W.T + h @ R.T + b)
        for k in range(L - 1):
            a = tanh(a @ cell.weight_tr[k].detach().T + cell.bias_tr[k].detach())
        h = a
        outs.append(h)
    torch.testing.assert_close(net(x)[0], torch.stack(outs, 1))
    if L == 1:                                               # L = 1 is the Elman tanh-RNN
        elman = make("rnn_tanh", impl="custom")
        elman.load_state_dict(net.state_dict())
        torch.testing.assert_close(elman(x)[0], net(x)[0])


LADDER = {"ladder_residual": "g", "ladder_input": "ig", "ladder_forget": "ifg", "ladder_output": "ifgo"}


@pytest.mark.parametrize("cell", list(LADDER))
def test_ladder_step_equations(cell):
    """s^t = f * s^{t-1} + i * z^t, y^t = o * tanh(s^t); a gate the step lacks is 1."""
    torch.manual_seed(4)
    net = randomise(make(cell, impl="custom"))
    c = net.layers[0][0]
    names = LADDER[cell]
    assert "".join(c.blocks) == names
    W, R = blocks(c.weight_ih, names), blocks(c.weight_hh, names)
    b = blocks(c.bias_ih + c.bias_hh, names)
    x = torch.randn(B, T, I, dtype=torch.double)
    y, s, outs = x.new_zeros(B, H), x.new_zeros(B, H), []
    for t in range(T):
        pre = {n: x[:, t] @ W[n].T + y @ R[n].T + b[n] for n in names}
        gate = {n: sig(pre[n]) if n in pre else 1.0 for n in "ifo"}
        s = gate["f"] * s + gate["i"] * tanh(pre["g"])
        y = gate["o"] * tanh(s)
        outs.append(y)
    torch.testing.assert_close(net(x)[0], torch.stack(outs, 1))


def test_ladder_output_is_the_lstm_on_both_paths():
    torch.manual_seed(5)
    a, b = randomise(make("lstm", impl="custom")), make("ladder_output", impl="fused")
    b.load_state_dict(a.state_dict())
    x = torch.randn(B, T, I, dtype=torch.double)
    torch.testing.assert_close(a(x)[0], b(x)[0])


@pytest.mark.parametrize("overrides, message", [
    (["model.cell=lstm", "model.reset_after=false"],
     "model.reset_after: not available for cell 'lstm'; allowed cells: gru"),
    (["model.cell=gru", "model.reset_after=false", "model.impl=fused"],
     "model.impl: 'fused' not possible for this variant; allowed: auto, custom"),
    (["model.cell=leaky", "model.leak=1.5"], "model.leak: invalid value 1.5; allowed: a number < 1"),
    (["model.cell=leaky", "model.leak=0"], "model.leak: invalid value 0.0; allowed: a number > 0"),
    (["model.cell=rnn_tanh", "model.leak_learned=true"],
     "model.leak_learned: not available for cell 'rnn_tanh'; allowed cells: leaky"),
    (["model.cell=deep_transition", "model.transition_layers=0"],
     "model.transition_layers: invalid value 0; allowed: a number >= 1"),
    (["model.cell=gru", "model.transition_layers=2"],
     "model.transition_layers: not available for cell 'gru'; allowed cells: deep_transition"),
    (["model.cell=ladder_input", "model.forget_gate=true"],
     "model.forget_gate: cell 'ladder_input' fixes it to False; drop the key or use cell 'lstm'"),
])
def test_bad_values_are_one_line_errors(overrides, message):
    with pytest.raises(ConfigError) as e:
        C.load(None, ["task=adding", *overrides])
    assert str(e.value) == message


@pytest.mark.parametrize("preset, cell", [("gru_cho", "gru"), ("leaky", "leaky"),
                                          ("deep_transition", "deep_transition"),
                                          ("ladder_forget", "ladder_forget")])
def test_presets_load(preset, cell):
    cfg = C.load(None, ["task=adding", f"model={preset}"])
    assert cfg.model.cell == cell


@pytest.mark.parametrize("model", [["model=gru_cho"], ["model=leaky"], ["model=deep_transition"],
                                   ["model.cell=ladder_residual", "task.T=5"],   # unbounded state: short T
                                   ["model.cell=ladder_input"], ["model.cell=ladder_forget"]])
def test_learns_the_adding_problem_beats_the_baseline(model, store):
    cfg = C.load(None, ["task=adding", "task.T=10", *model, "model.hidden_size=32", "optim.lr=0.01",
                        "trainer.max_steps=300", "trainer.val_every=300", "task.eval_size=256"])
    r = run(cfg, store, wandb_mode="disabled")
    assert r["metrics"]["test/loss"] < 0.9 * r["baseline"]["test/loss"], r["metrics"]   # baseline 0.167
