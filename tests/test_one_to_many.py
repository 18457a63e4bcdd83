"""One-to-many (vector-to-sequence): the task definitions, the exact vector-blind baseline, what the
decoder is fed (teacher forcing, <BOS>), parity of the two decoding paths, learning beats the baseline."""
import math

import lightning as L
import pytest
import torch
import torch.nn.functional as F

from bench.config import ConfigError, load
from tasks.one_to_many import OneToManyTask
from tasks.registry import task_class


def make(*overrides):
    cfg = load(None, ["task.name=one_to_many", *overrides])
    return cfg, task_class("one_to_many")(cfg)


def trainer(steps: int) -> L.Trainer:
    return L.Trainer(max_steps=steps, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                     enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0,
                     accelerator="cpu", deterministic=True)


def test_registry_and_presets():
    assert task_class("one_to_many") is OneToManyTask
    assert load(None, ["task=vec2seq"]).task.condition == "class"
    assert load(None, ["task=code2seq"]).task.condition == "code"


def test_class_condition_emits_its_template():
    _, task = make("task.n_classes=5", "task.n_symbols=4", "task.length=6")
    v, y = task.make(200, torch.Generator().manual_seed(0))
    cls = v.argmax(-1)
    assert torch.equal(v, F.one_hot(cls, 5).float()) and torch.equal(y, task.templates[cls])
    assert task.templates.shape == (5, 6) and task.templates.max() < 4
    _, same = make("task.n_classes=5", "task.n_symbols=4", "task.length=6", "seed=9")
    _, other = make("task.n_classes=5", "task.n_symbols=4", "task.length=6", "task.data_seed=9")
    assert torch.equal(same.templates, task.templates) and not torch.equal(other.templates, task.templates)
    p = F.one_hot(task.templates, 4).float().mean(0)
    b = task.baseline()
    assert b["test/acc"] == pytest.approx(float(p.max(-1).values.mean()))
    assert b["test/loss"] == pytest.approx(float(-(p * p.clamp_min(1e-30).log()).sum(-1).mean()))


def test_code_condition_prints_the_bits():
    _, task = make("task.condition=code", "task.code_bits=12", "task.bits_per_symbol=3")
    v, y = task.make(50, torch.Generator().manual_seed(0))
    bits = ((v + 1) / 2).long().view(50, 4, 3)
    assert set(v.unique().tolist()) == {-1.0, 1.0} and y.shape == (50, 4)
    assert torch.equal(y, bits[..., 0] + 2 * bits[..., 1] + 4 * bits[..., 2])
    assert task.baseline() == {"test/acc": 1 / 8, "test/loss": math.log(8), "test/seq_acc": 8 ** -4}


@pytest.mark.parametrize("inject", ["state", "input"])
def test_decoder_inputs_bos_and_path_parity(monkeypatch, inject):
    cfg, task = make("task.length=5", f"task.inject={inject}", "model.hidden_size=16", "model.num_layers=2")
    m = task.module().eval()
    v, y = task.make(8, torch.Generator().manual_seed(1))
    assert m.head.out_features == task.V and m.embed.num_embeddings == task.V + 1   # <BOS> = id V, never an output
    fed = []
    m.embed.register_forward_hook(lambda mod, args, out: fed.append(args[0]))
    with torch.no_grad():
        whole = m(v, y, 1.0)
        assert torch.equal(fed[-1], torch.cat([torch.full((8, 1), task.V), y[:, :-1]], 1))
        fed.clear()
        monkeypatch.setattr(torch, "rand", lambda n, **kw: torch.zeros(n))        # every draw says: gold
        stepped = m(v, y, 0.5)
        assert torch.equal(torch.cat(fed, 1), torch.cat([torch.full((8, 1), task.V), y[:, :-1]], 1))
        assert torch.allclose(whole, stepped, atol=1e-5)                            # one call == the step loop
        fed.clear()
        out = m(v, y, 0.0)
        assert torch.equal(torch.cat(fed, 1)[:, 1:], out.argmax(-1)[:, :-1])        # ratio 0: its own symbols
        assert torch.equal(m.generate(v), out.argmax(-1))
    if inject == "state":
        assert not torch.allclose(m.start(v)[0], m.start(-v)[0])


@pytest.mark.parametrize("preset, over", [("vec2seq", ["task.n_classes=8", "task.length=6"]),
                                          ("code2seq", ["task.code_bits=8"])])
def test_learns_beats_the_vector_blind_baseline(preset, over):
    cfg = load(None, [f"task={preset}", *over, "model.hidden_size=32", "model.embedding_size=16",
                      "optim.lr=0.01", "task.eval_size=256", "trainer.val_every=100"])
    task = task_class("one_to_many")(cfg)
    dm, module = task.datamodule(), task.module()
    trainer(300).fit(module, datamodule=dm)
    res = trainer(1).test(module, datamodule=dm, verbose=False)[0]
    base = task.baseline()
    assert res["test/acc"] > base["test/acc"] + 0.4 and res["test/loss"] < base["test/loss"] / 2, (res, base)


def test_errors_are_one_line():
    with pytest.raises(ConfigError) as e:
        make("task.condition=code", "task.code_bits=10", "task.bits_per_symbol=3")
    assert str(e.value) == "task.bits_per_symbol: 3 does not divide code_bits 10; allowed: a divisor of code_bits"
    with pytest.raises(ConfigError) as e:
        make("model.bidirectional=true")
    assert str(e.value) == "model.bidirectional: the decoder emits left to right; allowed: false"
