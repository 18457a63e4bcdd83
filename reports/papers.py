"""Published comparisons: the paper's findings beside the suite's, one Markdown report per paper.

    python -m reports.papers                                         # from the committed raw results
    python -m reports.papers --store results_published --export      # copy a store's finished runs in, then that
    python -m reports.papers --store results_published --import      # seed a working store to resume a sweep

For every `bench/sweeps/paper_<name>.claims.yaml` (the paper's findings, machine-readable) this
reads the runs of its full sweep `paper_<name>` (else, marked reduced, `paper_<name>_cpu`) from the
raw results committed in `<out>/<name>/` (a compact copy of a result store: bench/store_copy.py),
or from `--store`; checks each claim (reports/claims.py) once every run of the full sweep it needs
is finished (before that it is pending, reports/published_runs.py) and writes `<out>/<name>/report.md`
(+ PNGs, claims.json): the paper's finding beside ours with a verdict per claim, the runs' progress
and cost. It also writes `<out>/README.md` and the table of the repository's README.md
(reports/published_readme.py). Nothing depends on the clock, so the output from the same raw results
is the same bytes.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Optional

from bench.store import FINISHED, Damaged, Store, write_atomic
from bench.sweep import expand
from bench.schema import ConfigError
from reports import recall, stats
from reports.claims import (AGREES, DISAGREES, INCONCLUSIVE, LEARNT_MARGIN, MARGIN, SWEEPS, WELCH_KINDS, all_claims, baseline,
                            check_claim, lower_is_better, matches, primary_of, run_dict, value, values)
from reports.collect import EXPLODED, flatten, machine_s, store_runs
from reports.doc import Doc
from reports.evidence import evidence_section
from reports.looks import looks_section
from reports.settle import settle_section
from reports.paper_figures import figures_section, groups, measure_gradflow
from reports.published_readme import VERDICTS, update_root_readme, write_readme
from reports.published_runs import (PENDING, check_evidence, estimate, export, pending, progress, seed, start_command,
                                    sweep_files, sweep_names, with_pending)
from reports.published_table import published_section
from reports.report import DASH, load_mark, loaded_note, num, pval, seeds_by_status

ROOT = Path(__file__).resolve().parents[1]
RECALL = "recall.json"          # per-position recall of copy runs (reports/recall.py), kept beside the report
EARLIER = "earlier_report.md"   # a report kept from before the raw results were committed (not regenerated)


# ---------------------------------------------------------------- store, sweeps


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


def sweep_summary(paths) -> dict:
    """Runs, steps, seeds, T, tasks and hidden sizes of a sweep: one file or all the files of a sweep
    (paper_jozefowicz_seeds.yaml adds seeds to paper_jozefowicz)."""
    paths = [paths] if isinstance(paths, (str, Path)) else list(paths)
    found = [expand(p) for p in paths]
    name, cfgs = found[0][0], list({c.hash: c for _, cs in found for c in cs}.values())
    order = lambda v: (0, v, "") if isinstance(v, (int, float)) else (1, 0, str(v))  # noqa: E731  numbers first, by value
    vals = lambda f: sorted({f(c) for c in cfgs}, key=order)  # noqa: E731
    return {"name": name, "runs": len(cfgs), "steps": vals(lambda c: c.trainer.max_steps),
            "seeds": vals(lambda c: c.seed), "T": [t for t in vals(lambda c: getattr(c.task, "T", None)) if t is not None] or ["n/a"],
            "tasks": vals(lambda c: c.task.name), "hidden": vals(lambda c: c.model.hidden_size)}


# ---------------------------------------------------------------- report sections


def verdict_section(doc: Doc, claims: dict, results: list, runs: list[dict], reduced: bool, margin: float) -> None:
    counts = {v: sum(1 for _, r in results if r["verdict"] == v) for v in VERDICTS}
    doc.h(2, "Verdict")
    doc.p(f"{counts[AGREES]} claim(s) agree, {counts[DISAGREES]} do not agree, {counts[INCONCLUSIVE]} inconclusive, "
          f"{counts[PENDING]} pending (runs of the full sweep not finished yet)"
          + (" — the figures in 'ours' are from the REDUCED sweep (see below), not a verdict." if reduced else "."))
    rows = [[c["id"], r["paper"], r["ours"] or DASH, f"**{r['verdict']}**" + (f" ({r['why']})" if r["why"] else "")]
            for c, r in results]
    doc.table(["claim", "paper", "ours", "verdict"], rows, align="llll")
    per_T = [[c["id"], x["T"], x["paper"], x["ours"], x["verdict"] + (f" ({x['why']})" if x["why"] else "")]
             for c, r in results for x in r["rows"]]
    if per_T:
        doc.p(f"Per T (a variant 'beats' the baseline when its finite runs' mean test metric is below baseline × (1 − "
              f"{margin:g}), or above × (1 + {margin:g}) where higher is better, and they outnumber its diverged runs):")
        doc.table(["claim", "T", "paper", "ours", "verdict"], per_T, align="lrlll")
    if any(c["kind"] in WELCH_KINDS for c, _ in results):
        alpha = float(claims.get("alpha", 0.05))
        doc.p(f"Welch p: two-sided Welch t-test (unequal variances, Welch–Satterthwaite degrees of freedom) of the "
              f"variant's seeds against the reference's, over the runs `done` with a finite metric (diverged and "
              f"failed runs are left out, and named in 'ours'). 'Better' or 'worse' agrees when p < {alpha:g} with the "
              f"mean in the claim's direction (a one-sided test at {alpha / 2:g}); 'not significantly worse' ('better') "
              f"does not agree when p < {alpha:g} with the mean worse (better), and agrees only when the interval's worse (better) end "
              f"is within a margin (a non-inferiority test at {alpha / 2:g}; a share, the claim's `margin` or {MARGIN:.0%}, of the reference's gain "
              f"over the task baseline, or of its mean without one), else it is inconclusive; a claim's `best` caps how much better. The interval is the {(1 - alpha) * 100:g}% Welch "
              "interval of mean(variant) − mean(reference); it excludes 0 exactly when p < "
              f"{alpha:g}. Before the test, a comparison in which neither mean beats the task's baseline by "
              f"{LEARNT_MARGIN:.0%} is inconclusive.")
    if claims.get("published"):
        published_section(doc, claims["published"], runs)
    if claims.get("notes"):
        doc.p("Notes (the claims file's: context from the literature, and what the runs above show):")
        doc.ul(claims["notes"])


def variant_row(lab: str, rs: list[dict], ref_sel: Optional[dict], pv: dict, holm: dict) -> list:
    s = stats.summarize(values(rs))
    params = sorted({r.get("params") for r in rs} - {None})
    timed = [r for r in rs if value(r) is not None and r.get("wall_time_s")]
    wall = [r["wall_time_s"] for r in timed]
    fin = sum(1 for r in rs if r.get("status") in FINISHED)
    row = [lab, DASH if s.n == 0 else (num(s.mean) if s.std is None else f"{num(s.mean)} ± {num(s.std)}"),
           s.n, f"{fin} / {len(rs)}", params[0] if params else DASH, flatten(rs[0]["config"]).get("trainer.max_steps"),
           solved_stops(rs), seconds(stats.mean(wall)) + load_mark(timed) if wall else DASH]
    if ref_sel:
        isref = all(matches(r, ref_sel) for r in rs)
        row += ["ref", DASH] if isref else [pval(pv.get(lab)), pval(holm.get(lab))]
    return row + [seeds_by_status([r for r in rs if value(r) is None])]


def seconds(x: float) -> str:
    """A time in seconds: whole seconds from 100 s on (never 1.34e+03), else 3 significant digits."""
    return f"{x:.0f}" if x >= 100 else num(x, 3)


def solved_stops(rs: list[dict]) -> str:
    """How many finished runs stopped when solved (trainer.stop_when_solved), at which steps."""
    if not any(flatten(r["config"]).get("trainer.stop_when_solved") for r in rs):
        return "off"
    fin = [r for r in rs if r.get("status") in FINISHED]
    steps = sorted(r["stopped"]["step"] for r in fin if (r.get("stopped") or {}).get("reason") == "solved")
    return f"{len(steps)} of {len(fin)}" + (f" (at {', '.join(map(str, steps))})" if steps else "") if fin else DASH


def results_section(doc: Doc, claims: dict, runs: list[dict]) -> None:
    doc.h(2, "Results")
    if any(r.get("status") == "diverged" for r in runs):
        doc.p(f"A run counts as diverged when its loss turned NaN/inf or, finite, exceeds "
              f"`trainer.divergence_factor` (default {EXPLODED:g}) × the task's baseline: at a validation the "
              "runner stops it there (`bench/divergence.py`); a run recorded done before that check is "
              "classified by its final metric (`reports.collect.exploded`). Diverged runs are counted in 'not "
              "in statistics' and as not beating the baseline, never averaged into a mean.")
    ref_sel = claims.get("reference")
    doc.p("Columns: n = runs in the statistics (done, with a finite metric); finished = finished runs of the "
          "variant / its runs in the sweep; params = trainable parameters; stopped when solved = finished runs that "
          "`trainer.stop_when_solved` ended early (off: not set); train time/run = mean Lightning training time"
          + ("; Welch p vs ref = two-sided Welch test of the row against the row marked ref (the claims file's "
             "`reference`, not always the pair a claim compares); Holm p = those p-values Holm-adjusted over the "
             "table's rows." if ref_sel else "."))
    for task, variants in sorted(groups(runs).items()):
        allr = [r for v in variants.values() for r in v]
        ref_vals = values([r for r in allr if matches(r, ref_sel)]) if ref_sel else []
        pv = {lab: stats.welch(values(rs), ref_vals) for lab, rs in variants.items()} if ref_sel else {}
        holm = stats.holm({k: v for k, v in pv.items() if ref_vals and not all(matches(r, ref_sel) for r in variants[k])})
        doc.h(3, task)
        doc.p(f"Primary: `{primary_of(allr[0])}` ({'lower' if lower_is_better(allr) else 'higher'} is better); "
              f"baseline {num(baseline(allr))}.")
        headers = ["variant", "mean ± std", "n", "finished", "params", "max steps", "stopped when solved",
                   "train time/run (s)"]
        headers += ["Welch p vs ref", "Holm p"] if ref_sel else []
        rows = [variant_row(lab, rs, ref_sel, pv, holm) for lab, rs in variants.items()]
        doc.table(headers + ["not in statistics"], rows, align="l" + "r" * (len(headers) - 1) + "l")
        loaded_note(doc, [row[7] for row in rows])


def reduction_section(doc: Doc, claims: dict, reduced: bool) -> None:
    names = sweep_names(claims)
    full, red = (sweep_files(n) or (SWEEPS / claims.get(k, claims["full"]),) for n, k in zip(names, ("full", "reduced")))
    sweeps = [("full", full)] + ([("reduced", red)] if names[1] != names[0] else [])
    summaries = [sweep_summary(ps) for _, ps in sweeps]
    show = lambda v: ", ".join(map(str, v)) if isinstance(v, list) else v  # noqa: E731
    files = lambda ps: ", ".join(f"`{p.name}`" for p in ps)  # noqa: E731
    doc.h(2, "Reduction")
    doc.table([""] + [f"{kind} ({files(ps)})" for kind, ps in sweeps],
              [[k] + [show(s[k]) for s in summaries] for k in ("runs", "tasks", "T", "steps", "seeds", "hidden")],
              align="l" * (1 + len(sweeps)))
    doc.p(f"These results come from the {'REDUCED' if reduced else 'full'} sweep"
          + ("" if len(sweeps) > 1 else " (there is no reduced version)") + ". The comments at the top of "
          "each sweep file name everything else that differs from the paper.")


def cost_section(doc: Doc, claims: dict, runs: list[dict], store, sweep: str, prog: dict) -> None:
    times = sweep_times(store)
    fin = [r for r in runs if r.get("status") in FINISHED]
    items = [f"runs of `{sweep}`: {len(fin)} of {len(runs)} finished ("
             + ", ".join(f"{n} {s}" for s, n in sorted(_statuses(runs).items())) + ")"]
    if sweep in times:
        items.append(f"sweep wall time: {times[sweep]} s ({times[sweep] / 3600:.2f} h) on 2 CPU cores "
                     "(recorded by the runner in `sweep_times.txt`)")
    items.append(f"summed training time of the finished runs (Lightning timer, excludes start-up, validation and "
                 f"test; a packed group's time shared among its members): {sum(machine_s(r) for r in fin):.0f} s")
    stops = [r for r in fin if (r.get("stopped") or {}).get("reason") == "solved"]
    if stops:
        trained = sum(int(r["stopped"]["step"]) for r in stops)
        allowed = sum(int(flatten(r["config"]).get("trainer.max_steps") or 0) for r in stops)
        items.append(f"runs stopped when solved (`trainer.stop_when_solved`, `result.json` `stopped`): {len(stops)} "
                     f"of {len(fin)}, trained {trained} of the {allowed} steps they were allowed")
    commits = sorted({r.get("git_commit") for r in fin} - {None})
    if commits:
        dirty = len(commits) > 1 or any(c.endswith("+dirty") for c in commits)
        items.append(f"code: git {', '.join(f'`{c}`' for c in commits)}"
                     + (" (runs made while the checkout changed; `+dirty` = uncommitted changes)" if dirty else ""))
    e = estimate(claims)
    if prog["finished"] < prog["total"]:
        items.append(f"estimated cost of the whole full sweep (reports/published/full_sweeps.yaml): "
                     f"{hours_text(e, '--pack 1')}")
    doc.h(2, "Cost on this machine")
    doc.ul(items)
    doc.p(f"Resume the full sweep (a fresh checkout trains only the runs not committed here): "
          f"`python -m reports.papers --store results_published --import`, then `{start_command(claims)}`, then "
          f"`python -m reports.papers --store results_published --export --only {claims['name']}`.")


def hours_text(e: Optional[dict], how: str) -> str:
    """'≈ 5.2 h with <how>' from a full_sweeps.yaml entry; 'not estimated' where it has no figure."""
    hours = str((e or {}).get("hours_alone", "not estimated"))
    if not any(ch.isdigit() for ch in hours):
        return "not estimated"
    head, paren, rest = hours.partition(" (")   # '≈ 2.4 (how measured)' -> '≈ 2.4 h with <how> (how measured)'
    return f"{head} h with {how}" + (f" ({rest}" if paren else "")


def _statuses(runs: list[dict]) -> dict:
    out: dict = {}
    for r in runs:
        out[str(r.get("status"))] = out.get(str(r.get("status")), 0) + 1
    return out


def source_text(claims: dict, store_label: str, sweep: str, reduced: bool, prog: dict, runs: list[dict]) -> list[str]:
    """The report's first paragraphs: where its runs come from and how far the full sweep is."""
    full = sweep_names(claims)[0]
    files = ", ".join(f"`bench/sweeps/{p.name}`" for p in sweep_files(full))
    fin = [r for r in runs if r.get("status") in FINISHED]
    last = max((str(r.get("finished_at")) for r in fin if r.get("finished_at")), default=None)
    out = [f"Generated by `python -m reports.papers` from {store_label}: full sweep `{full}` ({files}), "
           f"**{prog['finished']} of {prog['total']} runs finished** "
           f"({', '.join(f'{n} {s}' for s, n in prog['statuses'].items())})"
           + (f"; the latest finished at {last}." if last and not reduced else ".")]
    if reduced:
        out.append(f"**REDUCED**: the runs below are from the reduced sweep `{sweep}`, not the full sweep; every "
                   "claim stays pending until the full sweep's runs it needs are finished.")
    if prog["finished"] == 0:
        e = estimate(claims)
        out.append("**The full sweep has not run yet.** Estimated cost on this machine: "
                   + hours_text(e, "`--pack 1` (reports/published/full_sweeps.yaml)")
                   + f". Start (or resume): `{start_command(claims)}`.")
    if prog["outside"]:
        out.append(f"{len(prog['outside'])} more run(s) in the store's index of `{full}` are not in the sweep files "
                   "as they are now (an earlier version of a file); they are not reported.")
    return out


# ---------------------------------------------------------------- reports


def load_runs(store, sweep: str) -> list[dict]:
    if sweep not in Store(store).sweeps():
        return []
    try:
        return [run_dict(r) for r in store_runs(store, [sweep])]
    except FileNotFoundError:
        return []


def pick_sweep(claims: dict, store, full: bool) -> tuple[str, bool]:
    """(sweep to report, reduced?): the full sweep unless only the reduced one has runs."""
    full_name, red_name = sweep_names(claims)
    known = Store(store).sweeps()
    if full or full_name in known or red_name not in known or red_name == full_name:
        return full_name, False
    return red_name, True


def build(claims: dict, store=None, out_root=ROOT / "reports" / "published", full: bool = False,
          weights=None) -> Path:
    """Write <out_root>/<name>/report.md (+ PNGs, claims.json) from `store` (default: the raw results in
    <out_root>/<name>/); `weights`: a store with checkpoints (gradient flow). Returns the report's path."""
    check_evidence(claims)   # before anything is written
    name = claims["name"]
    out = Path(out_root) / name
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("*.png"):
        if not old.name.startswith("earlier_"):
            old.unlink()
    label = "the raw results in this directory (`runs/`, `sweeps/`)" if store is None else \
        f"result store `{Path(store).name}` (not in the repository)"
    store = out if store is None else Path(store)
    sweep, reduced = pick_sweep(claims, store, full)
    found = load_runs(store, sweep)
    runs = with_pending(found, sweep)
    full_runs = found if not reduced else load_runs(store, sweep_names(claims)[0])
    prog = progress(full_runs, sweep_names(claims)[0])
    runs = [r for r in runs if r["hash"] not in prog["outside"]]   # runs of files as they were: not reported
    done = any(r.get("status") in FINISHED for r in runs)
    curves, gf_pngs = [], []
    if done and any(c["kind"] == "gradflow_ratio" for c in claims["claims"]):
        curves, gf_pngs = measure_gradflow(runs, store, out, weights)
    margin, alpha = float(claims.get("margin", 0.0)), float(claims.get("alpha", 0.05))
    results = [(c, pending(c, check_claim(c, runs, margin=margin, alpha=alpha, reduced=reduced, gradflow=curves),
                           full_runs, prog["name"])) for c in claims["claims"]]
    doc = Doc()
    doc.h(1, claims["title"])
    doc.p(f"Paper: {claims['paper']}.")
    doc.p(f"Paper's finding: **{claims['finding']}**")
    for text in source_text(claims, label, sweep, reduced, prog, runs):
        doc.p(text)
    verdict_section(doc, claims, results, runs, reduced, margin)
    looks_section(doc, claims, results, runs)
    settle_section(doc, claims, results, runs)
    if done:
        results_section(doc, claims, runs)
        figures_section(doc, claims, runs, out, sweep, gf_pngs)
        if (out / RECALL).is_file():   # measured from checkpoints by reports/recall.py, committed
            recall.render(doc, json.loads((out / RECALL).read_text()),
                          {r["hash"] for r in runs if r.get("status") == "done"}, claims.get("recall", []))
    evidence_section(doc, claims, store)
    reduction_section(doc, claims, reduced)
    cost_section(doc, claims, runs, store, sweep, prog)
    if (out / EARLIER).is_file():
        doc.h(2, "Earlier results, not regenerated")
        doc.p(f"[{EARLIER}]({EARLIER}) is the report an earlier session generated before the raw results were kept "
              "in the repository (its first lines say from which sweep and store). Its raw results are lost, so it "
              "cannot be regenerated, and none of its figures enters a verdict above.")
    path = out / "report.md"
    write_atomic(path, doc.markdown())
    write_claims_json(out, sweep, reduced, prog, sweep_times(store).get(sweep), results)
    return path


def write_claims_json(out: Path, sweep: str, reduced: bool, prog: dict, wall: Optional[int], results: list) -> None:
    write_atomic(out / "claims.json", json.dumps(
        {"sweep": sweep, "reduced": reduced, "full_sweep": prog["name"], "finished": prog["finished"],
         "total": prog["total"], "seeds": prog["seeds"], "train_s": round(prog["train_s"], 1),
         "solved_stops": prog["solved_stops"], "sweep_wall_s": wall,
         "claims": [{"id": c["id"], **{k: r[k] for k in ("verdict", "why", "paper", "ours")}} for c, r in results]},
        indent=1) + "\n")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m reports.papers", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--store", default=None, help="a working result store (default: none, the raw results "
                    "committed in OUT/<name>/)")
    ap.add_argument("--export", action="store_true", help="copy the finished runs of --store into OUT/<name>/ "
                    "(no checkpoints, W&B files or locks), then build the reports from those copies")
    ap.add_argument("--import", dest="import_", action="store_true", help="copy the raw results committed in "
                    "OUT/<name>/ into --store (to resume the full sweeps there), and build nothing")
    ap.add_argument("--out", default=str(ROOT / "reports" / "published"), help="output root (default: reports/published)")
    ap.add_argument("--only", nargs="+", default=[], metavar="NAME", help="comparisons to build (copy adding greff ...)")
    ap.add_argument("--full", action="store_true", help="report the full sweeps, never the reduced ones")
    ap.add_argument("--readme", default=None, help="README whose published table is rewritten (between its "
                    "markers; default: the repository's when OUT is reports/published, else none; '' for none)")
    a = ap.parse_args(argv)
    if a.readme is None:   # the repository's table links reports/published/: fill it from there only
        a.readme = str(ROOT / "README.md") if Path(a.out).resolve() == (ROOT / "reports" / "published").resolve() else ""
    if (a.export or a.import_) and not a.store:
        ap.error("--export and --import need --store")
    cl = [c for c in all_claims() if not a.only or c["name"] in a.only]
    if a.import_:
        try:
            seeded = seed(cl, a.out, a.store)
        except Damaged as e:   # nothing of that comparison written; one line, exit 2
            print(f"python -m reports.papers: error: {e}", file=sys.stderr)
            return 2
        for name, counts in seeded.items():
            print(f"{name}: {counts['imported']} run(s) imported into {a.store}, {counts['kept']} already there"
                  + (f", {len(counts['skipped'])} left alone (unfinished there)" if counts["skipped"] else ""))
        return 0
    if a.export:
        try:
            exported = export(cl, a.store, a.out)
        except Damaged as e:   # checked before any copy: nothing written; one line, exit 2
            print(f"python -m reports.papers: error: {e}", file=sys.stderr)
            return 2
        for name, got in exported.items():
            print(f"{name}: exported " + (", ".join(f"{n} finished run(s) of {s}" for s, n in got.items()) or "nothing"))
    for c in cl:
        store = None if a.export else a.store
        print(f"{c['name']}: {build(c, store, a.out, a.full, weights=a.store)}")
    print(f"README: {write_readme(all_claims(), a.out)}")
    if a.readme and update_root_readme(a.readme, all_claims(), a.out):
        print(f"table: {a.readme}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except ConfigError as e:   # a claims file that does not fit its runs: one line, exit 2
        print(f"python -m reports.papers: error: {e}", file=sys.stderr)
        sys.exit(2)
