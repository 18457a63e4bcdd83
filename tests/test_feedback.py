"""Output feedback (models/feedback.py) and the Jordan cell (issue 18): the equations written out
step by step, parity of the parallel (teacher-forced) and step-by-step paths, what the ratio
makes the stack be fed, the schedules, config errors, presets and short learning runs."""
import math

import pytest
import torch

from bench import config as C
from bench.config import build
from bench.packed import packable
from bench.schema import ConfigError
from bench.train import run
from models.config import ModelConfig
from models.cells.base import loop_scan
from models.cells.jordan import JordanCell
from models.feedback import OutputFeedback, teacher_ratio
from tasks.registry import task_class

I, H, K, B, T = 3, 5, 4, 2, 6
tanh = torch.tanh


def make(cell, mode="teacher", **kw) -> OutputFeedback:
    cfg = build(ModelConfig, {"cell": cell, "hidden_size": H, "output_feedback": mode, **kw}, "model.")
    net = OutputFeedback(I, K, cfg).double()
    torch.manual_seed(0)
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(0, 0.8)
    return net


def data(seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, T, I, generator=g, dtype=torch.double), torch.randint(0, K, (B, T), generator=g)


def weights(net):
    c = net.rnn.layers[0][0]
    W = c.weight_ih.detach()
    return W[:, :I], W[:, I:], (c.bias_ih + c.bias_hh).detach(), c.weight_hh.detach(), net.head


def test_jordan_equations_free_running():
    """h^t = tanh(U x^t + W e(y^{t-1}) + b), z^t = V h^t + c, y^t = argmax z^t, e(y^0) = 0."""
    net = make("jordan", "prediction")
    x, _ = data()
    U, W, b, R, head = weights(net)
    assert R.shape == (H, 0)                                  # no hidden-to-hidden weight
    prev, outs = x.new_zeros(B, K), []
    for t in range(3):
        h = tanh(x[:, t] @ U.T + prev @ W.T + b)
        z = h @ head.weight.detach().T + head.bias.detach()
        prev = torch.eye(K, dtype=x.dtype)[z.argmax(-1)]
        outs.append(z)
    torch.testing.assert_close(net(x[:, :3]), torch.stack(outs, 1))


def test_elman_with_feedback_is_the_slides_equation():
    """Solberg: s^t = tanh(U x^t + V s^{t-1} + W y*^{t-1} + b) under teacher forcing."""
    net = make("rnn_tanh", impl="custom")
    x, y = data()
    U, W, b, V, head = weights(net)
    s, outs = x.new_zeros(B, H), []
    for t in range(3):
        prev = torch.eye(K, dtype=x.dtype)[y[:, t - 1]] if t else x.new_zeros(B, K)
        s = tanh(x[:, t] @ U.T + s @ V.T + prev @ W.T + b)
        outs.append(s @ head.weight.detach().T + head.bias.detach())
    torch.testing.assert_close(net(x[:, :3], y[:, :3], 1.0), torch.stack(outs, 1))


@pytest.mark.parametrize("cell,impl", [("jordan", "auto"), ("gru", "custom"), ("lstm", "fused"),
                                       ("rnn_tanh", "custom")])
def test_parallel_equals_step_by_step_when_teacher_forced(cell, impl):
    """ratio 1: the whole-sequence call and the step loop give the same logits and gradients."""
    net = make(cell, impl=impl, num_layers=2)
    x, y = data()
    results = []
    for parallel in (True, False):
        net.zero_grad()
        logits, fed = net.decode(x, y, 1.0, parallel=parallel)
        (logits * torch.linspace(-1, 1, K, dtype=x.dtype)).sum().backward()
        results.append([logits, fed] + [p.grad.clone() for p in net.parameters() if p.numel()])
    for a, b in zip(*results):
        torch.testing.assert_close(a, b)


def test_jordan_teacher_forced_runs_without_a_loop_over_time(monkeypatch):
    """Teacher-forced, the stack is called once for the whole sequence and `jordan` never calls
    its per-step function; free-running, the stack is called once a step."""
    net = make("jordan")
    x, y = data()
    calls = []
    net.rnn.register_forward_hook(lambda m, inp, out: calls.append(inp[0].shape[1]))
    monkeypatch.setattr(type(net.rnn.layers[0][0]), "step", lambda *a: pytest.fail("step called"))
    net.decode(x, y, 1.0)[0].sum().backward()
    assert calls == [T]
    calls.clear()
    net.decode(x, y, 0.5)
    assert calls == [1] * T


def test_jordan_scan_matches_the_step_loop():
    """The all-at-once scan equals autograd through `step` (with and without a lengths mask)."""
    cfg = build(ModelConfig, {"cell": "jordan", "hidden_size": H, "output_feedback": "teacher"}, "model.")
    c = JordanCell(I, H, cfg).double()
    x = torch.randn(T, 4, I, dtype=torch.double)
    mask = (torch.arange(T)[:, None] < torch.tensor([T, 2, 4, 1])[None]).unsqueeze(-1)
    s0 = (torch.randn(4, H, dtype=torch.double),)
    for m in (None, mask):
        results = []
        for scan in (c.scan, lambda xp, s, mm: loop_scan(c, xp, s, mm)):
            c.zero_grad()
            xx = x.clone().requires_grad_()
            hs, (hT,) = scan(c.project(xx), s0, m)
            ((hs * hs.detach().flip(0)).sum() + 2 * hT.sum()).backward()
            results.append([hs, hT, xx.grad, c.weight_ih.grad.clone(), c.bias_ih.grad.clone()])
        for a, b in zip(*results):
            torch.testing.assert_close(a, b)


def test_ratio_changes_what_is_fed():
    net = make("gru", "scheduled")
    x, y = data()
    eye = torch.eye(K, dtype=x.dtype)
    gold = eye[y[:, :-1]]
    logits0, fed0 = net.decode(x, y, 0.0)
    assert (fed0[:, 0] == 0).all()
    torch.testing.assert_close(fed0[:, 1:], eye[logits0[:, :-1].argmax(-1)])   # its own predictions
    _, fed1 = net.decode(x, y, 1.0)
    torch.testing.assert_close(fed1[:, 1:], gold)                               # the targets
    xs, ys = torch.randn(400, T, I, dtype=x.dtype), torch.randint(0, K, (400, T))
    logits, fed = net.decode(xs, ys, 0.3, generator=torch.Generator().manual_seed(5))
    is_gold = (fed[:, 1:] == eye[ys[:, :-1]]).all(-1)
    is_own = (fed[:, 1:] == eye[logits[:, :-1].argmax(-1)]).all(-1)
    assert (is_gold | is_own).all()
    differ = (ys[:, :-1] != logits[:, :-1].argmax(-1))
    frac = is_gold[differ].double().mean().item()                               # where the choice shows
    assert abs(frac - 0.3) < 0.04, frac
    _, again = net.decode(xs, ys, 0.3, generator=torch.Generator().manual_seed(5))
    assert torch.equal(again, fed)


def test_module_feeds_by_the_schedule_in_training_and_never_in_evaluation():
    cfg = C.load(None, ["task=copy", "task.T=3", "task.n_symbols=2", "model.cell=gru", "model.hidden_size=8",
                        "model.output_feedback=teacher"])
    module = task_class("copy")(cfg).module()
    x, y = module.task.make(4, torch.Generator().manual_seed(0))
    module.train()
    torch.testing.assert_close(module(x, y), module.feedback(module.eye[x], y, 1.0))
    module.eval()
    torch.testing.assert_close(module(x, y), module(x, torch.zeros_like(y)))   # targets unused
    torch.testing.assert_close(module(x, y), module.feedback(module.eye[x]))


@pytest.mark.parametrize("schedule,step,expected", [
    ("constant", 500, 0.8), ("linear", 0, 0.8), ("linear", 25, 0.64), ("linear", 200, 0.0),
    ("inverse_sigmoid", 0, 0.8 * 100 / 101), ("inverse_sigmoid", 100, 0.8 * 100 / (100 + math.e)),
])
def test_schedules(schedule, step, expected):
    k = 125.0 if schedule == "linear" else 100.0
    cfg = build(ModelConfig, {"cell": "gru", "output_feedback": "scheduled", "feedback_ratio": 0.8,
                              "feedback_schedule": schedule, "feedback_k": k}, "model.")
    assert teacher_ratio(cfg, step) == pytest.approx(expected)


def test_fixed_modes_ratio():
    for mode, r in (("teacher", 1.0), ("prediction", 0.0)):
        assert teacher_ratio(build(ModelConfig, {"output_feedback": mode}, "model."), 10 ** 6) == r


@pytest.mark.parametrize("overrides, message", [
    (["task=adding", "model.output_feedback=teacher"],
     "model.output_feedback: task 'adding' has no class target at every step; allowed tasks: copy, running_sum"),
    (["task=copy", "model.cell=jordan"],
     "model.output_feedback: cell 'jordan' needs it (its only recurrence is the previous output); "
     "allowed: prediction, teacher, scheduled"),
    (["task=copy", "model.output_feedback=sometimes"],
     "model.output_feedback: invalid value 'sometimes'; allowed: none, prediction, teacher, scheduled"),
    (["task=copy", "model.output_feedback=teacher", "model.feedback_ratio=0.5"],
     "model.feedback_ratio: only for output_feedback 'scheduled'; got output_feedback='teacher'"),
    (["task=copy", "model.output_feedback=scheduled", "model.feedback_ratio=1.5"],
     "model.feedback_ratio: invalid value 1.5; allowed: a number <= 1"),
    (["task=copy", "model.output_feedback=scheduled", "model.feedback_schedule=cosine"],
     "model.feedback_schedule: invalid value 'cosine'; allowed: constant, linear, inverse_sigmoid"),
    (["task=copy", "model.output_feedback=scheduled", "model.feedback_k=0"],
     "model.feedback_k: invalid value 0.0; allowed: a number > 0"),
    (["task=copy", "model.output_feedback=prediction", "model.bidirectional=true"],
     "model.bidirectional: output feedback runs left to right; allowed: false"),
])
def test_bad_values_are_one_line_errors(overrides, message):
    with pytest.raises(ConfigError) as e:
        C.load(None, overrides)
    assert str(e.value) == message


def test_presets_load_and_feedback_is_never_packed():
    jordan = C.load(None, ["task=running_sum", "model=jordan"])
    assert (jordan.model.cell, jordan.model.output_feedback) == ("jordan", "teacher")
    sched = C.load(None, ["task=copy", "model=scheduled_sampling"])
    assert sched.model.output_feedback == "scheduled"
    assert packable(C.load(None, ["task=copy", "model.cell=gru", "model.output_feedback=teacher"])) \
        == "model.output_feedback=teacher"


LEARN = ["model.hidden_size=32", "optim.lr=0.01", "trainer.max_steps=300", "trainer.val_every=300",
         "task.eval_size=256"]


@pytest.mark.parametrize("mode", ["teacher", "prediction"])
def test_jordan_learns_the_running_sum_free_running(mode, store):
    cfg = C.load(None, ["task=running_sum", "task.T=10", "task.n_categories=3", "model=jordan",
                        f"model.output_feedback={mode}", *LEARN])
    r = run(cfg, store, wandb_mode="disabled")
    assert r["metrics"]["test/acc"] > 0.9 > 2 * r["baseline"]["test/acc"], r["metrics"]   # baseline 1/3
    assert r["metrics"]["test/loss"] < 0.5 * r["baseline"]["test/loss"]


def test_scheduled_sampling_learns_the_copy_task(store):
    cfg = C.load(None, ["task=copy", "task.T=5", "task.n_symbols=3", "task.n_categories=4",
                        "model=scheduled_sampling", "model.feedback_k=30", *LEARN])
    r = run(cfg, store, wandb_mode="disabled")
    assert r["metrics"]["test/loss"] < 0.6 * r["baseline"]["test/loss"], r["metrics"]   # baseline 0.378
