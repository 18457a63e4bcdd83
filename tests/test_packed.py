"""Packed runs (bench/packed.py): K runs as one batched model, each member equal to its unpacked run."""
import glob
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from torch import nn
import yaml

from bench import config as C
from bench.cli import main as cli
from bench import packed_step
from bench.packed import auto_size, groups, packable, run_group
from bench.store import Store
from bench.train import run
from models.cells import kernels, packed_kernels
from models.config import ModelConfig
from models.packed import RECURRENCES, packed_linear, packed_recurrent, packed_recurrent_tm
from models.recurrent import Recurrent
from tasks.synthetic import CopyTask
from wandb_records import config_and_history

TINY = ["task.T=5", "task.batch_size=4", "task.eval_size=10", "model.hidden_size=8", "trainer.val_every=10"]


def _close(a: dict, b: dict, tol: float) -> bool:
    return a.keys() == b.keys() and all(abs(a[k] - b[k]) <= tol for k in a)


@pytest.mark.parametrize("task,cell,recurrence", [
    ("copy", "lstm", "bmm"), ("copy", "gru", "cpp"), ("adding", "rnn_tanh", "cpp"),
    ("adding", "lstm_cifg", "members"), pytest.param("copy", "ladder_forget", "members", marks=pytest.mark.slow),
    pytest.param("adding", "gru", "bmm", marks=pytest.mark.slow),
    pytest.param("copy", "rnn_tanh", "bmm", marks=pytest.mark.slow)])
def test_packed_members_equal_their_unpacked_runs_in_float64(tmp_path, monkeypatch, task, cell, recurrence):
    # cpp: the C++ packed scans (the CPU default for GRU/RNN); bmm: the batched autograd recurrence
    monkeypatch.setenv("RNNBENCH_PACKED_RECURRENCE", recurrence)
    base = [f"task={task}", f"model.cell={cell}", *TINY, "trainer.max_steps=45", "trainer.precision=64-true",
            "optim.name=rmsprop", "optim.alpha=0.9", "optim.lr=0.01"]
    # seeds differ, and so may the optimizer and the init: neither changes a shape
    # (members with other optimizer settings or class step in their own foreach group)
    cfgs = [C.load(None, base + extra) for extra in (["seed=0"], ["seed=1", "optim.lr=0.003"],
                                                      ["seed=2", "model.recurrent_init=orthogonal", "optim.name=adam"])]
    alone = [run(c, tmp_path / "alone", wandb_mode="disabled") for c in cfgs]
    packed = run_group(cfgs, tmp_path / "packed", wandb_mode="disabled")
    for cfg, a, p in zip(cfgs, alone, packed):
        assert p["status"] == a["status"] == "done" and p["step"] == a["step"] == 45
        assert _close(a["metrics"], p["metrics"], 1e-6), (a["metrics"], p["metrics"])
        assert p["implementation"]["packed"] == 3 and p["params"] == a["params"]
        same = lambda e: {k: v for k, v in e.items() if k != "load"}   # noqa: E731 (the load is the moment's)
        assert same(p["environment"]) == same(a["environment"]) and p["environment"]["cpu"]
        assert p["implementation"]["recurrence"] == f"packed-{recurrence}"
        rows_a, rows_p = Store(tmp_path / "alone").metrics(cfg.hash), Store(tmp_path / "packed").metrics(cfg.hash)
        assert [(r["epoch"], r["step"]) for r in rows_a] == [(r["epoch"], r["step"]) for r in rows_p]
        assert all(_close(ra, rp, 1e-6) for ra, rp in zip(rows_a, rows_p)), (rows_a, rows_p)
    ckpt = torch.load(Store(tmp_path / "packed").checkpoint(cfgs[0].hash), weights_only=True)
    assert ckpt["global_step"] == 40 and ckpt["hyper_parameters"]["config"] == cfgs[0].to_dict()


@pytest.mark.parametrize("task,cell,recurrence", [
    ("adding", "gru", "cpp"), ("copy", "rnn_tanh", "cpp"), ("adding", "lstm", "members"), ("copy", "gru", "bmm")])
def test_a_members_float32_numbers_do_not_depend_on_the_group_size(tmp_path, monkeypatch, task, cell, recurrence):
    # a group killed between its members' checkpoint writes resumes as smaller groups (one per step):
    # each member must compute bit for bit as in the whole group
    monkeypatch.setenv("RNNBENCH_PACKED_RECURRENCE", recurrence)
    base = [f"task={task}", f"model.cell={cell}", "task.T=20", "task.batch_size=16", "task.eval_size=16",
            "model.hidden_size=32", "trainer.val_every=10", "trainer.max_steps=30"]   # shapes where it showed
    cfgs = [C.load(None, base + [f"seed={s}"]) for s in range(3)]
    whole = run_group(cfgs, tmp_path / "whole", wandb_mode="disabled")
    split = run_group(cfgs[:2], tmp_path / "split", wandb_mode="disabled") + \
        run_group(cfgs[2:], tmp_path / "split", wandb_mode="disabled")
    for c, a, b in zip(cfgs, whole, split):
        assert a["implementation"]["recurrence"] == b["implementation"]["recurrence"] == f"packed-{recurrence}"
        assert a["metrics"] == b["metrics"]
        assert Store(tmp_path / "whole").metrics(c.hash) == Store(tmp_path / "split").metrics(c.hash)


class _Stopped(BaseException):   # as the SLURM worker's SystemExit: no run records it failed
    pass


def test_a_packed_group_stopped_by_sigterm_checkpoints_its_step_and_resumes_exactly(tmp_path, monkeypatch):
    # as under the SLURM worker (slurm/array_task.py): SIGTERM's handler ends the process's work
    ov = [*TINY, "task=adding", "model.cell=gru", "trainer.max_steps=30"]
    cfgs = [C.load(None, ov + [f"seed={s}"]) for s in range(2)]
    clean = run_group(cfgs, tmp_path / "clean", wandb_mode="disabled")
    real = packed_step.log_train

    def sigterm_at_15(members, kept, loss, logits, y, epoch, step):
        real(members, kept, loss, logits, y, epoch, step)
        if step == 14:   # the 15th batch trained (a train row every 5 steps at TINY's val_every=10)
            os.kill(os.getpid(), signal.SIGTERM)
    monkeypatch.setattr(packed_step, "log_train", sigterm_at_15)
    before = signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(_Stopped()))
    try:
        with pytest.raises(_Stopped):
            run_group(cfgs, tmp_path / "stopped", wandb_mode="disabled")
    finally:
        signal.signal(signal.SIGTERM, before)
    store = Store(tmp_path / "stopped")
    assert [store.checkpoint_step(c.hash) for c in cfgs] == [15, 15]     # not 10: no step lost
    monkeypatch.setattr(packed_step, "log_train", real)
    resumed = run_group(cfgs, tmp_path / "stopped", wandb_mode="disabled")
    for c, a, b in zip(cfgs, clean, resumed):
        assert b["resumed_from_step"] == 15 and a["metrics"] == b["metrics"] and a["step"] == b["step"] == 30
        assert Store(tmp_path / "clean").metrics(c.hash) == store.metrics(c.hash)


def test_stop_signal_notes_sigterm_then_hands_it_on_once():
    from bench.packed_records import StopSignal

    calls = []
    before = signal.signal(signal.SIGTERM, lambda *_: calls.append("earlier handler"))
    try:
        with StopSignal() as stop:              # noted, not passed on, while the group trains
            signal.raise_signal(signal.SIGTERM)
            assert stop.received and calls == []
            stop.deliver()                      # the earlier handler returns: the group goes on
            assert calls == ["earlier handler"] and not stop.received
            signal.raise_signal(signal.SIGTERM)  # e.g. during the last validation: noted ...
            assert stop.received and len(calls) == 1
        assert calls == ["earlier handler"] * 2  # ... and passed on as the block ends
        signal.raise_signal(signal.SIGTERM)     # the earlier handler is back
        assert len(calls) == 3
    finally:
        signal.signal(signal.SIGTERM, before)


def test_the_packed_heads_cpu_kernels_give_each_member_what_it_gets_alone():
    # at 2 threads a batched sum over (3, 40000, 1) splits member 2's sum differently from its own
    from models.packed import PackedLinear
    torch.set_num_threads(2)
    x, w, b = torch.randn(3, 40000, 8, requires_grad=True), torch.randn(3, 1, 8, requires_grad=True), \
        torch.randn(3, 1, requires_grad=True)
    grads, g = [], torch.randn(3, 40000, 1)
    for k in (slice(0, 3), slice(2, 3)):
        xs, ws, bs = (t[k].detach().requires_grad_() for t in (x, w, b))
        y = PackedLinear.apply(xs, ws, bs)
        y.backward(g[k])
        grads.append([y[-1], xs.grad[-1], ws.grad[-1], bs.grad[-1]])
    assert all(torch.equal(p, q) for p, q in zip(*grads))


def _steps(store: Store, hashes) -> list:
    out = []
    for h in hashes:
        try:
            out.append(store.checkpoint_step(h) or 0)
        except Exception:  # being written
            out.append(0)
    return out


@pytest.mark.slow
def test_packed_group_killed_then_resumed_equals_uninterrupted(tmp_path):
    ov = ["task=adding", "model.cell=gru", "task.T=20", "task.batch_size=16", "task.eval_size=16",
          "model.hidden_size=32", "trainer.val_every=10", "trainer.max_steps=200"]
    cfgs = [C.load(None, ov + [f"seed={s}"]) for s in range(3)]
    hashes = [c.hash for c in cfgs]
    killed = Store(tmp_path / "killed")
    for c in cfgs:
        (killed.run_dir(c.hash)).mkdir(parents=True)
        (killed.run_dir(c.hash) / "config.yaml").write_text(yaml.safe_dump(c.to_dict()))
    paths = [str(killed.run_dir(h) / "config.yaml") for h in hashes]
    proc = subprocess.Popen([sys.executable, "-m", "bench.packed", *paths, "--store", str(killed.root),
                             "--wandb", "offline"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env=dict(os.environ, OMP_NUM_THREADS="1"))
    deadline = time.time() + 120
    while time.time() < deadline and min(_steps(killed, hashes)) < 30:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert all(killed.status(h) == "interrupted" for h in hashes)
    at_kill = _steps(killed, hashes)
    assert 30 <= min(at_kill) and max(at_kill) < 200

    # the sweep executor finds the packed checkpoints and resumes the group packed
    sweep = tmp_path / "s.yaml"
    sweep.write_text("name: s\nmethod: grid\nparameters:\n  task: {value: adding}\n  model.cell: {value: gru}\n"
                     + "".join(f"  {o.split('=')[0]}: {{value: {o.split('=')[1]}}}\n" for o in ov[2:])
                     + "  seed: {values: [0, 1, 2]}\n")
    assert cli(["sweep", str(sweep), "--store", str(killed.root), "--pack", "3", "--workers", "1",
                "--no-report", "--wandb", "offline"]) == 0
    before = torch.get_num_threads()
    torch.set_num_threads(1)   # the killed attempt's count (OMP_NUM_THREADS=1), which its resume keeps
    try:
        clean = run_group(cfgs, tmp_path / "clean", wandb_mode="disabled")
    finally:
        torch.set_num_threads(before)
    for c, r in zip(cfgs, clean):
        resumed = killed.result(c.hash)
        assert resumed["implementation"]["threads"] == r["implementation"]["threads"] == 1
        assert resumed["resumed_from_step"] in at_kill and resumed["status"] == r["status"] == "done"
        assert resumed["metrics"] == r["metrics"]
        train = lambda root: [(x["step"], x["train/loss"]) for x in Store(root).metrics(c.hash) if "train/loss" in x]  # noqa: E731
        assert train(killed.root) == train(tmp_path / "clean")
        # one W&B run id per member, before and after the kill, holding the CSV's losses
        # (offline-run-<second>-<id>, plus "-1" when both attempts start in the same second)
        runs = sorted(glob.glob(str(killed.run_dir(c.hash) / "wandb" / "offline-run-*" / f"run-{c.hash}.wandb")),
                      key=lambda p: Path(p).parent.name)
        assert len(runs) == 2
        config, history = config_and_history(runs[-1])
        assert json.loads(config["seed"]) == c.seed
        tail = [(int(h["trainer/global_step"]), float(h["train/loss"])) for h in history if "train/loss" in h]
        assert tail and tail == [t for t in train(killed.root) if t[0] >= resumed["resumed_from_step"]]


def test_a_diverging_member_is_recorded_and_masked_and_the_others_go_on(tmp_path):
    ov = ["task=adding", "task.T=10", "model.cell=rnn_relu", *TINY[2:], "trainer.max_steps=30"]
    bad = ["optim.name=sgd", "optim.lr=1e6", "optim.grad_clip=null"]
    cfgs = [C.load(None, ov + ["seed=0"]), C.load(None, ov + ["seed=1"] + bad), C.load(None, ov + ["seed=2"])]
    packed = run_group(cfgs, tmp_path / "packed", wandb_mode="disabled")
    alone = run(cfgs[1], tmp_path / "alone", wandb_mode="disabled")
    assert alone["status"] == packed[1]["status"] == "diverged" and packed[1]["step"] == alone["step"] < 30
    assert packed[1]["error"] == alone["error"] and "loss became" in alone["error"]
    steps = lambda root: [r["step"] for r in Store(root).metrics(cfgs[1].hash)]  # noqa: E731
    assert steps(tmp_path / "packed") == steps(tmp_path / "alone")
    # the others finish, as they would in a pack without the diverging member
    without = run_group([cfgs[0], cfgs[2]], tmp_path / "without", wandb_mode="disabled")
    for p, w in zip([packed[0], packed[2]], without):
        assert p["status"] == w["status"] == "done" and p["step"] == 30
        assert _close(p["metrics"], w["metrics"], 1e-5)


def test_a_member_that_solves_stops_as_its_unpacked_run_and_the_others_go_on(tmp_path, monkeypatch):
    # a solved threshold these tiny runs reach at different validations (seed 2 at step 20, seed 1
    # at step 30); seed 0 does not stop when solved and trains to max_steps
    monkeypatch.setattr(CopyTask, "solved_threshold", lambda self: ("val/loss", "min", 0.885))
    base = ["task=copy", "model.cell=gru", *TINY, "trainer.max_steps=45", "trainer.precision=64-true",
            "optim.name=rmsprop", "optim.lr=0.01"]
    cfgs = [C.load(None, base + [f"seed={s}", f"trainer.stop_when_solved={s > 0}"]) for s in range(3)]
    assert [len(g) for g in groups(cfgs, 3, Store(tmp_path / "packed"))] == [3]
    alone = [run(c, tmp_path / "alone", wandb_mode="disabled") for c in cfgs]
    packed = run_group(cfgs, tmp_path / "packed", wandb_mode="disabled")
    assert [r["step"] for r in alone] == [45, 30, 20]
    assert "stopped" not in alone[0] and [r["stopped"] for r in alone[1:]] == [{"reason": "solved", "step": 30},
                                                                             {"reason": "solved", "step": 20}]
    for cfg, a, p in zip(cfgs, alone, packed):
        assert p["status"] == a["status"] == "done" and p["step"] == a["step"]
        assert p.get("stopped") == a.get("stopped") and _close(a["metrics"], p["metrics"], 1e-6)
        rows_a, rows_p = Store(tmp_path / "alone").metrics(cfg.hash), Store(tmp_path / "packed").metrics(cfg.hash)
        assert [(r["epoch"], r["step"]) for r in rows_a] == [(r["epoch"], r["step"]) for r in rows_p]
        assert all(_close(ra, rp, 1e-6) for ra, rp in zip(rows_a, rows_p))


@pytest.mark.parametrize("cell", ["rnn_tanh", "rnn_relu", "irnn", "gru", "lstm"])
@pytest.mark.parametrize("impl", ["fused", "custom"])
def test_bmm_and_cpp_recurrences_equal_the_members_own(cell, impl):
    torch.manual_seed(0)
    cfg = ModelConfig(cell=cell, hidden_size=5, num_layers=2, impl=impl)
    rnns = [Recurrent(3, cfg).double() for _ in range(3)]
    x = torch.randn(3, 4, 7, 3, dtype=torch.float64)
    w = torch.randn(3, 4, 7, 5, dtype=torch.float64)
    grads = []
    for mode in RECURRENCES:
        for r in rnns:
            r.zero_grad()
        out = packed_recurrent(rnns, x, mode)
        (out * w).sum().backward()
        grads.append((out.detach(), [p.grad.clone() for r in rnns for p in r.parameters()]))
    (a, ga), *others = grads
    for b, gb in others:
        assert torch.allclose(a, b, atol=1e-12) and all(torch.allclose(p, q, atol=1e-12) for p, q in zip(ga, gb))


def test_packed_linear_equals_the_members_own_linears_values_and_gradients():
    torch.manual_seed(0)
    heads = [nn.Linear(6, 3).double() for _ in range(4)]
    h = torch.randn(4, 5, 7, 6, dtype=torch.float64, requires_grad=True)
    g = torch.randn(4, 5, 7, 3, dtype=torch.float64)
    out = packed_linear(heads, h)
    ref = torch.stack([m(h[k]) for k, m in enumerate(heads)])
    assert torch.allclose(out, ref, atol=1e-12)
    got = torch.autograd.grad(out, [h, *(p for m in heads for p in m.parameters())], g)
    want = torch.autograd.grad(ref, [h, *(p for m in heads for p in m.parameters())], g)
    for a, b in zip(got, want):
        assert torch.allclose(a, b, atol=1e-12)


@pytest.mark.parametrize("cell,hidden", [("rnn_tanh", 80), ("rnn_relu", 20), ("gru", 47), ("gru", 9)])
def test_cpp_recurrence_in_float32_matches_the_members_own(cell, hidden):
    """The float32 C++ packed scan (its AVX2/AVX-512 matmul kernel; float64 takes a plain loop)."""
    assert packed_kernels.available() == kernels.available()   # built wherever the single-run scans are
    torch.manual_seed(0)
    cfg = ModelConfig(cell=cell, hidden_size=hidden, impl="custom")
    rnns = [Recurrent(10, cfg) for _ in range(3)]
    x = torch.randn(3, 20, 30, 10)
    w = torch.randn(3, 20, 30, hidden)
    outs = []
    for mode in ("members", "cpp"):
        for r in rnns:
            r.zero_grad()
        out = packed_recurrent(rnns, x, mode)
        (out * w).sum().backward()
        outs.append((out.detach(), [p.grad.clone() for r in rnns for p in r.parameters()]))
    (a, ga), (b, gb) = outs
    assert (a - b).abs().max() < 1e-5
    assert all((p - q).abs().max() <= 1e-4 * (1 + p.abs().max()) for p, q in zip(ga, gb))
    # one-hot inputs given as tokens: the kernel gathers W's columns (the same xp, exactly)
    ids = torch.randint(0, 10, (3, 30, 20))
    outs = []
    for tokens in (None, ids):
        for r in rnns:
            r.zero_grad()
        out = packed_recurrent_tm(rnns, torch.eye(10)[ids] if tokens is None else lambda: None, "cpp", ids=tokens)
        (out * w.transpose(1, 2)).sum().backward()
        outs.append((out.detach(), [p.grad.clone() for r in rnns for p in r.parameters()]))
    (a, ga), (b, gb) = outs
    assert torch.equal(a, b)
    assert all((p - q).abs().max() <= 1e-4 * (1 + p.abs().max()) for p, q in zip(ga, gb))


def test_groups_pack_only_runs_that_differ_in_free_fields(tmp_path):
    store = Store(tmp_path)
    seeds = [C.load(None, ["task=copy", "model.cell=gru", f"seed={s}"]) for s in range(5)]
    wide = C.load(None, ["task=copy", "model.cell=gru", "model.hidden_size=64"])
    peep = [C.load(None, ["task=copy", "model.peepholes=true", f"seed={s}"]) for s in range(2)]
    assert packable(peep[0]) is None                  # a Greff variant: packed, each member's own recurrence
    assert packable(C.load(None, ["task=copy", "model.bidirectional=true"])) == "model.bidirectional=True"
    assert packable(C.load(None, ["task=sst2"])).startswith("task sentiment (packable")
    assert [[c.hash for c in g] for g in groups(seeds + [wide] + peep, 2, store)] == \
        [[seeds[0].hash, seeds[1].hash], [seeds[2].hash, seeds[3].hash], [seeds[4].hash], [wide.hash],
         [peep[0].hash, peep[1].hash]]


def test_pack_auto_follows_the_packed_kernel_registry(tmp_path, monkeypatch):
    store = Store(tmp_path)
    runs = [C.load(None, ["task=copy", f"model.cell={c}", f"seed={s}"]) for c in ("lstm", "gru", "irnn") for s in (0, 1)]
    lstm, gru, irnn = runs[:2], runs[2:4], runs[4:]
    assert [[c.hash for c in g] for g in groups(runs, auto_size(False), store)] == \
        [[lstm[0].hash], [lstm[1].hash], [c.hash for c in gru], [c.hash for c in irnn]]
    assert [len(g) for g in groups(runs, auto_size(True), store)] == [2, 2, 2]   # GPU: every cell packs
    monkeypatch.setattr(packed_kernels, "KINDS", (*packed_kernels.KINDS, "lstm"))  # a new packed kernel
    assert [len(g) for g in groups(runs, auto_size(False), store)] == [2, 2, 2]


@pytest.mark.parametrize("value", ["0", "x", "-2"])
def test_bad_pack_value_is_a_one_line_error(tmp_path, capsys, value):
    with pytest.raises(SystemExit) as e:
        cli(["sweep", "bench/sweeps/default.yaml", "--pack", value, "--store", str(tmp_path)])
    assert e.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].endswith(
        f"argument --pack: invalid value '{value}'; allowed: an integer >= 1, or auto")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (conftest hides GPUs from the tests)")
def test_packed_group_on_cuda_matches_cpu(tmp_path):
    ov = ["task=copy", "model.cell=gru", *TINY, "trainer.max_steps=20", "trainer.precision=64-true"]
    cfgs = [C.load(None, ov + [f"seed={s}"]) for s in range(2)]
    cpu = run_group(cfgs, tmp_path / "cpu", wandb_mode="disabled")
    gpu = run_group([C.load(None, ov + [f"seed={s}", "trainer.accelerator=gpu"]) for s in range(2)],
                    tmp_path / "gpu", wandb_mode="disabled")
    for a, b in zip(cpu, gpu):
        assert b["implementation"]["device"] == "cuda:0" and _close(a["metrics"], b["metrics"], 1e-6)


def test_packed_members_record_the_machine_load(tmp_path, monkeypatch):
    """As an unpacked run: the 1-minute load average as the group's training starts and ends, the CPUs."""
    from bench import provenance

    calls = []   # the first as training starts, then one as each member finishes
    monkeypatch.setattr(provenance.os, "getloadavg", lambda: (0.75 if calls.append(1) or len(calls) > 1 else 2.5, 0.0, 0.0))
    cfgs = [C.load(None, ["task=copy", *TINY, "trainer.max_steps=10", f"seed={s}"]) for s in (0, 1)]
    for r in run_group(cfgs, tmp_path, wandb_mode="disabled"):
        assert r["status"] == "done" and r["environment"]["load"] == {"cpus": os.cpu_count(), "start": 2.5, "end": 0.75}


def test_a_retried_group_logs_each_step_once_and_keeps_its_runs_thread_counts(tmp_path):
    """A group retried after a failure before its first checkpoint drops the failed attempt's rows
    (as bench.train does), and trains at each run's recorded thread count (threads.json)."""
    ov = ["task=adding", "task.T=10", "model.cell=gru", *TINY[2:], "trainer.max_steps=20"]
    cfgs = [C.load(None, ov + [f"seed={s}"]) for s in (0, 1)]
    store = Store(tmp_path / "s")
    for c in cfgs:   # an earlier attempt: rows logged, no checkpoint, recorded failed at one thread
        d = store.run_dir(c.hash)
        (d / "logs" / "version_0").mkdir(parents=True)
        (d / "logs" / "version_0" / "metrics.csv").write_text("epoch,step,train/loss\n0,0,9.0\n0,1,8.0\n")
        (d / "result.json").write_text(json.dumps({"hash": c.hash, "status": "failed", "error": "x"}))
        (d / "threads.json").write_text('{"threads": 1}')
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        got = run_group(cfgs, store.root, wandb_mode="disabled", retry_failed=True)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
    for c, r in zip(cfgs, got):
        steps = [x["step"] for x in store.metrics(c.hash) if "train/loss" in x]
        assert r["status"] == "done" and r["implementation"]["threads"] == 1
        assert steps == sorted(set(steps)) and 9.0 not in [x.get("train/loss") for x in store.metrics(c.hash)]
