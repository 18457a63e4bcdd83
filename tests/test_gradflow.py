"""The gradient-flow diagnostic: measured norms against full-sequence autograd, trained runs, the CLI."""
from __future__ import annotations

import json
import math

import pytest

from bench import cli
from report_sweep import results


# ---------------------------------------------------------------- gradflow


def test_gradflow_measure_init_is_finite_and_tanh_vanishes():
    from reports.gradflow import measure

    for cell in ("rnn_tanh", "lstm", "gru"):
        m = measure({"cell": cell, "hidden_size": 16}, 3, 40, batch=4)
        assert m["lags"] == list(range(40)) and len(m["norm"]) == 40
        assert all(math.isfinite(v) and v > 0 for v in m["norm"]), (cell, m["norm"])
    tanh = measure({"cell": "rnn_tanh", "hidden_size": 16}, 3, 40, batch=4)
    assert tanh["norm"][-1] < 1e-2 * tanh["norm"][0]  # vanishing at init (default uniform init)


def test_gradflow_refuses_output_feedback_in_one_line():
    from bench.schema import ConfigError
    from reports.gradflow import measure

    for where in ({"name": "copy"}, 3):
        with pytest.raises(ConfigError) as e:
            measure({"cell": "gru", "hidden_size": 8, "output_feedback": "teacher"}, where, 3, batch=2)
        assert str(e.value) == ("gradflow: model.output_feedback='teacher' is not supported (each step also reads "
                                "the previous output); allowed: none")


def test_gradflow_matches_full_sequence_autograd():
    """Stepping with carried state gives the same ∂l/∂h_t as one unrolled graph."""
    import torch

    from reports.gradflow import measure
    from bench.config import build
    from models.config import ModelConfig
    from models.recurrent import Recurrent

    m = measure({"cell": "rnn_tanh", "hidden_size": 6}, 2, 7, batch=3, seed=5)
    torch.manual_seed(5)
    g = torch.Generator().manual_seed(10_005)
    net = Recurrent(2, build(ModelConfig, {"cell": "rnn_tanh", "hidden_size": 6}, "model.")).double()
    x = torch.randn(3, 7, 2, generator=g).double()
    u = torch.randn(6, generator=g).double()
    u = u / u.norm()
    h = torch.zeros(3, 6, dtype=torch.float64)
    hs = []
    p = dict(net.named_parameters())
    w_ih, w_hh = next(v for k, v in p.items() if "weight_ih" in k), next(v for k, v in p.items() if "weight_hh" in k)
    b = next(v for k, v in p.items() if "bias_ih" in k) + next(v for k, v in p.items() if "bias_hh" in k)
    for t in range(7):
        h = torch.tanh(x[:, t] @ w_ih.T + h @ w_hh.T + b)
        h.retain_grad()
        hs.append(h)
    (h @ u).sum().backward()
    want = [float(hs[6 - k].grad.norm(dim=1).mean()) for k in range(7)]
    assert m["norm"] == pytest.approx(want, rel=1e-10)


def test_gradflow_trained_run_and_cli(sweep, tmp_path):
    from reports.gradflow import measure_run

    store = sweep["store"]
    h = next(r["hash"] for r in results(store) if r["result"] and r["result"]["status"] == "done"
             and r["config"]["model"]["cell"] == "lstm")
    r = measure_run(store, h, T=12, batch=4)
    for phase in ("init", "trained"):
        assert r[phase]["length"] == 12 + 2 * 3  # copy: T + 2 n_symbols steps
        assert all(math.isfinite(v) and v > 0 for v in r[phase]["norm"])
    assert r["init"]["norm"] != r["trained"]["norm"]
    out = tmp_path / "gf"
    assert cli.main(["gradflow", "--cell", "rnn_tanh", "gru", "--T", "10", "--set", "model.hidden_size=8",
                     "--run", h, "--store", str(store.root), "--out", str(out), "--batch", "4"]) == 0
    assert (out / "gradflow.png").read_bytes()[:4] == b"\x89PNG"
    rows = json.loads((out / "gradflow.json").read_text())
    assert {(x["phase"], x["label"].split()[0]) for x in rows} >= {("init", "rnn_tanh"), ("init", "gru"),
                                                                    ("trained", "lstm")}
    assert all(math.isfinite(v) for x in rows for v in x["norm"])
