"""CUDA checks (the `gpu` marker). Skipped, with the reason, where CUDA is absent; the test
session hides GPUs unless RNNBENCH_GPU_TESTS=1 (tests/conftest.py), which `bench/gpu_checks.sh`
sets. On a GPU host: `RNNBENCH_GPU_TESTS=1 pytest -m gpu -rs`, or the whole script."""
import json
import os

import pytest
import torch

from bench import config as C
from bench.schema import build
from bench.store import Store
from models.config import ModelConfig
from models.recurrent import Recurrent

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(),
                       reason="no CUDA device (on a GPU host: RNNBENCH_GPU_TESTS=1 pytest -m gpu, or bench/gpu_checks.sh)"),
]

# float32 on CUDA: cuDNN and the custom path sum in different orders (and cuBLAS may use TF32 unless
# it is off, as here); over 12 steps and 2 layers the outputs, states and gradients agree within:
ATOL, RTOL = 1e-4, 1e-3
TINY = ["task=adding", "task.T=10", "task.batch_size=16", "task.eval_size=64", "model.hidden_size=32",
        "trainer.max_steps=30", "trainer.val_every=15"]


NAMES = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")


def _matched(fused, custom):
    """[(fused parameter, the custom path's parameter)] in the same layout (as test_models_parity)."""
    out = []
    for m, rnn in enumerate(fused.rnns):
        for layer in range(rnn.num_layers):
            for d, sfx in enumerate(("", "_reverse")[:fused.dirs]):
                cell_ = custom.layers[m + layer][d]
                out += [(getattr(rnn, f"{n}_l{layer}{sfx}"), getattr(cell_, n)) for n in NAMES]
    return out


def _pair(cell: str, **kw):
    torch.manual_seed(0)
    fused = Recurrent(8, build(ModelConfig, {"cell": cell, "hidden_size": 16, **kw}, "model.")).cuda()
    custom = Recurrent(8, build(ModelConfig, {"cell": cell, "hidden_size": 16, "impl": "custom", **kw},
                                "model.")).cuda()
    assert fused.fused and not custom.fused
    with torch.no_grad():
        for a, b in _matched(fused, custom):
            b.copy_(a)
    return fused, custom


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn_tanh"])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_fused_matches_custom_on_cuda_float32(cell, bidirectional):
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    fused, custom = _pair(cell, num_layers=2, bidirectional=bidirectional)
    x = torch.randn(5, 12, 8, device="cuda")
    lengths = torch.tensor([12, 9, 12, 3, 7])
    outs = []
    for net in (fused, custom):
        xi = x.clone().requires_grad_(True)
        out, state = net(xi, lengths=lengths)
        (out.square().sum() + sum(s.square().sum() for s in state)).backward()
        outs.append((out, state, xi.grad))
    (of, sf, gf), (oc, sc, gc) = outs
    torch.testing.assert_close(of, oc, atol=ATOL, rtol=RTOL)
    for a, b in zip(sf, sc):
        torch.testing.assert_close(a, b, atol=ATOL, rtol=RTOL)
    torch.testing.assert_close(gf, gc, atol=ATOL, rtol=RTOL)
    for a, b in _matched(fused, custom):
        torch.testing.assert_close(a.grad, b.grad, atol=ATOL, rtol=RTOL)


def test_a_run_trains_on_the_gpu_with_no_flags(tmp_path):
    from bench.train import run

    r = run(C.load(None, TINY), tmp_path / "r", wandb_mode="disabled")
    assert r["status"] == "done" and r["device"].startswith("cuda"), r
    assert r["metrics"]["test/loss"] < r["baseline"]["test/loss"]


def test_packed_runs_on_cuda_equal_their_unpacked_runs(tmp_path):
    """bench.packed on the GPU with no flags (accelerator auto), float64: every member equals its
    unpacked run on the same GPU within 1e-6 (as tests/test_packed.py checks on the CPU)."""
    from bench.packed import run_group
    from bench.train import run

    ov = ["task=copy", "model.cell=gru", "task.T=5", "task.batch_size=4", "task.eval_size=10",
          "model.hidden_size=8", "trainer.val_every=10", "trainer.max_steps=20", "trainer.precision=64-true"]
    cfgs = [C.load(None, ov + [f"seed={s}"]) for s in range(3)]
    packed = run_group(cfgs, tmp_path / "packed", wandb_mode="disabled")
    for c, p in zip(cfgs, packed):
        a = run(c, tmp_path / "alone", wandb_mode="disabled")
        assert p["status"] == a["status"] == "done" and p["implementation"]["device"] == "cuda:0"
        assert a["device"].startswith("cuda")
        assert a["metrics"].keys() == p["metrics"].keys()
        assert all(abs(a["metrics"][k] - p["metrics"][k]) <= 1e-6 for k in a["metrics"]), (a["metrics"], p["metrics"])


def test_local_sweep_on_one_gpu_with_two_runs(tmp_path):
    from bench.sweep import LocalExecutor, expand

    sweep = tmp_path / "two.yaml"
    sweep.write_text("name: two_gpu\nmethod: grid\nparameters:\n" +
                     "".join(f"  {k}: {{value: {v}}}\n" for k, v in (o.split("=", 1) for o in TINY)) +
                     "  seed: {values: [0, 1]}\n")
    name, cfgs = expand(sweep)
    store = Store(tmp_path / "r")
    states = LocalExecutor(store, name, workers=2, wandb_mode="disabled", progress=False).run(cfgs)
    assert list(states.values()) == ["done", "done"], states
    for c in cfgs:
        r = store.result(c.hash)
        assert r["device"].startswith("cuda"), r["device"]


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="DDP check needs two GPUs")
def test_ddp_run_on_two_gpus(tmp_path):
    import subprocess
    import sys

    over = TINY + ["trainer.devices=2", "trainer.strategy=ddp"]
    p = subprocess.run([sys.executable, "-m", "bench.cli", "train", *over, "--store", str(tmp_path / "r"),
                        "--wandb", "disabled"], capture_output=True, text=True, timeout=600,
                       env=dict(os.environ))
    assert p.returncode == 0, p.stdout + p.stderr
    r = json.loads((Store(tmp_path / "r").run_dir(C.load(None, over).hash) / "result.json").read_text())
    assert r["status"] == "done" and r["device"].startswith("cuda"), r
