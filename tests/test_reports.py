"""Reports, leaderboards and the gradient-flow diagnostic, built from a real tiny sweep.

The sweep (copy task, T in {5, 8}, lstm/gru, seeds 0/1, 20 steps) runs in this process through
bench.train.run (the code every executor runs), plus: an adding-task run with an absurd learning
rate and no clipping (diverges at step 1), and a gru seed whose process "crashed" (recorded
by the LocalExecutor's own bookkeeping). Every number checked here is recomputed from the
result.json files, never from the report code.
"""
from __future__ import annotations

import csv
import json
import math
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from scipy import stats as sps

from bench import cli
from bench.config import config_hash, load
from bench.store import Store
from bench.sweep import LocalExecutor, expand

SWEEP = """
name: tiny
method: grid
parameters:
  task: {value: copy}
  task.T: {values: [5, 8]}
  task.n_symbols: {value: 3}
  task.eval_size: {value: 64}
  model.hidden_size: {value: 8}
  model.cell: {values: [lstm, gru]}
  trainer.max_steps: {value: 20}
  trainer.val_every: {value: 10}
  seed: {values: [0, 1]}
"""

# MSE with an absurd Adam step: after one step the head's bias alone is ~1e25, its square is inf
BAD = """
name: tiny
parameters:
  task: {value: adding}
  task.T: {value: 5}
  task.eval_size: {value: 64}
  model.hidden_size: {value: 8}
  model.cell: {value: lstm}
  optim.lr: {value: 1.0e+25}
  optim.grad_clip: {value: null}
  trainer.max_steps: {value: 20}
  trainer.val_every: {value: 10}
  seed: {value: 0}
"""


def _run_all(store: Store, path: Path) -> list:
    from bench.train import run

    name, cfgs = expand(path)
    store.record_sweep(name, [c.hash for c in cfgs])
    return [run(c, store.root, sweep=name, wandb_mode="disabled") for c in cfgs]


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    root = tmp_path_factory.mktemp("sweep")
    store = Store(root / "results")
    (root / "tiny.yaml").write_text(SWEEP)
    (root / "bad.yaml").write_text(BAD)
    results = _run_all(store, root / "tiny.yaml") + _run_all(store, root / "bad.yaml")
    # a crashed run: config written and recorded, process killed -> the executor records it failed
    crashed = load(None, ["task=copy", "task.T=5", "task.n_symbols=3", "task.eval_size=64", "model.hidden_size=8",
                          "model.cell=gru", "trainer.max_steps=20", "trainer.val_every=10", "seed=2"])
    ex = LocalExecutor(store, "tiny", workers=1, progress=False)
    import yaml

    (store.run_dir(crashed.hash)).mkdir(parents=True)
    (store.run_dir(crashed.hash) / "config.yaml").write_text(yaml.safe_dump(crashed.to_dict(), sort_keys=False))
    store.record_sweep("tiny", [crashed.hash])
    assert ex._finish(crashed, -9) == "failed"
    statuses = sorted(r["status"] for r in results)
    assert statuses.count("done") == 8 and statuses.count("diverged") == 1, statuses
    return {"root": root, "store": store, "crashed": crashed.hash}


def _results(store: Store) -> list[dict]:
    out = []
    for h in store.sweep_hashes("tiny"):
        cfg = store.config(h)
        out.append({"hash": h, "config": cfg, "result": store.result(h)})
    return out


def _variant_key(cfg: dict) -> str:
    return config_hash({k: v for k, v in cfg.items() if k != "seed"})


def _table(md: str, heading: str) -> list[dict]:
    """The first Markdown table after `heading`, as dicts."""
    part = md.split(heading, 1)[1]
    block = []
    for ln in part.splitlines()[1:]:
        if ln.startswith("|"):
            block.append(ln)
        elif block:
            break
    assert block, f"no table after {heading!r}"
    head = [c.strip() for c in block[0].strip("|").split(" | ")]
    return [dict(zip(head, [c.strip() for c in ln.strip().strip("|").split(" | ")])) for ln in block[2:]]


def _close(text: str, value: float, rel: float = 6e-4) -> bool:
    return math.isclose(float(text), value, rel_tol=rel, abs_tol=1e-12)


@pytest.fixture(scope="module")
def report(sweep):
    """The report as `rnnbench sweep` builds it (build_report(store, [name], out)), plus a
    reference variant; W&B must not be touched unless asked."""
    import reports.wandb_io as wio
    from reports.report import build_report

    def boom(*a, **k):
        raise AssertionError("W&B used without being asked")

    out = sweep["root"] / "report"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(wio, "fetch_runs", boom)
        mp.setattr(wio, "publish", boom)
        mp.setattr(wio, "check_publish", boom)
        path = build_report(sweep["store"], ["tiny"], out, reference=["model.cell=lstm"])
    assert path == out / "report.md" and (out / "report.html").is_file()
    return out


# ---------------------------------------------------------------- statistics


def test_ci_formula_known_case():
    from reports import stats

    s = stats.summarize([1.0, 2.0, 3.0])
    t = 4.302652729911275  # t_{0.975, 2}
    assert s.n == 3 and s.mean == 2.0 and s.std == 1.0
    assert s.ci_low == pytest.approx(2 - t / math.sqrt(3), rel=1e-9)
    assert s.ci_high == pytest.approx(2 + t / math.sqrt(3), rel=1e-9)
    one = stats.summarize([0.5])
    assert (one.n, one.mean, one.std, one.ci_low, one.ci_high) == (1, 0.5, None, None, None)
    assert stats.summarize([]).mean is None


def test_welch_matches_the_formula():
    from reports import stats

    a, b = [1.0, 2.0, 3.5, 2.2], [4.0, 5.5, 6.0]
    va, vb = stats.std(a) ** 2 / len(a), stats.std(b) ** 2 / len(b)
    t = (stats.mean(a) - stats.mean(b)) / math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
    assert stats.welch(a, b) == pytest.approx(2 * sps.t.sf(abs(t), df), rel=1e-9)
    assert stats.welch([1.0], b) is None
    assert stats.holm({"x": 0.01, "y": 0.04, "z": None}) == {"x": 0.02, "y": 0.04, "z": None}


# ---------------------------------------------------------------- report


def test_report_table_numbers(sweep, report):
    md = (report / "report.md").read_text()
    runs = _results(sweep["store"])
    for T in (5, 8):
        table = _table(md, f"## Task: copy T={T}")
        mine = [r for r in runs if r["config"]["task"] == {**r["config"]["task"], "name": "copy", "T": T}]
        by_variant: dict[str, list] = {}
        for r in mine:
            by_variant.setdefault(_variant_key(r["config"]), []).append(r)
        assert len(table) == len(by_variant)
        for row in table:
            cell = row["variant"].split()[0]
            group = next(g for g in by_variant.values() if g[0]["config"]["model"]["cell"] == cell)
            ok = [r["result"] for r in group if r["result"] and r["result"]["status"] == "done"]
            vals = [r["metrics"]["test/loss"] for r in ok]
            assert int(row["n"]) == len(vals)
            assert row["seeds"] == ", ".join(str(r["seed"]) for r in sorted(ok, key=lambda r: r["seed"])) or "—"
            if len(vals) >= 2:
                m = sum(vals) / len(vals)
                sd = math.sqrt(sum((v - m) ** 2 for v in vals) / (len(vals) - 1))
                mean_txt, std_txt = row["test/loss mean ± std"].split(" ± ")
                assert _close(mean_txt, m) and _close(std_txt, sd)
                half = sps.t.ppf(0.975, len(vals) - 1) * sd / math.sqrt(len(vals))
                lo, hi = row["95% CI"].strip("[]").split(", ")
                assert _close(lo, m - half) and _close(hi, m + half)
                assert int(row["params"]) == ok[0]["params"]
                assert _close(row["baseline"], ok[0]["baseline"]["test/loss"])
                beats = sum(r["beats_baseline"] for r in ok)
                assert row["beats baseline"].endswith(f"({beats}/{len(ok)} seeds)")
                if cell == "gru":
                    ref = [r["result"]["metrics"]["test/loss"] for g in by_variant.values() for r in g
                           if r["config"]["model"]["cell"] == "lstm"]
                    p = sps.ttest_ind(vals, ref, equal_var=False).pvalue
                    assert _close(row["p (Welch vs ref)"], p, rel=5e-3)
                if cell == "lstm":
                    assert row["p (Welch vs ref)"] == "ref"


def test_failed_and_diverged_runs_are_shown_not_averaged(sweep, report):
    md = (report / "report.md").read_text()
    (adding,) = _table(md, "## Task: adding T=5")
    assert adding["variant"] == "lstm optim.grad_clip=null optim.lr=1e+25 (ref)"  # the task's only lstm
    assert adding["n"] == "0" and adding["test/loss mean ± std"] == "—" and adding["95% CI"] == "—"
    assert "seed 0: diverged at step 1" in adding["not in statistics"]
    (div,) = _table(md.split("## Task: adding T=5", 1)[1], "### Runs not in the statistics")
    assert div["status"] == "diverged" and div["step"] == "1" and "loss became inf" in div["error"]
    gru = {r["variant"]: r for r in _table(md, "## Task: copy T=5")}["gru"]
    assert gru["n"] == "2" and "seed 2: failed at step 0" in gru["not in statistics"]
    (failed,) = _table(md.split("## Task: copy T=5", 1)[1], "### Runs not in the statistics")
    assert failed["status"] == "failed" and "killed by signal 9" in failed["error"]
    assert sweep["crashed"] in failed["run"]
    assert "### Runs not in the statistics" not in md.split("## Task: copy T=8", 1)[1].split("## ", 1)[0]
    appendix = _table(md, "## Appendix: every run")
    assert len(appendix) == 10 and sorted(r["status"] for r in appendix).count("done") == 8


def test_report_figures_html_and_solved_vs_T(report):
    md = (report / "report.md").read_text()
    figs = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)
    assert len(figs) == 6  # curves + bar for each copy task, solved vs T for copy and adding
    for f in figs:
        assert (report / f).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    html = (report / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 6 and 'src="figures/' not in html
    solved = _table(md, "### copy")
    assert [r["variant"] for r in solved] == ["gru", "lstm"]
    assert solved[0]["T=5"] == "0/2 (+1 failed)" and solved[1]["T=8"] == "0/2"
    assert _table(md, "### adding") == [{"variant": "lstm optim.grad_clip=null optim.lr=1e+25", "T=5": "0/1"}]


def _fake_store(root: Path, specs: list[tuple[list[str], float]], impls: dict = None) -> Store:
    """A store of written result.json files (no training): (overrides, test/loss) per run;
    `impls`: model.cell -> the runs' `implementation` record."""
    import yaml

    from bench.store import write_json

    store = Store(root)
    hashes = []
    for overrides, loss in specs:
        cfg = load(None, ["task=copy", "task.T=5", "model.hidden_size=8"] + overrides)
        d = store.run_dir(cfg.hash)
        d.mkdir(parents=True)
        (d / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
        write_json(d / "result.json", {"hash": cfg.hash, "status": "done", "step": 20, "seed": cfg.seed,
                                       "metrics": {"test/loss": loss}, "primary": "test/loss", "mode": "min",
                                       "baseline": {"test/loss": 1.5}, "params": 100, "wall_time_s": 1.0,
                                       "git_commit": "abc", "command": None, "solved": False,
                                       "beats_baseline": loss < 1.5,
                                       "implementation": (impls or {}).get(cfg.model.cell)})
        hashes.append(cfg.hash)
    store.record_sweep("fake", hashes)
    return store


def test_variant_labels_single_seed_and_reference(tmp_path):
    from reports.collect import find_reference, group, store_runs
    from reports.report import build_report

    store = _fake_store(tmp_path / "results", [
        ([], 1.0), (["seed=1"], 1.2), (["seed=2"], 1.1),
        (["model.forget_bias=0.0"], 2.0), (["model.forget_bias=0.0", "seed=1"], 2.5),
        (["model.forget_bias=1.0"], 0.9),
        (["model.cell=lstm_nig"], 1.4), (["model.cell=lstm_nig", "seed=1"], 1.6),
    ])
    md = build_report(store, ["fake"], tmp_path / "out", reference=["cell=lstm"]).read_text()
    rows = {r["variant"]: r for r in _table(md, "## Task: copy T=5")}
    # labels name what differs; lstm_nig's fixed switches (input_gate, peepholes) are not repeated
    assert set(rows) == {"lstm (ref)", "lstm forget_bias=0.0", "lstm forget_bias=1.0", "lstm_nig"}
    one = rows["lstm forget_bias=1.0"]
    assert one["n"] == "1" and one["95% CI"] == "n/a (1 seed)" and one["test/loss mean ± std"] == "0.9"
    assert one["p (Welch vs ref)"] == "n/a" and one["beats baseline"] == "yes (1/1 seeds)"
    assert rows["lstm (ref)"]["test/loss mean ± std"] == "1.1 ± 0.1"
    p = sps.ttest_ind([2.0, 2.5], [1.0, 1.2, 1.1], equal_var=False).pvalue
    q = sps.ttest_ind([1.4, 1.6], [1.0, 1.2, 1.1], equal_var=False).pvalue
    assert _close(rows["lstm forget_bias=0.0"]["p (Welch vs ref)"], p, rel=5e-3)
    assert _close(rows["lstm_nig"]["p (Welch vs ref)"], q, rel=5e-3)
    lo, hi = sorted([p, q])
    holm = {lo: min(1.0, 2 * lo), hi: max(min(1.0, 2 * lo), hi)}
    assert _close(rows["lstm_nig"]["p (Holm)"], holm[q], rel=5e-3)
    assert _close(rows["lstm forget_bias=0.0"]["p (Holm)"], holm[p], rel=5e-3)
    (g,) = group(store_runs(store, ["fake"]))
    assert find_reference(g, {"cell": "lstm"}).label == "lstm"  # the lstm whose label names nothing else
    assert find_reference(g, {"forget_bias": 1.0}).label == "lstm forget_bias=1.0"
    assert find_reference(g, {"model.cell": "gru"}) is None
    with pytest.raises(Exception, match="matches 4 variants"):  # lstm and lstm_nig both name no key
        find_reference(g, {"hidden_size": 8})


def test_time_column_names_the_implementation_and_flags_rows_that_differ(tmp_path):
    from reports.report import build_report

    fused = {"recurrence": "fused", "device": "cpu", "threads": 2, "packed": None}
    store = _fake_store(tmp_path / "results", [([], 1.0), (["seed=1"], 1.2), (["model.cell=gru"], 1.1),
                                               (["model.cell=rnn_tanh"], 1.3)],
                        impls={"lstm": fused, "gru": fused, "rnn_tanh": {**fused, "recurrence": "custom", "packed": 8}})
    md = build_report(store, ["fake"], tmp_path / "out").read_text()
    rows = {r["variant"]: r["wall time (s)"] for r in _table(md, "## Task: copy T=5")}
    assert rows == {"lstm": "1 (fused, cpu, 2 threads)", "gru": "1 (fused, cpu, 2 threads)",
                    "rnn_tanh": "1 (custom, cpu, 2 threads, packed 8) †"}
    assert "marked † were measured with another implementation" in md and "`fused, cpu, 2 threads`" in md
    same = _fake_store(tmp_path / "same", [([], 1.0), (["model.cell=gru"], 1.1)], impls={"lstm": fused, "gru": fused})
    md = build_report(same, ["fake"], tmp_path / "out2").read_text()
    assert "†" not in md and {r["wall time (s)"] for r in _table(md, "## Task: copy T=5")} == {"1 (fused, cpu, 2 threads)"}


# ---------------------------------------------------------------- leaderboard


def test_leaderboard_exports_and_reproduce_commands(sweep, tmp_path):
    out = tmp_path / "lb"
    assert cli.main(["leaderboard", "tiny", "--store", str(sweep["store"].root), "--out", str(out)]) == 0
    data = json.loads((out / "leaderboard.json").read_text())["rows"]
    with open(out / "leaderboard.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(data) == 5
    store = sweep["store"]
    for task in {r["task"] for r in data}:
        ranked = [r for r in data if r["task"] == task and r["rank"] is not None]
        assert [r["rank"] for r in ranked] == list(range(1, len(ranked) + 1))
        means = [r["mean"] for r in ranked]
        assert means == sorted(means)  # test/loss: lower is better
    for r, c in zip(data, rows):
        assert c["variant_hash"] == r["variant_hash"] and c["command"] == r["command"]
        assert c["runs"].split() == r["runs"]
        for h in r["runs"]:
            cfg = store.config(h)
            assert _variant_key(cfg) == r["variant_hash"]
        commits = {store.result(h).get("git_commit") for h in r["runs"]} - {None}
        assert set(r["git_commit"]) == commits and commits
        # one command per seed: its overrides rebuild the run's exact config hash
        assert len(r["commands"]) == len(r["runs"])
        by_seed = {store.config(h)["seed"]: h for h in r["runs"]}
        for cmd in r["commands"]:
            words = shlex.split(cmd)
            assert words[:2] == ["rnnbench", "train"]
            cfg = load(None, words[2:])
            assert cfg.hash == by_seed[cfg.seed]
        assert c["commands"].split("\n") == r["commands"]
        # the loop form really runs: bash with a stand-in `rnnbench` that prints its arguments
        script = "rnnbench() { printf '%s\\x1f' \"$@\"; echo; }\n" + r["command"]
        lines = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True).stdout.splitlines()
        assert len(lines) == len(r["runs"])
        hashes = {load(None, ln.rstrip("\x1f").split("\x1f")[1:]).hash for ln in lines}
        assert hashes == set(r["runs"])
    md = (out / "leaderboard.md").read_text()
    assert "copy T=5" in md and all(r["variant_hash"] in md for r in data)


# ---------------------------------------------------------------- gradflow


def test_gradflow_measure_init_is_finite_and_tanh_vanishes():
    from reports.gradflow import measure

    for cell in ("rnn_tanh", "lstm", "gru"):
        m = measure({"cell": cell, "hidden_size": 16}, 3, 40, batch=4)
        assert m["lags"] == list(range(40)) and len(m["norm"]) == 40
        assert all(math.isfinite(v) and v > 0 for v in m["norm"]), (cell, m["norm"])
    tanh = measure({"cell": "rnn_tanh", "hidden_size": 16}, 3, 40, batch=4)
    assert tanh["norm"][-1] < 1e-2 * tanh["norm"][0]  # vanishing at init (default uniform init)


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
    h = next(r["hash"] for r in _results(store) if r["result"] and r["result"]["status"] == "done"
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


# ---------------------------------------------------------------- errors and W&B


def _err(capsys, argv) -> str:
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def test_errors_are_one_line(sweep, tmp_path, capsys):
    s = str(sweep["store"].root)
    assert "sweep 'nope': not in store" in _err(capsys, ["report", "nope", "--store", s, "--out", str(tmp_path)])
    assert "no runs" in _err(capsys, ["report", "--store", str(tmp_path / "empty"), "--out", str(tmp_path)])
    assert "no runs" in _err(capsys, ["leaderboard", "--store", str(tmp_path / "empty"), "--out", str(tmp_path)])
    assert "unknown config key" in _err(capsys, ["report", "tiny", "--store", s, "--out", str(tmp_path),
                                                 "--reference", "model.nope=1"])
    assert "not in store" in _err(capsys, ["gradflow", "--run", "deadbeef0000", "--store", s, "--out", str(tmp_path)])
    assert "bidirectional" in _err(capsys, ["gradflow", "--cell", "gru", "--set", "model.bidirectional=true",
                                            "--T", "5", "--out", str(tmp_path)])


def test_wandb_is_opt_in_and_fails_cleanly_offline(sweep, tmp_path, capsys, monkeypatch):
    s = str(sweep["store"].root)
    # offline (conftest: WANDB_MODE=offline, no key): asking for W&B is a one-line error
    assert "W&B is not online" in _err(capsys, ["report", "tiny", "--store", s, "--out", str(tmp_path),
                                                "--from-wandb", "me/rnnbench"])
    monkeypatch.setitem(sys.modules, "wandb_workspaces", None)  # not installed
    monkeypatch.setitem(sys.modules, "wandb_workspaces.reports", None)
    monkeypatch.setitem(sys.modules, "wandb_workspaces.reports.v2", None)
    assert "needs the wandb-workspaces package" in _err(capsys, ["report", "tiny", "--store", s, "--out",
                                                                 str(tmp_path), "--publish"])


def _fake_workspaces(monkeypatch, fail: bool = False):
    """A stand-in for wandb_workspaces.reports.v2 that records what would be published."""
    import types

    saved = []

    class Block:
        def __init__(self, *args, **kw):
            self.args, self.kw = args, kw

    class Report(Block):
        url = "https://wandb.ai/me/proj/reports/fake"

        def save(self):
            saved.append(self)
            if fail:
                raise RuntimeError("network unreachable")

    fake = types.ModuleType("wandb_workspaces.reports.v2")
    for name in ("TableOfContents", "H1", "MarkdownBlock", "Runset", "PanelGrid", "LinePlot", "BarPlot"):
        setattr(fake, name, type(name, (Block,), {}))
    fake.Report = Report
    pkg, sub = types.ModuleType("wandb_workspaces"), types.ModuleType("wandb_workspaces.reports")
    pkg.reports, sub.v2 = sub, fake
    monkeypatch.setitem(sys.modules, "wandb_workspaces", pkg)
    monkeypatch.setitem(sys.modules, "wandb_workspaces.reports", sub)
    monkeypatch.setitem(sys.modules, "wandb_workspaces.reports.v2", fake)
    return saved


def test_publish_paths_without_network(sweep, tmp_path, capsys, monkeypatch):
    s = str(sweep["store"].root)
    _fake_workspaces(monkeypatch)
    # package present, W&B offline: one line, before any work
    assert "W&B is not online" in _err(capsys, ["report", "tiny", "--store", s, "--out", str(tmp_path / "a"),
                                                "--publish", "me/proj"])
    assert not (tmp_path / "a" / "report.md").exists()
    # "online" but the upload fails: the local report is already written, the error is one line
    monkeypatch.setenv("WANDB_MODE", "online")
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    tried = _fake_workspaces(monkeypatch, fail=True)
    assert "network unreachable" in _err(capsys, ["report", "tiny", "--store", s, "--out", str(tmp_path / "b"),
                                                  "--publish", "me/proj"])
    assert (tmp_path / "b" / "report.md").is_file()
    # what the save carried: the report's own Markdown, one section per task
    (rep,) = tried
    assert rep.kw["entity"] == "me" and rep.kw["project"] == "proj"
    texts = [b.kw["text"] for b in rep.kw["blocks"] if type(b).__name__ == "MarkdownBlock"]
    md = (tmp_path / "b" / "report.md").read_text()
    assert sum("## Task: " in t for t in texts) == 3 and all(t.strip() in md for t in texts[1:])


def test_from_wandb_maps_api_runs(sweep, tmp_path, monkeypatch):
    """--from-wandb with a stand-in W&B API: runs already in the store are taken from the store,
    the others are mapped from their config/summary/history (no network here)."""
    import types

    from reports.report import collect

    store = sweep["store"]
    local = {r["hash"] for r in _results(store)}
    cfg = load(None, ["task=copy", "task.T=5", "task.n_symbols=3", "task.eval_size=64", "model.hidden_size=8",
                      "model.cell=lstm", "trainer.max_steps=20", "trainer.val_every=10", "seed=7"])

    class FakeRun:
        def __init__(self, rid, config, loss, state="finished"):
            self.id, self.config, self.state, self.commit = rid, config, state, "c0ffee"
            self.summary = {"test/loss": loss, "test/acc": 0.5, "trainer/global_step": 20, "_runtime": 3.0}

        def scan_history(self, keys):
            return [{"trainer/global_step": 9, "val/loss": 2.0}, {"trainer/global_step": 19, "val/loss": 1.9}]

    seen = {}

    class FakeApi:
        default_entity = "me"

        def __init__(self, timeout=None):
            pass

        def runs(self, path, filters=None):
            seen.update(path=path, filters=filters)
            return [FakeRun(cfg.hash, cfg.to_dict(), 1.7), FakeRun(sorted(local)[0], {}, 99.0),
                    FakeRun("crashed1", cfg.to_dict() | {"seed": 8}, float("nan"), state="crashed")]

    monkeypatch.setitem(sys.modules, "wandb", types.SimpleNamespace(Api=FakeApi))
    monkeypatch.setenv("WANDB_MODE", "online")
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    groups = collect(store, ["tiny"], "me/proj")
    assert seen == {"path": "me/proj", "filters": {"group": {"$in": ["tiny"]}}}
    runs = {r.hash: r for g in groups for r in g.runs}
    assert set(runs) == local | {cfg.hash, "crashed1"}
    assert runs[sorted(local)[0]].source == "store"  # local copy wins
    remote = runs[cfg.hash]
    assert remote.source == "wandb" and remote.status == "done" and remote.metric("test/loss") == 1.7
    assert [row["val/loss"] for row in remote.metric_rows()] == [2.0, 1.9]
    lstm = next(v for g in groups if g.config["T"] == 5 and g.name == "copy" for v in g.variants if v.label == "lstm")
    assert sorted(r.seed for r in lstm.usable()) == [0, 1, 7]
    assert runs["crashed1"].status == "failed" and runs["crashed1"] not in lstm.usable()


# ---------------------------------------------------------------- end to end (slow)


@pytest.mark.slow
def test_cli_sweep_builds_report(tmp_path):
    """`rnnbench sweep` (LocalExecutor, one process per run) ends by building the report."""
    (tmp_path / "s.yaml").write_text(SWEEP.replace("values: [5, 8]", "value: 5").replace("values: [0, 1]", "value: 0"))
    store = tmp_path / "results"
    assert cli.main(["sweep", str(tmp_path / "s.yaml"), "--store", str(store), "--workers", "2",
                     "--wandb", "disabled"]) == 0
    md = (store / "reports" / "tiny" / "report.md").read_text()
    assert "## Task: copy T=5" in md and "| lstm |" in md and "| gru |" in md
