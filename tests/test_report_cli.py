"""Report commands: one-line errors, W&B opt-in (reading runs from W&B, publishing) without network."""
from __future__ import annotations

import sys

from bench import cli
from bench.config import load
from report_sweep import results


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
    local = {r["hash"] for r in results(store)}
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
