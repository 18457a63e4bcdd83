"""The cells against the papers' equations written out step by step here (Greff et al. 2015
notation), each Greff switch's effect, and the per-gate-block initialisers."""
import math

import pytest
import torch

from bench.config import build
from models.config import ModelConfig
from models.recurrent import Recurrent
from models.registry import CELLS

I, H, B, T = 3, 4, 2, 6
sig, tanh = torch.sigmoid, torch.tanh
LSTMS = [n for n in CELLS if CELLS[n].path.endswith("LSTMCell")]


def make(cell, input_size=I, hidden=H, **kw) -> Recurrent:
    return Recurrent(input_size, build(ModelConfig, {"cell": cell, "hidden_size": hidden, **kw}, "model.")).double()


def randomise(net, scale=0.6):
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(0, scale)


def torch_params(net):
    """W, R, b (= b_ih + b_hh), b_ih, b_hh and the extras of the single layer, by block name."""
    if net.fused:
        rnn = net.rnns[0]
        wi, wh, bi, bh = rnn.weight_ih_l0, rnn.weight_hh_l0, rnn.bias_ih_l0, rnn.bias_hh_l0
        names = {torch.nn.LSTM: "ifgo", torch.nn.GRU: "rzn"}.get(type(rnn), "h")
        extras = {}
    else:
        cell = net.layers[0][0]
        wi, wh, bi, bh = cell.weight_ih, cell.weight_hh, cell.bias_ih, cell.bias_hh
        names = cell.blocks
        extras = dict(cell.named_parameters())
    sl = lambda t, k: t[k * H:(k + 1) * H].detach()
    P = {"W": {}, "R": {}, "b": {}, "bi": {}, "bh": {}}
    for k, n in enumerate(names):
        P["W"][n], P["R"][n] = sl(wi, k), sl(wh, k)
        P["bi"][n], P["bh"][n] = sl(bi, k), sl(bh, k)
        P["b"][n] = P["bi"][n] + P["bh"][n]
    P["p"] = {g: extras[f"w_c{g}"].detach() for g in "ifo" if f"w_c{g}" in extras}
    P["fgr"] = extras["weight_fgr"].detach() if "weight_fgr" in extras else None
    return P


def greff_lstm(x, P, cfg):
    """Greff et al. (2015) eqs., one step at a time, every switch spelled out."""
    y, c = x.new_zeros(B, H), x.new_zeros(B, H)
    W, R, b, p = P["W"], P["R"], P["b"], P["p"]
    sig_gates = [g for g in "ifo" if g in W]
    prev = {g: x.new_zeros(B, H) for g in sig_gates}      # FGR: gate activations at t-1
    outs = []
    for t in range(T):
        xt = x[:, t]

        def pre(g, cell_state=None):
            v = xt @ W[g].T + y @ R[g].T + b[g]
            if cfg.peepholes and cell_state is not None:
                v = v + p[g] * cell_state
            if cfg.gate_recurrence:
                for k, src in enumerate(sig_gates):
                    tgt = sig_gates.index(g)
                    v = v + prev[src] @ P["fgr"][tgt * H:(tgt + 1) * H, k * H:(k + 1) * H].T
            return v
        zbar = xt @ W["g"].T + y @ R["g"].T + b["g"]
        z = tanh(zbar) if cfg.input_activation else zbar
        i = sig(pre("i", c)) if cfg.input_gate else torch.ones_like(c)
        if cfg.coupled:
            f = 1 - i
        else:
            f = sig(pre("f", c)) if cfg.forget_gate else torch.ones_like(c)
        c = z * i + c * f
        o = sig(pre("o", c)) if cfg.output_gate else torch.ones_like(c)
        y = (tanh(c) if cfg.output_activation else c) * o
        prev = {"i": i, "f": f, "o": o}
        prev = {g: prev[g] for g in sig_gates}
        outs.append(y)
    return torch.stack(outs, 1), y, c


@pytest.mark.parametrize("cell", LSTMS)
def test_lstm_variants_follow_greff_equations(cell):
    net = make(cell)
    randomise(net)
    x = torch.randn(B, T, I, dtype=torch.double)
    out, state = net(x)
    ref, y, c = greff_lstm(x, torch_params(net), net.cfg)
    torch.testing.assert_close(out, ref)
    torch.testing.assert_close(state[0][0], y)
    torch.testing.assert_close(state[1][0], c)


def test_plain_lstm_is_torch_and_equations():
    """`lstm` runs torch.nn.LSTM (fused) and that is the no-peephole Greff LSTM."""
    net = make("lstm")
    assert net.fused and isinstance(net.rnns[0], torch.nn.LSTM)
    randomise(net)
    x = torch.randn(B, T, I, dtype=torch.double)
    torch.testing.assert_close(net(x)[0], greff_lstm(x, torch_params(net), net.cfg)[0])


def test_gru_equations():
    for impl in ("fused", "custom"):
        net = make("gru", impl=impl)
        randomise(net)
        P = torch_params(net)
        x = torch.randn(B, T, I, dtype=torch.double)
        y, outs = x.new_zeros(B, H), []
        W, R, bi, bh = P["W"], P["R"], P["bi"], P["bh"]
        for t in range(T):
            xt = x[:, t]
            r = sig(xt @ W["r"].T + bi["r"] + y @ R["r"].T + bh["r"])
            u = sig(xt @ W["z"].T + bi["z"] + y @ R["z"].T + bh["z"])
            n = tanh(xt @ W["n"].T + bi["n"] + r * (y @ R["n"].T + bh["n"]))
            y = (1 - u) * n + u * y
            outs.append(y)
        torch.testing.assert_close(net(x)[0], torch.stack(outs, 1))


@pytest.mark.parametrize("cell", ["rnn_tanh", "rnn_relu"])
def test_elman_equations(cell):
    for impl in ("fused", "custom"):
        net = make(cell, impl=impl)
        randomise(net)
        P = torch_params(net)
        act = torch.relu if cell == "rnn_relu" else tanh
        x = torch.randn(B, T, I, dtype=torch.double)
        y, outs = x.new_zeros(B, H), []
        for t in range(T):
            y = act(x[:, t] @ P["W"]["h"].T + y @ P["R"]["h"].T + P["b"]["h"])
            outs.append(y)
        torch.testing.assert_close(net(x)[0], torch.stack(outs, 1))


# ---------------------------------------------------------------- each switch's effect

SATURATE = 50.0  # sigmoid(50) == 1.0 exactly in float64


@pytest.mark.parametrize("variant,gate", [("lstm_nig", "i"), ("lstm_nfg", "f"), ("lstm_nog", "o")])
def test_missing_gate_is_gate_fixed_at_one(variant, gate):
    """NIG/NFG/NOG == the vanilla LSTM with that gate saturated at 1 (same other weights)."""
    var, van = make(variant), make("lstm_vanilla")
    randomise(var)
    cv, cn = var.layers[0][0], van.layers[0][0]
    assert gate not in cv.blocks and len(cv.blocks) == 3 and cv.weight_ih.shape == (3 * H, I)
    with torch.no_grad():
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            dst = getattr(cn, name)
            dst.zero_()
            for k, blk in enumerate(cv.blocks):
                j = "ifgo".index(blk)
                dst[j * H:(j + 1) * H] = getattr(cv, name)[k * H:(k + 1) * H]
        j = "ifgo".index(gate)
        cn.bias_ih[j * H:(j + 1) * H] = SATURATE
        for g in "ifo":
            getattr(cn, f"w_c{g}").copy_(getattr(cv, f"w_c{g}") if g != gate else torch.zeros(H))
    x = torch.randn(B, T, I, dtype=torch.double)
    torch.testing.assert_close(var(x)[0], van(x)[0])
    with torch.no_grad():
        cn.bias_ih[j * H:(j + 1) * H] = 0.0        # an unsaturated gate: different outputs
    assert not torch.allclose(var(x)[0], van(x)[0])


def _copy_shared(src, dst):
    with torch.no_grad():
        d = dict(dst.named_parameters())
        for n, p in src.named_parameters():
            if n in d and d[n].shape == p.shape:
                d[n].copy_(p)


@pytest.mark.parametrize("variant", ["lstm_niaf", "lstm_noaf", "lstm_fgr", "lstm_cifg", "lstm_np"])
def test_switch_changes_output(variant):
    """Same shared weights as vanilla: the variant's output differs, and the difference is the
    one its equation predicts (FGR with zero gate recurrence == vanilla)."""
    var, van = make(variant), make("lstm_vanilla")
    randomise(var)
    randomise(van)
    _copy_shared(var, van)
    x = torch.randn(B, T, I, dtype=torch.double)
    assert not torch.allclose(var(x)[0], van(x)[0])
    if variant == "lstm_fgr":
        with torch.no_grad():
            var.layers[0][0].weight_fgr.zero_()
        torch.testing.assert_close(var(x)[0], van(x)[0])


def test_niaf_noaf_in_the_linear_regime():
    """NIAF/NOAF drop a tanh: with tiny weights (tanh(x) ~ x) they match vanilla to a relative
    1e-4; with ordinary weights they differ by far more."""
    for variant in ("lstm_niaf", "lstm_noaf"):
        x = torch.randn(B, T, I, dtype=torch.double)
        rel = {}
        for scale in (1e-3, 0.6):
            var, van = make(variant), make("lstm_vanilla")
            randomise(var, scale=scale)
            _copy_shared(var, van)
            a, b = var(x)[0], van(x)[0]
            rel[scale] = ((a - b).abs().max() / a.abs().max()).item()
        assert rel[1e-3] < 1e-4 and rel[0.6] > 1e-2, rel


def test_cifg_forget_is_one_minus_input():
    """CIFG: with the block input z = 0 (NIAF-free: W_z = R_z = b_z = 0), c_t = (1 - i) c_{t-1}."""
    net = make("lstm_cifg")
    randomise(net)
    cell = net.layers[0][0]
    assert cell.blocks == ("i", "g", "o")
    with torch.no_grad():
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            getattr(cell, name)[H:2 * H] = 0.0
        cell.w_ci.zero_()
    x = torch.randn(B, 1, I, dtype=torch.double)
    c0 = torch.randn(1, B, H, dtype=torch.double)
    h0 = torch.zeros(1, B, H, dtype=torch.double)
    _, (h, c) = net(x, state=(h0, c0))
    i = sig(x[:, 0] @ cell.weight_ih[:H].T + cell.bias_ih[:H] + cell.bias_hh[:H])
    torch.testing.assert_close(c[0], (1 - i) * c0[0])


# ---------------------------------------------------------------- initialisers

def _cells(net):
    """(weight_ih, weight_hh, bias_ih, bias_hh, blocks) of every layer-direction."""
    if net.fused:
        names = {torch.nn.LSTM: "ifgo", torch.nn.GRU: "rzn"}.get(type(net.rnns[0]), "h")
        for rnn in net.rnns:
            for l in range(rnn.num_layers):
                for sfx in ("", "_reverse")[:net.dirs]:
                    yield [getattr(rnn, f"{n}_l{l}{sfx}") for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")] + [tuple(names)]
    else:
        for layer in net.layers:
            for c in layer:
                yield [c.weight_ih, c.weight_hh, c.bias_ih, c.bias_hh, c.blocks]


INIT_CELLS = [("lstm", "fused"), ("lstm", "custom"), ("lstm_vanilla", "auto"), ("lstm_cifg", "auto"),
              ("gru", "fused"), ("gru", "custom"), ("rnn_tanh", "fused"), ("rnn_relu", "custom")]


@pytest.mark.parametrize("cell,impl", INIT_CELLS)
def test_orthogonal_per_block(cell, impl):
    net = make(cell, input_size=8, hidden=8, impl=impl, num_layers=2, bidirectional=True,
               recurrent_init="orthogonal", input_init="orthogonal")
    n = 0
    for wi, wh, _, _, blocks in _cells(net):
        G = len(blocks)
        for W in (wh, wi):
            for k in range(G):
                Q = W[k * 8:(k + 1) * 8].detach()
                # square blocks: Q^T Q = I; wide input blocks (8 x 16, bidirectional input): Q Q^T = I
                QQ = Q.T @ Q if Q.shape[0] >= Q.shape[1] else Q @ Q.T
                torch.testing.assert_close(QQ, torch.eye(QQ.shape[0], dtype=Q.dtype), atol=1e-6, rtol=0)
                n += 1
        if G > 1:   # the stacked matrix is not orthogonal, its blocks are
            assert not torch.allclose(wh.T @ wh, torch.eye(8, dtype=wh.dtype), atol=1e-3)
    assert n > 0


@pytest.mark.parametrize("cell,impl", INIT_CELLS + [("irnn", "fused"), ("irnn", "custom")])
def test_identity_init(cell, impl):
    kw = {} if cell == "irnn" else {"recurrent_init": "identity"}
    net = make(cell, impl=impl, num_layers=2, **kw)
    for wi, wh, bi, bh, blocks in _cells(net):
        for k in range(len(blocks)):
            torch.testing.assert_close(wh[k * H:(k + 1) * H].detach(), torch.eye(H, dtype=wh.dtype))
        assert (bi == 0).all() and (bh == 0).all()


def test_xavier_input_init_bound():
    net = make("lstm", input_size=8, hidden=16, input_init="xavier_uniform")
    bound = math.sqrt(6 / (8 + 16))          # per H x I block, not the 4H x I matrix
    for wi, *_ in _cells(net):
        assert wi.abs().max() <= bound and wi.abs().max() > math.sqrt(6 / (8 + 64))


@pytest.mark.parametrize("value", [0.0, 1.0])
@pytest.mark.parametrize("cell,impl", [("lstm", "fused"), ("lstm", "custom"), ("lstm_vanilla", "auto"),
                                       ("lstm_nig", "auto")])
def test_forget_bias(cell, impl, value):
    net = make(cell, impl=impl, num_layers=2, bidirectional=True, forget_bias=value)
    for _, _, bi, bh, blocks in _cells(net):
        k = blocks.index("f")
        eff = (bi + bh)[k * H:(k + 1) * H]
        torch.testing.assert_close(eff, torch.full_like(eff, value))
        assert (bh[k * H:(k + 1) * H] == 0).all()
        other = torch.cat([(bi + bh)[j * H:(j + 1) * H] for j in range(len(blocks)) if j != k])
        assert not (other == value).all()
