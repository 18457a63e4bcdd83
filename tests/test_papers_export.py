"""The published comparisons' raw results in the repository: a compact export of a real (tiny,
trained) store, a sweep resumed from it without retraining, and `python -m reports.papers`
rebuilding the reports from the compact files alone, byte for byte (the committed ones:
tests/test_papers_committed.py)."""
from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest

from bench.store import Store
from bench.sweep import LocalExecutor, expand
from reports import claims as claims_mod
from reports import papers, published_runs

ROOT = Path(__file__).resolve().parents[1]
SWEEP = """
name: paper_tiny
method: grid
parameters:
  task: {{value: copy}}
  task.T: {{value: 1}}
  task.n_symbols: {{value: 1}}
  task.n_categories: {{value: 2}}
  task.batch_size: {{value: 8}}
  task.eval_size: {{value: 32}}
  model.cell: {{value: rnn_tanh}}
  model.hidden_size: {{value: 8}}
  model.recurrent_init: {{values: [default, orthogonal]}}
  seed: {{values: {seeds}}}
  optim.lr: {{value: 0.05}}
  trainer.max_steps: {{value: {steps}}}
  trainer.val_every: {{value: 10}}
  trainer.stop_when_solved: {{value: true}}
"""
CLAIMS = """
name: tiny
title: "Tiny: orthogonal against default init"
paper: "a test"
full: paper_tiny.yaml
reduced: paper_tiny_cpu.yaml
evidence: [paper_tiny_long.yaml]
finding: "orthogonal init helps"
alpha: 0.05
claims:
  - {id: gradflow_copy, kind: gradflow_ratio, text: "gradient flow", task: {task.name: copy},
     select: {model.recurrent_init: orthogonal}, ref: {model.recurrent_init: default}, min_ratio: 1}
  - {id: copy_better, kind: better_than_ref, text: "lower loss", task: {task.name: copy},
     select: {model.recurrent_init: orthogonal}, ref: {model.recurrent_init: default}}
"""


def tree(root: Path) -> dict:
    """relative path -> bytes of every file under root."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """bench/sweeps stand-in with a tiny comparison; 4 of its 6 runs trained for real in `work`."""
    tmp = tmp_path_factory.mktemp("tiny")
    sweeps = tmp / "sweeps"
    sweeps.mkdir()
    (sweeps / "paper_tiny.yaml").write_text(SWEEP.format(seeds="[0, 1]", steps=40))
    (sweeps / "paper_tiny_more.yaml").write_text(SWEEP.format(seeds="[2]", steps=40))   # same sweep name
    (sweeps / "paper_tiny_cpu.yaml").write_text(SWEEP.format(seeds="[0]", steps=10).replace("paper_tiny", "paper_tiny_cpu"))
    (sweeps / "paper_tiny_long.yaml").write_text(   # an evidence run: seed 0 of the default init, longer
        SWEEP.format(seeds="[0]", steps=60).replace("paper_tiny", "paper_tiny_long").replace("[default, orthogonal]", "[default]"))
    (sweeps / "paper_tiny.claims.yaml").write_text(CLAIMS)
    mp = pytest.MonkeyPatch()
    for mod in (claims_mod, papers, published_runs):
        mp.setattr(mod, "SWEEPS", sweeps)
    published_runs.sweep_files.cache_clear()
    published_runs._expected.cache_clear()
    work = Store(tmp / "work")
    t0 = time.time()
    LocalExecutor(work, "paper_tiny", workers=1, threads=1, progress=False, wandb_mode="disabled").run(
        expand(sweeps / "paper_tiny.yaml")[1])
    LocalExecutor(work, "paper_tiny_long", workers=1, threads=1, progress=False, wandb_mode="disabled").run(
        expand(sweeps / "paper_tiny_long.yaml")[1])
    (work.root / "sweep_times.txt").write_text(f"paper_tiny {int(t0)} {int(time.time())} {int(time.time() - t0)}\n")
    out = tmp / "published"
    assert papers.main(["--store", str(work.root), "--export", "--out", str(out), "--readme", ""]) == 0
    yield {"tmp": tmp, "sweeps": sweeps, "work": work, "out": out}
    mp.undo()
    published_runs.sweep_files.cache_clear()
    published_runs._expected.cache_clear()


def test_export_is_compact_and_reads_the_same(tiny):
    work, copy = tiny["work"], Store(tiny["out"] / "tiny")
    hashes = work.sweep_hashes("paper_tiny")
    long = work.sweep_hashes("paper_tiny_long")
    assert len(hashes) == 4 and sorted(hashes) == sorted(copy.sweep_hashes("paper_tiny"))
    assert len(long) == 1 and copy.sweep_hashes("paper_tiny_long") == long and sorted(copy.hashes()) == sorted(hashes + long)
    for h in hashes + long:
        files = {p.relative_to(copy.run_dir(h)).as_posix() for p in copy.run_dir(h).rglob("*") if p.is_file()}
        assert files == {"config.yaml", "result.json", "logs/version_0/metrics.csv"}   # no ckpt, wandb, lock, log
        assert work.checkpoint(h) is not None and copy.checkpoint(h) is None
        assert copy.result(h) == work.result(h) and copy.status(h) == "done"
        assert copy.metrics(h) == work.metrics(h) and copy.metrics(h)
    assert [k for k in tree(copy.root) if "/." in "/" + k] == []                 # no lock or temp files
    size = sum(len(b) for k, b in tree(copy.root).items() if k.startswith(("runs/", "sweeps/")))
    assert size < 20_000, size
    report = (tiny["out"] / "tiny" / "report.md").read_text()
    assert "full sweep `paper_tiny` (`bench/sweeps/paper_tiny.yaml`, `bench/sweeps/paper_tiny_more.yaml`)" in report
    assert "**4 of 6 runs finished**" in report
    evidence = report.split("## Evidence runs (outside the verdicts)\n", 1)[1].split("\n## ", 1)[0]
    r = work.result(long[0])
    assert "`paper_tiny_long.yaml`" in evidence and f"| `{long[0]}` | done | {r['step']} |" in evidence
    assert "trainer.max_steps=60" in evidence and "test/loss" in report.split("## Evidence runs")[0]
    stops = {h: work.result(h).get("stopped") for h in hashes}   # this task is solved within a few validations
    steps = sorted(s["step"] for s in stops.values() if s and s["reason"] == "solved")
    assert steps, "the tiny copy task (T=1, one symbol of 2) is solved before step 40"
    assert f"runs stopped when solved (`trainer.stop_when_solved`, `result.json` `stopped`): {len(steps)} of 4" in report
    for init in ("default", "orthogonal"):   # per variant: how many stopped, at which steps
        mine = sorted(stops[h]["step"] for h in hashes if stops[h] and work.config(h)["model"]["recurrent_init"] == init)
        assert f"| {len(mine)} of 2" + (f" (at {', '.join(map(str, mine))})" if mine else "") + " |" in report
    got = json.loads((tiny["out"] / "tiny" / "claims.json").read_text())
    verdicts = {c["id"]: (c["verdict"], c["why"]) for c in got["claims"]}
    assert verdicts["copy_better"] == ("pending", "4 of 6 runs of the full sweep `paper_tiny` finished")
    assert verdicts["gradflow_copy"][0] in ("agrees", "does not agree")    # needs the seed-0 runs only: both finished
    assert got["finished"] == 4 and got["total"] == 6 and got["sweep_wall_s"] is not None
    flows = json.loads((tiny["out"] / "tiny" / "gradflow.json").read_text())
    assert {e["phase"] for e in flows} == {"init", "trained"}      # measured from the working store's checkpoints at export
    assert all(f", T={work.config(e['hash'])['task']['T']} (run " in e["label"] for e in flows)   # a figure may mix Ts
    assert "| 4 / 6 |" in (tiny["out"] / "README.md").read_text()


def test_regenerates_from_the_compact_files_byte_for_byte(tiny):
    again = tiny["tmp"] / "again"
    shutil.copytree(tiny["out"], again)
    before = tree(again)
    assert papers.main(["--out", str(again), "--readme", ""]) == 0     # no store: the committed files alone
    after = tree(again)
    assert after.keys() == before.keys()
    assert [k for k in after if after[k] != before[k]] == []           # report.md, claims.json, PNGs, gradflow.json


def test_a_sweep_resumed_from_the_export_trains_only_the_missing_runs(tiny):
    sweeps, tmp = tiny["sweeps"], tiny["tmp"]
    cfgs = expand(sweeps / "paper_tiny.yaml")[1] + expand(sweeps / "paper_tiny_more.yaml")[1]
    exported = set(Store(tiny["out"] / "tiny").hashes())
    missing = [c.hash for c in cfgs if c.hash not in exported]
    assert len(missing) == 2
    # the compact copy is itself a store a sweep accepts: only the two missing runs are to do
    direct = tmp / "direct"
    shutil.copytree(tiny["out"] / "tiny", direct)
    assert [c.hash for c in LocalExecutor(Store(direct), "paper_tiny", workers=1).todo(cfgs)] == missing
    # a fresh working store seeded from the export (as in a new session), then the sweep
    fresh = Store(tmp / "fresh")
    assert papers.main(["--store", str(fresh.root), "--import", "--out", str(tiny["out"])]) == 0
    seeded = {h: (fresh.run_dir(h) / "result.json").read_bytes() for h in exported}
    states = LocalExecutor(fresh, "paper_tiny", workers=1, threads=1, progress=False, wandb_mode="disabled").run(cfgs)
    assert set(states.values()) == {"done"}
    for h in exported:   # not trained again: same result, no checkpoint, no log, one metrics file
        assert (fresh.run_dir(h) / "result.json").read_bytes() == seeded[h]
        assert fresh.checkpoint(h) is None and not (fresh.run_dir(h) / "run.log").exists()
        assert len(fresh.metric_files(h)) == 1
    for h in missing:
        assert fresh.checkpoint(h) is not None and fresh.result(h)["status"] == "done"
    # exporting the whole sweep now gives every claim a verdict
    out = tmp / "published_full"
    shutil.copytree(tiny["out"], out)
    assert papers.main(["--store", str(fresh.root), "--export", "--out", str(out), "--readme", ""]) == 0
    got = json.loads((out / "tiny" / "claims.json").read_text())
    assert got["finished"] == got["total"] == 6 and "pending" not in {c["verdict"] for c in got["claims"]}
    assert len(Store(out / "tiny").hashes()) == 6 + 1   # + the evidence run, kept


def test_a_copy_killed_half_way_leaves_no_partial_run(tmp_path, monkeypatch):
    """bench.store_copy.copy_run writes aside and renames: a copy that dies before the end leaves no
    run directory with metrics but no result (a sweep would take them for an attempt of its own)."""
    from bench import store_copy

    src, dst = Store(tmp_path / "src"), Store(tmp_path / "dst")
    d = src.run_dir("abc123")
    (d / "logs" / "version_0").mkdir(parents=True)
    (d / "config.yaml").write_text("seed: 0\n")
    (d / "logs" / "version_0" / "metrics.csv").write_text("step,train/loss\n0,1.0\n")
    (d / "result.json").write_text('{"hash": "abc123", "status": "done"}\n')
    real = shutil.copyfile

    def dies_at_the_metrics(a, b):
        if Path(a).name == "metrics.csv":
            raise KeyboardInterrupt
        return real(a, b)

    monkeypatch.setattr(store_copy.shutil, "copyfile", dies_at_the_metrics)
    with pytest.raises(KeyboardInterrupt):
        store_copy.copy_run(src, dst, "abc123")
    assert not dst.run_dir("abc123").exists() and dst.hashes() == []
    monkeypatch.setattr(store_copy.shutil, "copyfile", real)
    store_copy.copy_run(src, dst, "abc123")
    assert tree(dst.root) == {f"runs/abc123/{k}": v for k, v in tree(d).items()}


def test_an_evidence_sweep_that_repeats_a_verdict_run_is_refused_before_any_write(tiny):
    """An evidence run with the hash of one of the comparison's own runs would replace its committed
    copy (the store keys runs by hash) and be listed as evidence: export and report refuse it."""
    sweeps, out = tiny["sweeps"], tiny["out"]
    (sweeps / "paper_tiny_again.yaml").write_text(   # seed 1 of paper_tiny, exactly
        SWEEP.format(seeds="[1]", steps=40).replace("paper_tiny", "paper_tiny_again"))
    claims = sweeps / "paper_tiny.claims.yaml"
    claims.write_text(CLAIMS.replace("evidence: [paper_tiny_long.yaml]", "evidence: [paper_tiny_long.yaml, paper_tiny_again.yaml]"))
    published_runs.sweep_files.cache_clear()
    published_runs._expected.cache_clear()
    stamps = lambda: {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in sorted(out.rglob("*")) if p.is_file()}  # noqa: E731
    before = stamps()
    try:
        with pytest.raises(papers.ConfigError) as e:
            papers.main(["--store", str(tiny["work"].root), "--export", "--out", str(out), "--readme", ""])
        assert str(e.value).startswith("tiny: evidence sweep paper_tiny_again.yaml repeats 2 run(s) of the comparison's own sweeps (first: ")
        assert "\n" not in str(e.value) and stamps() == before
        with pytest.raises(papers.ConfigError, match="paper_tiny_again.yaml repeats 2 run"):
            papers.main(["--out", str(out), "--readme", ""])       # the report from the committed files too
        assert stamps() == before                                   # not even rewritten with the same bytes
        claims.write_text(CLAIMS.replace("evidence: [paper_tiny_long.yaml]", "evidence: [paper_tiny_gone.yaml]"))
        with pytest.raises(papers.ConfigError, match=r"^tiny: evidence: no sweep file paper_tiny_gone.yaml in "):
            papers.main(["--out", str(out), "--readme", ""])
        assert stamps() == before
    finally:
        claims.write_text(CLAIMS)
        (sweeps / "paper_tiny_again.yaml").unlink()
        published_runs.sweep_files.cache_clear()
        published_runs._expected.cache_clear()


def test_a_run_the_sweep_files_no_longer_give_is_counted_but_enters_no_statistic(tiny):
    """A store index may hold runs of an earlier version of a sweep file: the report says how many,
    and neither the verdicts nor the tables read them."""
    out = tiny["tmp"] / "outside"
    shutil.copytree(tiny["out"], out)
    copy = Store(out / "tiny")
    h = copy.sweep_hashes("paper_tiny")[0]
    old = copy.run_dir(h)
    new = copy.run_dir("feedfacecafe")
    shutil.copytree(old, new)
    res = json.loads((new / "result.json").read_text())
    res.update(hash="feedfacecafe", metrics={k: 1e6 for k in res["metrics"]})
    (new / "result.json").write_text(json.dumps(res))
    (new / "config.yaml").write_text((old / "config.yaml").read_text().replace("seed: ", "seed: 7", 1).replace("seed: 7", "seed: 7", 1))
    index = out / "tiny" / "sweeps" / "paper_tiny.json"
    spec = json.loads(index.read_text())
    index.write_text(json.dumps(dict(spec, hashes=spec["hashes"] + ["feedfacecafe"])))
    assert papers.main(["--out", str(out), "--readme", ""]) == 0
    report = (out / "tiny" / "report.md").read_text()
    assert "1 more run(s) in the store's index of `paper_tiny` are not in the sweep files" in report
    assert "feedfacecafe" not in report and "1e+06" not in report
    assert (out / "tiny" / "claims.json").read_text() == (tiny["out"] / "tiny" / "claims.json").read_text()
