"""Reports built from the real tiny sweep of tests/report_sweep.py (the `sweep` fixture): statistics,
tables, failed and diverged runs, figures, variant labels. Every number checked here is recomputed
from the result.json files, never from the report code."""
from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from scipy import stats as sps

from bench import cli
from bench.config import load
from bench.store import Store
from report_sweep import SWEEP, results, variant_key


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
    half = sps.t.ppf(0.975, df) * math.sqrt(va + vb)         # the Welch interval of mean(a) - mean(b)
    d = stats.mean(a) - stats.mean(b)
    assert stats.welch_ci(a, b) == pytest.approx((d - half, d + half), rel=1e-9)
    assert stats.welch_ci([1.0], b) == (None, None)


# ---------------------------------------------------------------- report


def test_report_table_numbers(sweep, report):
    md = (report / "report.md").read_text()
    runs = results(sweep["store"])
    for T in (5, 8):
        table = _table(md, f"## Task: copy T={T}")
        mine = [r for r in runs if r["config"]["task"] == {**r["config"]["task"], "name": "copy", "T": T}]
        by_variant: dict[str, list] = {}
        for r in mine:
            by_variant.setdefault(variant_key(r["config"]), []).append(r)
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


def _fake_store(root: Path, specs: list[tuple[list[str], float]], impls: dict = None, loads: dict = None) -> Store:
    """A store of written result.json files (no training): (overrides, test/loss) per run;
    `impls`: model.cell -> the runs' `implementation` record; `loads`: (cell, seed) -> environment.load."""
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
                                       "implementation": (impls or {}).get(cfg.model.cell),
                                       **({"environment": {"cpu": "x", "load": (loads or {})[cfg.model.cell, cfg.seed]}}
                                          if (cfg.model.cell, cfg.seed) in (loads or {}) else {})})
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


def test_time_column_flags_rows_trained_on_a_loaded_machine(tmp_path):
    """A row with a run whose load average (start or end) exceeded its CPU count: ‡ and a footnote;
    runs at or under it, or recorded without the field, unmarked."""
    from reports.report import build_report

    store = _fake_store(tmp_path / "results", [([], 1.0), (["seed=1"], 1.2), (["model.cell=gru"], 1.1),
                                               (["model.cell=rnn_tanh"], 1.3)],
                        loads={("lstm", 0): {"cpus": 2, "start": 1.0, "end": 1.5},
                               ("lstm", 1): {"cpus": 2, "start": 2.5, "end": 1.9},
                               ("gru", 0): {"cpus": 2, "start": 2.0, "end": 2.0}})
    md = build_report(store, ["fake"], tmp_path / "out").read_text()
    assert {r["variant"]: r["wall time (s)"] for r in _table(md, "## Task: copy T=5")} == \
        {"lstm": "1 (not recorded) ‡", "gru": "1 (not recorded)", "rnn_tanh": "1 (not recorded)"}
    assert md.count("‡ the time was measured under load") == 2   # under the task table and the appendix
    appendix = {(r["variant"], r["seed"]): r["wall time (s)"] for r in _table(md, "## Appendix: every run")}
    assert appendix[("lstm", "1")] == "1 ‡" and appendix[("lstm", "0")] == appendix[("gru", "0")] == "1"
    old = build_report(_fake_store(tmp_path / "old", [([], 1.0)]), ["fake"], tmp_path / "out2").read_text()
    assert "‡" not in old


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


CHROMIUM = next((p for p in ("chromium", "chromium-browser", "google-chrome") if shutil.which(p)), None)
if CHROMIUM is None and os.environ.get("RNNBENCH_REQUIRE_CHROMIUM") == "1":  # CI (.ci/run) must render
    raise RuntimeError("RNNBENCH_REQUIRE_CHROMIUM=1 but no chromium on PATH")
# injected first into <head>: records script errors and console.error calls, then at load checks
# every image (loaded, non-zero size on the page) and every table (its right edge within the page)
PROBE = """<script>window.__errors = [];
window.addEventListener('error', e => window.__errors.push(String(e.message || e.type)), true);
const __ce = console.error; console.error = (...a) => { window.__errors.push(a.join(' ')); __ce(...a); };
window.addEventListener('load', () => {
  const W = document.documentElement.clientWidth, imgs = [...document.images];
  const tables = [...document.querySelectorAll('table')];
  const out = {width: W, errors: window.__errors, images: imgs.length,
    unshown: imgs.filter(i => !(i.complete && i.naturalWidth > 0 && i.getBoundingClientRect().width > 0)).length,
    tables: tables.length, too_wide: tables.filter(t => t.getBoundingClientRect().right > W + 1).length};
  const pre = document.createElement('pre'); pre.id = 'probe'; pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
});</script>"""


def _chromium(*args, timeout=120):
    return subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                           "--window-size=1280,2400", "--virtual-time-budget=10000", *args],
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.skipif(CHROMIUM is None, reason="no headless Chromium here (.ci/run installs Debian's chromium)")
def test_report_html_in_a_browser(report, tmp_path):
    """The default report as people see it: rendered by headless Chromium to a PNG; no script or
    console errors, every figure embedded and shown, every table within the page width."""
    import matplotlib.image

    html = (report / "report.html").read_text()
    probe = tmp_path / "probe.html"
    probe.write_text(html.replace("<head>", "<head>" + PROBE, 1))
    dom = _chromium("--dump-dom", probe.as_uri()).stdout
    found = re.search(r'<pre id="probe">(.*?)</pre>', dom, re.S)
    assert found, dom[-2000:]
    seen = json.loads(found.group(1).replace("&quot;", '"').replace("&amp;", "&"))
    assert seen["errors"] == [] and seen["unshown"] == 0 and seen["too_wide"] == 0, seen
    assert seen["images"] == html.count("data:image/png;base64,") == 6 and seen["tables"] >= 5, seen
    png = tmp_path / "report.png"
    _chromium(f"--screenshot={png}", (report / "report.html").as_uri())
    pixels = matplotlib.image.imread(png)
    assert pixels.shape[1] == 1280 and pixels.std() > 0.01         # a page was drawn, not a blank one


def test_adding_bar_chart_is_log_scaled_when_values_span_decades(tmp_path, monkeypatch):
    """The adding problem as the issue saw it: tanh-RNN at the baseline (0.17), gated cells near
    1e-3: on a linear axis they are flat at zero; the bar chart draws them on a log axis."""
    import matplotlib.pyplot as plt

    from reports import plots
    from reports.collect import Run, TaskGroup, Variant

    def variant(cell, values):
        runs = [Run(f"{cell}{i}", {"seed": i}, {"status": "done", "metrics": {"test/loss": v}}, "done")
                for i, v in enumerate(values)]
        return Variant(cell, {"model": {"cell": cell}}, runs, label=cell, primary="test/loss")

    def scale(variants):
        axes, real = [], plt.subplots

        def capture(*a, **k):
            fig, ax = real(*a, **k)
            axes.append(ax)
            return fig, ax
        monkeypatch.setattr(plt, "subplots", capture)
        g = TaskGroup("k", "adding", {"name": "adding", "T": 100}, "test/loss", "min", {"test/loss": 0.167},
                      variants, title="adding T=100")
        assert plots.bar_chart(g, tmp_path / "bar.png") is not None
        monkeypatch.setattr(plt, "subplots", real)
        return axes[0].get_yscale()

    assert scale([variant("rnn_tanh", [0.17, 0.168]), variant("lstm", [1.2e-3, 8e-4]),
                  variant("gru", [4e-4, 6e-4])]) == "log"
    assert scale([variant("rnn_tanh", [0.17, 0.168]), variant("lstm", [0.09, 0.1])]) == "linear"
    assert plots.spans_decades([0.17, 1.7e-3]) and not plots.spans_decades([0.17, 1.8e-3])


def test_publish_builds_the_real_wandb_report_from_a_store(tmp_path, monkeypatch):
    """`--publish` with the real wandb-workspaces classes, from a real store of offline-tracked runs:
    blocks, run sets (the runs' W&B ids) and panels, serialised to the Report's JSON spec. No
    network: saving is captured, and the one server lookup serialising needs (a project's internal
    id) answers from a stub."""
    wr = pytest.importorskip("wandb_workspaces.reports.v2", reason="pip install -e '.[reports]'")
    import wandb_workspaces.reports.v2.interface as wsi

    import reports.wandb_io as wio
    from bench.train import run
    from reports.report import build_report

    store = Store(tmp_path / "results")
    cfgs = [load(None, ["task=adding", "task.T=5", "task.eval_size=16", "model.hidden_size=8",
                        "trainer.max_steps=4", "trainer.val_every=2", f"seed={s}"]) for s in (0, 1)]
    store.record_sweep("pub", [c.hash for c in cfgs])
    ids = [run(c, store.root, sweep="pub", wandb_mode="offline")["wandb_id"] for c in cfgs]
    assert ids == [c.hash for c in cfgs]
    saved = []
    monkeypatch.setattr(wio, "check_publish", lambda: None)           # W&B offline here
    monkeypatch.setattr(wr.Report, "save", lambda self, *a, **k: saved.append(self) or self)
    monkeypatch.setattr(wr.Report, "url", property(lambda self: "https://wandb.ai/ent/proj/reports/offline"))
    build_report(store, ["pub"], tmp_path / "report", publish="ent/proj")
    assert (tmp_path / "report" / "wandb_report_url.txt").read_text() == "https://wandb.ai/ent/proj/reports/offline\n"
    (report,) = saved
    assert isinstance(report, wr.Report) and (report.entity, report.project) == ("ent", "proj")
    kinds = [type(b).__name__ for b in report.blocks]
    assert kinds == ["TableOfContents", "H1", "MarkdownBlock", "H1", "MarkdownBlock", "PanelGrid"], kinds
    assert report.blocks[1].text == "Summary" and report.blocks[3].text.startswith("Task: adding")
    assert "| variant |" in report.blocks[4].text
    grid = report.blocks[5]
    assert [type(p).__name__ for p in grid.panels] == ["LinePlot", "BarPlot"]
    assert grid.panels[1].metrics == ["test/loss"] and grid.panels[0].y == ["val/loss"]
    assert grid.runsets[0].filters == f"Metric('ID') in ['{ids[0]}', '{ids[1]}']"
    monkeypatch.setattr(wsi, "_get_api", lambda: None)
    monkeypatch.setattr(wsi, "execute_graphql", lambda *a, **k: {"project": {"internalId": "UHJvamVjdDox"}})
    spec = json.loads(report._to_model().spec.model_dump_json(by_alias=True, exclude_none=True))
    text = json.dumps(spec)
    assert all(i in text for i in ids) and "val/loss" in text and "test/loss" in text
