"""Published comparisons: the paper's findings beside the suite's, one Markdown report per paper.

    python -m reports.papers --store results_papers --out reports/published

For every `bench/sweeps/paper_<name>.claims.yaml` (the paper's findings, machine-readable) this
reads the runs of its sweep from the result store (the full sweep `paper_<name>` when the store
has it, else the reduced `paper_<name>_cpu`), checks each claim (reports/claims.py, which lists the
claim kinds) and writes `<out>/<name>/report.md` (+ PNGs): the paper's finding beside ours with a
plain verdict per claim (agrees / does not agree / inconclusive, with why), the reduction applied
and the measured cost. It also writes `<out>/README.md`, the list of sweep files with their
commands and costs.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Optional

import yaml

from bench.store import Store
from bench.sweep import expand
from models.registry import CELLS
from reports import stats
from reports.claims import (AGREES, DISAGREES, INCONCLUSIVE, SWEEPS, all_claims, baseline, check_claim,
                            lower_is_better, matches, primary_of, run_dict, value, values)
from reports.collect import flatten, store_runs
from reports.doc import Doc
from reports.gradflow import measure_run, plot
from reports.plots import bars_per_task, mean_vs_T
from reports.published_table import published_section
from reports.report import DASH, num, pval

ROOT = Path(__file__).resolve().parents[1]
VARIANT_KEYS = ["model.cell", "model.hidden_size", "model.forget_bias", "model.recurrent_init"]


# ---------------------------------------------------------------- store, sweeps, labels


def sweep_times(store) -> dict:
    """`<store>/sweep_times.txt` lines `name start end seconds` (written by the runner script);
    the last line per sweep wins."""
    path = Path(store) / "sweep_times.txt"
    out = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            parts = line.split()
            if len(parts) == 4:
                out[parts[0]] = int(parts[3])
    return out


def sweep_summary(path: Path) -> dict:
    name, cfgs = expand(path)
    vals = lambda f: sorted({f(c) for c in cfgs}, key=str)  # noqa: E731
    return {"name": name, "runs": len(cfgs), "steps": vals(lambda c: c.trainer.max_steps),
            "seeds": vals(lambda c: c.seed), "T": [t for t in vals(lambda c: getattr(c.task, "T", None)) if t is not None] or ["n/a"],
            "tasks": vals(lambda c: c.task.name), "hidden": vals(lambda c: c.model.hidden_size)}


def variant_label(cfg: dict, keys: list[str]) -> str:
    f = flatten(cfg)
    spec = CELLS.get(str(f.get("model.cell")))
    fixed = {f"model.{k}" for k in (spec.fixed if spec else {})}
    return " ".join([str(f.get("model.cell"))] + [f"{k.split('.', 1)[1]}={f.get(k)}" for k in keys
                                                  if k != "model.cell" and k not in fixed and f.get(k) is not None])


def task_label(cfg: dict) -> str:
    t = cfg.get("task", {})
    return t.get("name", "?") + (f" T={t['T']}" if "T" in t else "") + \
        (f" ({Path(str((t.get('data_files') or {}).get('train', ''))).parent.name})" if t.get("name") == "lm" else "")


def groups(runs: list[dict]) -> dict:
    """task label -> variant label -> runs; labels name the model keys that differ."""
    def shown(r, k):
        spec = CELLS.get(str(r["config"].get("model", {}).get("cell")))
        return None if spec and k.split(".", 1)[1] in spec.fixed else flatten(r["config"]).get(k)

    differ = [k for k in VARIANT_KEYS if len({json.dumps(shown(r, k)) for r in runs}) > 1]
    out: dict = {}
    for r in runs:
        out.setdefault(task_label(r["config"]), {}).setdefault(variant_label(r["config"], differ), []).append(r)
    return out


# ---------------------------------------------------------------- figures


def plot_vs_T(runs: list[dict], path: Path, title: str) -> Optional[Path]:
    by = groups(runs)
    Ts = sorted({flatten(r["config"]).get("task.T") for r in runs})
    if not Ts or None in Ts:
        return None
    at = lambda rs, T: [r for r in rs if flatten(r["config"]).get("task.T") == T]  # noqa: E731
    series = {}
    for lab in sorted({v for t in by.values() for v in t}):
        rs = [r for t in by.values() for v, rr in t.items() if v == lab for r in rr]
        series[lab] = [(T, stats.mean(values(at(rs, T)))) for T in Ts if values(at(rs, T))]
    base = [(T, b) for T in Ts if (b := baseline(at(runs, T))) is not None]
    return mean_vs_T(series, base, primary_of(runs[0]), path, title)


def plot_bars(runs: list[dict], path: Path, title: str) -> Optional[Path]:
    by = groups(runs)
    if not by:
        return None
    panels = {task: ({lab: values(rs) for lab, rs in variants.items()},
                     baseline([r for v in variants.values() for r in v]),
                     primary_of(next(iter(variants.values()))[0])) for task, variants in sorted(by.items())}
    return bars_per_task(panels, path, title)


def measure_gradflow(runs: list[dict], store, out: Path) -> tuple[list[dict], list[Path]]:
    """Gradient flow (reports.gradflow) of the seed-0 runs, one plot per task: at init and trained."""
    done = [r for r in runs if r.get("status") == "done" and r["config"].get("seed") == 0]
    curves, pngs = [], []
    for task in sorted({r["config"]["task"]["name"] for r in done}):
        init, trained = {}, {}
        for r in (r for r in done if r["config"]["task"]["name"] == task):
            m = measure_run(store, r["hash"], batch=16)
            lab = f"{r['config']['model']['cell']} {r['config']['model']['recurrent_init']} init (run {r['hash'][:6]})"
            init[lab] = m["init"]
            curves.append({"config": r["config"], "phase": "init", "norm": m["init"]["norm"], "label": lab})
            if m["trained"] is not None:
                trained[lab] = m["trained"]
                curves.append({"config": r["config"], "phase": "trained", "norm": m["trained"]["norm"], "label": lab})
        T = done[0]["config"]["task"].get("T")
        pngs.append(plot(init, trained, out / f"gradflow_{task}.png",
                         f"gradient flow, {task} T={T}, seed 0, batch 16 (rnnbench gradflow --run ...)"))
    (out / "gradflow.json").write_text(json.dumps(
        [{"label": c["label"], "task": c["config"]["task"]["name"], "phase": c["phase"], "norm": c["norm"]}
         for c in curves]) + "\n")
    return curves, pngs


# ---------------------------------------------------------------- report sections


def verdict_section(doc: Doc, claims: dict, results: list, runs: list[dict], reduced: bool, margin: float) -> None:
    counts = {v: sum(1 for _, r in results if r["verdict"] == v) for v in (AGREES, DISAGREES, INCONCLUSIVE)}
    doc.h(2, "Verdict")
    doc.p(f"{counts[AGREES]} claim(s) agree, {counts[DISAGREES]} do not agree, {counts[INCONCLUSIVE]} inconclusive"
          + (" — on the REDUCED CPU version (see below)." if reduced else "."))
    rows = [[c["id"], r["paper"], r["ours"] or DASH, f"**{r['verdict']}**" + (f" ({r['why']})" if r["why"] else "")]
            for c, r in results]
    doc.table(["claim", "paper", "ours", "verdict"], rows, align="llll")
    per_T = [[c["id"], x["T"], x["paper"], x["ours"], x["verdict"] + (f" ({x['why']})" if x["why"] else "")]
             for c, r in results for x in r["rows"]]
    if per_T:
        doc.p("Per T (a variant 'beats' the baseline when its mean test metric is below baseline × "
              f"(1 − {margin:g})):")
        doc.table(["claim", "T", "paper", "ours", "verdict"], per_T, align="lrlll")
    if claims.get("published"):
        published_section(doc, claims["published"], runs)
    if claims.get("notes"):
        doc.p("Notes (context from the literature, not measured here):")
        doc.ul(claims["notes"])


def variant_row(lab: str, rs: list[dict], ref_sel: Optional[dict], pv: dict, holm: dict) -> list:
    s = stats.summarize(values(rs))
    params = sorted({r.get("params") for r in rs} - {None})
    wall = [r["wall_time_s"] for r in rs if r.get("wall_time_s")]
    row = [lab, DASH if s.n == 0 else (num(s.mean) if s.std is None else f"{num(s.mean)} ± {num(s.std)}"),
           s.n, params[0] if params else DASH, flatten(rs[0]["config"]).get("trainer.max_steps"),
           num(stats.mean(wall), 3) if wall else DASH]
    if ref_sel:
        isref = all(matches(r, ref_sel) for r in rs)
        row += ["ref", DASH] if isref else [pval(pv.get(lab)), pval(holm.get(lab))]
    bad = [f"seed {r['config'].get('seed')}: {r.get('status')}" for r in rs if value(r) is None]
    return row + ["; ".join(bad) or "none"]


def results_section(doc: Doc, claims: dict, runs: list[dict]) -> None:
    doc.h(2, "Results")
    ref_sel = claims.get("reference")
    for task, variants in sorted(groups(runs).items()):
        allr = [r for v in variants.values() for r in v]
        ref_vals = values([r for r in allr if matches(r, ref_sel)]) if ref_sel else []
        pv = {lab: stats.welch(values(rs), ref_vals) for lab, rs in variants.items()} if ref_sel else {}
        holm = stats.holm({k: v for k, v in pv.items() if ref_vals and not all(matches(r, ref_sel) for r in variants[k])})
        doc.h(3, task)
        doc.p(f"Primary: `{primary_of(allr[0])}` ({'lower' if lower_is_better(allr) else 'higher'} is better); "
              f"baseline {num(baseline(allr))}.")
        headers = ["variant", "mean ± std", "n", "params", "steps", "train time/run (s)"]
        headers += ["Welch p vs ref", "Holm p"] if ref_sel else []
        doc.table(headers + ["not in statistics"], [variant_row(lab, rs, ref_sel, pv, holm) for lab, rs in variants.items()],
                  align="l" + "r" * (len(headers) - 1) + "l")


def figures_section(doc: Doc, claims: dict, runs: list[dict], out: Path, sweep: str, gf_pngs: list) -> None:
    name = claims["name"]
    if any(c["kind"] == "beats_baseline" for c in claims["claims"]):
        pngs = [plot_vs_T(runs, out / "vs_T.png", f"{name}: mean over seeds ({sweep})")]
    else:
        pngs = [plot_bars(runs, out / "bars.png",
                          f"{name} ({sweep}): bars = mean, error bars = 95% t CI, dots = seeds, dashed = baseline")]
    doc.h(2, "Figures")
    for p in pngs + gf_pngs:
        if p is not None:
            doc.img(p.relative_to(out).as_posix(), p.stem)
    if gf_pngs:
        doc.p("`gradflow_<task>.png`: ‖∂l_T/∂h_t‖ (log scale) against the lag T − t for the seed-0 runs, at init "
              "and after training, measured with `reports.gradflow` (as `rnnbench gradflow --run HASH ...`); "
              "numbers in `gradflow.json`.")


def reduction_section(doc: Doc, claims: dict, reduced: bool) -> None:
    fs, rs = sweep_summary(SWEEPS / claims["full"]), sweep_summary(SWEEPS / claims["reduced"])
    show = lambda v: ", ".join(map(str, v)) if isinstance(v, list) else v  # noqa: E731
    doc.h(2, "Reduction")
    doc.table(["", "full (`" + claims["full"] + "`)", "reduced (`" + claims["reduced"] + "`)"],
              [[k, show(fs[k]), show(rs[k])] for k in ("runs", "tasks", "T", "steps", "seeds", "hidden")], align="lll")
    doc.p(f"These results come from the {'reduced' if reduced else 'full'} sweep. The comments at the top of "
          "each sweep file name everything else that differs from the paper.")


def cost_section(doc: Doc, claims: dict, runs: list[dict], store, sweep: str) -> None:
    times = sweep_times(store)
    wall = [r.get("wall_time_s") for r in runs if r.get("wall_time_s")]
    statuses = {s: sum(1 for r in runs if r.get("status") == s) for s in sorted({r.get("status") for r in runs})}
    items = [f"runs: {len(runs)} ({', '.join(f'{n} {s}' for s, n in statuses.items())})"]
    if sweep in times:
        items.append(f"sweep wall time: {times[sweep]} s ({times[sweep] / 60:.1f} min) on 2 CPU cores, "
                     "`--workers 2` (includes ~8 s start-up per run)")
    commits = sorted({r.get("git_commit") for r in runs} - {None})
    if commits:
        dirty = len(commits) > 1 or any(c.endswith("+dirty") for c in commits)
        items.append(f"code: git {', '.join(f'`{c}`' for c in commits)}"
                     + (" (runs made while the checkout changed; `+dirty` = uncommitted changes)" if dirty else ""))
    items.append(f"summed training time of the runs (Lightning timer, excludes start-up and test): {sum(wall):.0f} s")
    doc.h(2, "Cost on this machine")
    doc.ul(items)
    doc.p(f"Reproduce: `rnnbench sweep bench/sweeps/{claims['reduced']} --workers 2 --store results_papers "
          f"--wandb disabled` then `python -m reports.papers --store results_papers --only {claims['name']}`.")


# ---------------------------------------------------------------- reports


def build(claims: dict, store, out_root, full: bool = False) -> Path:
    """Write <out_root>/<name>/report.md (+ PNGs) for one claims file; returns the path."""
    name = claims["name"]
    out = Path(out_root) / name
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("*.png"):
        old.unlink()
    full_name, red_name = Path(claims["full"]).stem, Path(claims["reduced"]).stem
    sweep = full_name if (full or full_name in Store(store).sweeps()) else red_name
    reduced = sweep == red_name
    runs = [run_dict(r) for r in store_runs(store, [sweep])]
    margin, alpha = float(claims.get("margin", 0.0)), float(claims.get("alpha", 0.05))
    curves, gf_pngs = [], []
    if any(c["kind"] == "gradflow_ratio" for c in claims["claims"]):
        curves, gf_pngs = measure_gradflow(runs, store, out)
    results = [(c, check_claim(c, runs, margin=margin, alpha=alpha, reduced=reduced, gradflow=curves))
               for c in claims["claims"]]
    doc = Doc()
    doc.h(1, claims["title"])
    doc.p(f"Paper: {claims['paper']}.")
    doc.p(f"Paper's finding: **{claims['finding']}**")
    doc.p(f"Generated {time.strftime('%Y-%m-%d %H:%M %Z')} by `python -m reports.papers` from sweep `{sweep}` "
          f"in result store `{Path(store).name}`.")
    verdict_section(doc, claims, results, runs, reduced, margin)
    results_section(doc, claims, runs)
    figures_section(doc, claims, runs, out, sweep, gf_pngs)
    reduction_section(doc, claims, reduced)
    cost_section(doc, claims, runs, store, sweep)
    path = out / "report.md"
    path.write_text(doc.markdown())
    (out / "claims.json").write_text(json.dumps(
        {"sweep": sweep, "reduced": reduced,
         "claims": [{"id": c["id"], **{k: r[k] for k in ("verdict", "why", "paper", "ours")}} for c, r in results]},
        indent=1) + "\n")
    return path


def write_readme(all_c: list[dict], store, out_root) -> Path:
    times = sweep_times(store)
    doc = Doc()
    doc.h(2, "Published comparisons")
    doc.p("Sweep files reproducing classic comparisons of recurrent architectures. Each `paper_<name>.yaml` is "
          "the full configuration (for a cluster); `paper_<name>_cpu.yaml` is a reduced version that a 2-core "
          "CPU finishes; `paper_<name>.claims.yaml` holds the paper's findings, checked by "
          "`python -m reports.papers` into `reports/published/<name>/report.md`.")
    rows = []
    for c in all_c:
        red = Path(c["reduced"]).stem
        rep = Path(out_root) / c["name"] / "claims.json"
        verdicts = json.loads(rep.read_text())["claims"] if rep.is_file() else []
        summary = ", ".join(f"{sum(1 for v in verdicts if v['verdict'] == k)} {k}" for k in (AGREES, DISAGREES, INCONCLUSIVE)) \
            if verdicts else "not run"
        cost = f"{times[red]} s ({times[red] / 60:.1f} min)" if red in times else "not measured"
        rows.append([c["title"], f"`bench/sweeps/{c['full']}`", f"`bench/sweeps/{c['reduced']}`",
                     f"`rnnbench sweep bench/sweeps/{c['reduced']} --workers 2 --store results_papers --wandb disabled`",
                     cost, summary, f"[report]({c['name']}/report.md)"])
    doc.table(["comparison", "full sweep", "reduced sweep", "command (reduced)", "measured cost, 2 CPU cores",
               "claims (reduced)", "report"], rows, align="lllllll")
    total = sum(times.get(Path(c["reduced"]).stem, 0) for c in all_c)
    if total:
        doc.p(f"All reduced sweeps together: {total} s ({total / 60:.1f} min) wall on 2 CPU cores.")
    doc.p("Then: `python -m reports.papers --store results_papers --out reports/published` regenerates every "
          "report and this file. The full sweeps run the same way (`--executor slurm` on a cluster); the "
          "generator uses a full sweep's runs whenever the store holds them.")
    full_sweeps_doc(doc)
    path = Path(out_root) / "README.md"
    path.write_text(doc.markdown())
    return path


def full_sweeps_doc(doc: Doc) -> None:
    """The full sweeps' estimated cost on this machine and the command that starts (or resumes)
    each, from reports/published/full_sweeps.yaml (measured by bench.benchmarks.sweep_cost)."""
    path = ROOT / "reports" / "published" / "full_sweeps.yaml"
    if not path.is_file():
        return
    spec = yaml.safe_load(path.read_text())
    doc.h(3, "Full sweeps: estimated cost on this machine, and how to start them")
    doc.p(spec["note"])
    doc.table(["sweep", "runs", "seeds", "steps a run", "hours, --pack 1", "hours, --pack 8", "start / resume"],
              [[f"`bench/sweeps/{s['file']}`", s["runs"], s["seeds"], s["steps"], s["hours_alone"],
                s["hours_packed"], f"`{s['command']}`"] for s in spec["sweeps"]], align="lrrrrrl")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m reports.papers", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--store", default="results_papers", help="result store (default: results_papers)")
    ap.add_argument("--out", default=str(ROOT / "reports" / "published"), help="output root (default: reports/published)")
    ap.add_argument("--only", nargs="+", default=[], metavar="NAME", help="comparisons to build (copy adding greff ...)")
    ap.add_argument("--full", action="store_true", help="report the full sweeps (error if not in the store)")
    a = ap.parse_args(argv)
    cl = all_claims()
    for c in cl:
        if a.only and c["name"] not in a.only:
            continue
        try:
            print(f"{c['name']}: {build(c, a.store, a.out, a.full)}")
        except FileNotFoundError as e:
            print(f"{c['name']}: skipped ({e})", file=sys.stderr)
    print(f"README: {write_readme(cl, a.store, a.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
