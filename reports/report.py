"""`rnnbench report`: a Markdown + HTML report of one or more sweeps from the result store.

    build_report(store, ["sweep"], "out/") -> out/report.md   (+ report.html, figures/*.png)

Per task (task name + task config): a table of every variant with mean ± sample std and a
95 % Student-t confidence interval over its finished seeds, seed count, parameters, wall time,
the task baseline and whether the variant beats it, optionally Welch's t-test against a
reference variant; the runs left out of the statistics (diverged, failed, unfinished) with
their step and error; learning curves and a bar chart; for long-dependency tasks (config has
`T`) solved / not solved against T; and an appendix with every run.
"""
from __future__ import annotations

import json
import math
import re
import time
from collections import Counter
from pathlib import Path
from typing import Optional, Union

from bench.provenance import under_load
from bench.schema import fmt_value
from bench.store import Store, write_atomic
from reports import plots, stats, wandb_io
from reports.collect import (TaskGroup, Variant, as_store, find_reference, flatten, group, implementation_label,
                             parse_reference, store_runs)
from reports.doc import Doc

DASH = "—"
LOADED = " ‡"   # a time cell whose runs include one trained on a loaded machine
LOADED_NOTE = ("‡ the time was measured under load: a run of the row trained on a loaded machine (its 1-minute "
               "load average at the start or end of training above its CPU count, `environment.load`; deliberately "
               "strict: with as many workers as CPUs any other process tips it; a resumed run records its last attempt).")


def load_mark(results: list) -> str:
    """LOADED if any of the run records (result dicts) trained under load, else ''."""
    return LOADED if any(under_load(r) for r in results) else ""


def loaded_note(doc: Doc, cells) -> None:
    """The LOADED footnote, under a table whose time cells (`cells`) carry the mark."""
    if any(str(c).endswith(LOADED) for c in cells):
        doc.p(LOADED_NOTE)


def num(x: Optional[float], digits: int = 4) -> str:
    """Numbers in tables: `digits` significant digits; None -> em dash; nan/inf spelled out."""
    if x is None:
        return DASH
    if isinstance(x, float) and not math.isfinite(x):
        return str(x)
    return f"{x:.{digits}g}"


def pval(p: Optional[float]) -> str:
    if p is None:
        return "n/a"
    return "<1e-4" if p < 1e-4 else f"{p:.3g}"


def seeds_by_status(runs: list[dict]) -> str:
    """`failed: seeds 1, 2; pending: seed 3` for runs left out of a table's statistics; "none" without any."""
    by: dict = {}
    for r in runs:
        by.setdefault(str(r.get("status")), []).append(str(r["config"].get("seed")))
    return "; ".join(f"{st}: seed{'s' if len(x) > 1 else ''} {', '.join(x)}" for st, x in by.items()) or "none"


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.=-]+", "_", text).strip("_")[:60]


def mean_pm_std(s: stats.Summary) -> str:
    if s.n == 0:
        return DASH
    return num(s.mean) if s.std is None else f"{num(s.mean)} ± {num(s.std)}"


def ci_text(s: stats.Summary) -> str:
    if s.n == 0:
        return DASH
    if s.ci_low is None:
        return "n/a (1 seed)"
    return f"[{num(s.ci_low)}, {num(s.ci_high)}]"


def beats_text(g: TaskGroup, v: Variant) -> str:
    base = g.baseline_value()
    runs = v.usable()
    if base is None or not runs:
        return DASH
    per_seed = [r.result.get("beats_baseline") if r.result.get("beats_baseline") is not None
                else g.better(r.metric(g.primary), base) for r in runs]
    verdict = "yes" if g.better(v.summary().mean, base) else "no"
    return f"{verdict} ({sum(bool(b) for b in per_seed)}/{len(runs)} seeds)"


def time_cells(g: TaskGroup) -> tuple[dict[str, str], Optional[str]]:
    """Wall-time cells per variant key, 'mean (implementation)', and the table's most common
    implementation when they differ (the cells of the others end in †), else None."""
    impls = {v.key: v.implementations() for v in g.variants if v.usable()}
    common = Counter(tuple(i) for i in impls.values()).most_common(1)
    common = common[0][0] if common else ()
    differ = len({tuple(i) for i in impls.values()}) > 1
    cells = {}
    for v in g.variants:
        mean = stats.mean(v.wall_times())
        loaded = load_mark([r.result for r in v.timed()])
        if mean is None or v.key not in impls:
            cells[v.key] = num(mean, 3) + loaded
            continue
        mark = " †" if differ and tuple(impls[v.key]) != common else ""
        cells[v.key] = f"{num(mean, 3)} ({'; '.join(impls[v.key])}){mark}{loaded}"
    return cells, ("; ".join(common) if differ else None)


def excluded_text(v: Variant) -> str:
    parts = []
    for r in v.excluded():
        what = r.status if r.status != "done" else f"no finite {v.primary}"
        step = f" at step {r.step}" if r.step is not None else ""
        parts.append(f"seed {r.seed}: {what}{step}")
    return "; ".join(parts) or "none"


def long_families(groups: list[TaskGroup]) -> dict[str, list[TaskGroup]]:
    """Long-dependency tasks joined over T: family = task name + task config minus T."""
    fams: dict[str, list[TaskGroup]] = {}
    for g in groups:
        if "T" not in g.config:
            continue
        rest = {k: v for k, v in g.config.items() if k != "T"}
        key = json.dumps(rest, sort_keys=True, default=str)
        fams.setdefault(key, []).append(g)
    return {key: sorted(gs, key=lambda g: g.config["T"]) for key, gs in fams.items()}


def solved_points(gs: list[TaskGroup]) -> tuple[dict, dict]:
    """label -> {T: (solved, finished)} and label -> {T: Counter of the other statuses}. Diverged runs count as
    finished and not solved; failed / unfinished runs are counted apart (unknown outcome)."""
    points: dict[str, dict] = {}
    missing: dict[str, dict] = {}
    for g in gs:
        T = g.config["T"]
        for v in g.variants:
            fin = [r for r in v.runs if r.status in ("done", "diverged")]
            if not any((r.result or {}).get("solved") is not None for r in fin) and not \
                    any(r.status == "diverged" for r in fin):
                continue
            solved = sum(1 for r in fin if r.status == "done" and (r.result or {}).get("solved"))
            points.setdefault(v.label, {})[T] = (solved, len(fin))
            missing.setdefault(v.label, {})[T] = Counter(r.status for r in v.runs if r not in fin)
    return {k: p for k, p in points.items() if p}, missing


# ---------------------------------------------------------------- building


def collect(store, sweeps: list[str], from_wandb: Optional[str] = None):
    """Runs from the store (and W&B when asked), grouped into tasks."""
    store = as_store(store)
    runs = []
    if from_wandb:
        local = [s for s in sweeps if s in store.sweeps()] if sweeps else []
        if local or not sweeps:
            try:
                runs = store_runs(store, local)
            except FileNotFoundError:
                runs = []
        runs += wandb_io.fetch_runs(from_wandb, sweeps, {r.hash for r in runs})
        if not runs:
            raise FileNotFoundError(f"no runs for {', '.join(sweeps) or 'any sweep'} in store {store.root} "
                                    f"or W&B project {from_wandb}")
    else:
        runs = store_runs(store, sweeps)
    return group(runs)


def task_section(g: TaskGroup, doc: Doc, figdir: Path, root: Path, ref: Optional[dict]) -> None:
    arrow = "lower is better" if g.mode == "min" else "higher is better"
    doc.h(2, f"Task: {g.title}")
    cfg = " ".join(f"{k}={fmt_value(v, 6)}" for k, v in flatten(g.config).items())
    base = g.baseline_value()
    doc.p(f"Task config: `{cfg}`. Primary metric: `{g.primary}` ({arrow}). "
          f"Baseline (trivial predictor): {num(base) if base is not None else 'none defined for this task'}.")
    metrics = g.metrics()
    reference = find_reference(g, ref) if ref else None
    pvals: dict[str, Optional[float]] = {}
    if reference is not None:
        rv = reference.values()
        for v in g.variants:
            if v is not reference:
                pvals[v.key] = stats.welch(v.values(), rv)
    holm = stats.holm(pvals)
    headers = ["variant", f"{g.primary} mean ± std", "95% CI", "n", "seeds", "params", "wall time (s)",
               "baseline", "beats baseline"]
    if ref:
        headers += ["p (Welch vs ref)", "p (Holm)"]
    headers += [f"{m} mean ± std" for m in metrics[1:]] + ["not in statistics"]
    rows = []
    times, odd = time_cells(g)
    for v in g.variants:
        s = v.summary()
        row = [v.label + (" (ref)" if v is reference else ""), mean_pm_std(s), ci_text(s), s.n,
               ", ".join(str(r.seed) for r in v.usable()) or DASH,
               v.params if v.params is not None else DASH, times[v.key],
               num(base) if base is not None else DASH, beats_text(g, v)]
        if ref:
            if reference is None:
                row += ["no ref in task", DASH]
            elif v is reference:
                row += ["ref", DASH]
            else:
                row += [pval(pvals.get(v.key)), pval(holm.get(v.key))]
        row += [mean_pm_std(v.summary(m)) for m in metrics[1:]]
        row.append(excluded_text(v))
        rows.append(row)
    doc.table(headers, rows, "l" + "r" * (len(headers) - 2) + "l")
    loaded_note(doc, times.values())
    if odd:
        doc.p("**Warning:** the wall times marked † were measured with another implementation (recurrence "
              "path, device, threads or packing) than the table's most common one, "
              f"`{odd}`: they compare implementations as well as architectures.")
    mixed = [v.label for v in g.variants if len(v.commits()) > 1]
    if mixed:
        doc.p("**Warning:** the seeds of " + ", ".join(f"`{m}`" for m in mixed) + " were run from different "
              "git commits (see the appendix): their spread mixes code changes with seed variation.")
    if ref and reference is None:
        doc.p(f"No variant of this task matches the reference "
              f"`{' '.join(f'{k}={fmt_value(x, 6)}' for k, x in ref.items())}`: no p-values.")
    bad = [(v, r) for v in g.variants for r in v.excluded()]
    if bad:
        doc.h(3, "Runs not in the statistics")
        doc.p("Diverged, failed and unfinished runs are listed here and left out of every mean, "
              "std, CI and test above (the variant's `n` counts only the runs used).")
        doc.table(["variant", "seed", "run", "status", "step", "error"],
                  [[v.label, r.seed, f"`{r.hash}`", r.status, r.step if r.step is not None else DASH,
                    (r.error or DASH)[:200]] for v, r in bad], "lrllrl")
    figs = []
    p = plots.learning_curves(g, figdir / f"{slug(g.title)}-{g.key[:6]}-curves.png")
    if p:
        figs.append((p, f"{g.title}: val/loss vs step, mean over finished seeds, band = ±1 sample std; "
                        "dashed = runs not in the statistics"))
    p = plots.bar_chart(g, figdir / f"{slug(g.title)}-{g.key[:6]}-bar.png")
    if p:
        figs.append((p, f"{g.title}: {g.primary}, bars = mean, error bars = 95% t CI, dots = seeds, "
                        "dashed line = baseline"))
    for path, caption in figs:
        doc.img(str(path.relative_to(root)), caption)


def head_doc(store: Store, sweeps: list[str], from_wandb: Optional[str], runs: list, ref: Optional[dict]) -> tuple[str, Doc]:
    """(title, the report's opening: title, provenance, how to read the statistics)."""
    title = f"rnnbench report: {', '.join(sweeps)}" if sweeps else f"rnnbench report: all runs in {store.root}"
    head = Doc()
    head.h(1, title)
    counts = Counter(r.status for r in runs)
    head.p(f"Generated {time.strftime('%Y-%m-%d %H:%M:%S %z')} from result store `{store.root}`"
           + (f" and W&B `{from_wandb}`" if from_wandb else "") + f". {len(runs)} runs: "
           + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) + ".")
    commits = sorted({(r.result or {}).get("git_commit") for r in runs} - {None})
    if commits:
        dirty = [c for c in commits if c.endswith("+dirty")]
        head.p("Code: git " + ", ".join(f"`{c}`" for c in commits) + "."
               + (" Runs marked `+dirty` were made from a checkout with uncommitted changes: "
                  "their commit alone does not reproduce them." if dirty else "")
               + (" Several commits: the runs were not all made with the same code." if len(commits) > 1 else ""))
    notes = ["Statistics are over seeds of one variant (same resolved config except `seed`), using only "
             "runs with status `done` and a finite metric; `n` is that count.",
             "mean ± std: sample standard deviation (n − 1). 95% CI: mean ± t(0.975, n − 1) · std / √n "
             "(Student t); no interval from a single seed.",
             "Diverged, failed and unfinished runs are never averaged in: they are listed per task with "
             "their step and error, and drawn dashed in the learning curves.",
             "beats baseline: whether the mean beats the task's trivial-predictor baseline on the primary "
             "metric, with the number of seeds that do."]
    if ref:
        notes.append("p (Welch vs ref): two-sided Welch t-test (unequal variances, scipy) of the variant's "
                     "seeds against the reference variant's "
                     f"(`{' '.join(f'{k}={fmt_value(v, 6)}' for k, v in ref.items())}`); n/a when either side has "
                     "fewer than 2 seeds. p (Holm): Holm–Bonferroni adjusted over the variants of the task.")
    head.ul(notes)
    return title, head


def solved_doc(groups: list[TaskGroup], figdir: Path, out: Path) -> Doc:
    """Long-dependency families: seeds solved / finished per variant and T, table and figure."""
    solved = Doc()
    fams = long_families(groups)
    for key, gs in fams.items():
        points, missing = solved_points(gs)
        if not points:
            continue
        rest = {k: v for k, v in gs[0].config.items() if k not in ("T", "name")}
        siblings = [o[0].config for o in fams.values() if o[0].name == gs[0].name]
        differ = [k for k in rest if len({json.dumps(c.get(k), default=str) for c in siblings}) > 1]
        fam = " ".join([gs[0].name] + [f"{k}={fmt_value(rest[k], 6)}" for k in differ])
        if not solved.blocks:
            solved.h(2, "Long-dependency tasks: solved vs T")
            solved.p("Cells: seeds that solved the task / seeds that finished (diverged runs count as "
                     "finished and not solved); failed or unfinished runs are counted apart.")
        solved.h(3, fam)
        Ts = sorted({T for p in points.values() for T in p})
        rows = []
        for label in sorted(points):
            row = [label]
            for T in Ts:
                if T in points[label]:
                    s, n = points[label][T]
                    extra = missing.get(label, {}).get(T) or {}
                    row.append(f"{s}/{n}" + (" (" + ", ".join(f"+{c} {st}" for st, c in sorted(extra.items()))
                                              + ")" if extra else ""))
                else:
                    row.append(DASH)
            rows.append(row)
        solved.table(["variant"] + [f"T={T}" for T in Ts], rows)
        p = plots.solved_vs_T(fam, points, figdir / f"solved-{slug(fam)}-{gs[0].key[:6]}.png")
        if p:
            solved.img(str(p.relative_to(out)), f"{fam}: fraction of finished seeds that solved the task vs T")
    return solved


def appendix_doc(groups: list[TaskGroup]) -> Doc:
    appendix = Doc()
    appendix.h(2, "Appendix: every run")
    arows = []
    for g in groups:
        for v in g.variants:
            for r in v.runs:
                res = r.result or {}
                arows.append([g.title, v.label, r.seed, f"`{r.hash}`", r.status,
                              r.step if r.step is not None else DASH, num(r.metric(g.primary)),
                              num(res.get("wall_time_s"), 3) + load_mark([res]), implementation_label(res.get("implementation")),
                              res.get("device") or (res.get("implementation") or {}).get("device") or DASH,
                              res.get("git_commit") or DASH, (r.error or "")[:120] or DASH])
    appendix.table(["task", "variant", "seed", "run", "status", "step", "primary", "wall time (s)",
                    "implementation", "device", "commit", "error"], arows, "llrllrrrllll")
    loaded_note(appendix, [row[7] for row in arows])
    return appendix


def build_report(store: Union[Store, str, Path], sweeps: list[str], out_dir, *, reference: list[str] = (),
                 from_wandb: Optional[str] = None, publish: Optional[str] = None) -> Path:
    """Write report.md, report.html (self-contained) and figures/*.png into out_dir; returns the
    Markdown path. `reference`: KEY=VALUE items naming the reference variant for Welch tests.
    `publish`: None = local only; a string (ENTITY/PROJECT or "") = also save a W&B Report."""
    store = as_store(store)
    sweeps = list(sweeps or [])
    ref = parse_reference(list(reference))
    if publish is not None:
        wandb_io.check_publish()
    groups = collect(store, sweeps, from_wandb)
    out = Path(out_dir)
    figdir = out / "figures"
    figdir.mkdir(parents=True, exist_ok=True)
    for old in figdir.glob("*.png"):  # a rebuilt report never shows stale figures
        old.unlink()

    title, head = head_doc(store, sweeps, from_wandb, [r for g in groups for r in g.runs], ref)
    sections = []
    for g in groups:
        d = Doc()
        task_section(g, d, figdir, out, ref)
        sections.append((g, d))
    doc = Doc()
    for part in [head] + [d for _, d in sections] + [solved_doc(groups, figdir, out), appendix_doc(groups)]:
        doc.blocks += part.blocks
    md = out / "report.md"
    write_atomic(md, doc.markdown())
    write_atomic(out / "report.html", doc.html(out, title))

    if publish is not None:

        secs = [(f"Task: {g.title}", d.markdown(), [r.result["wandb_id"] for r in g.runs
                                                     if r.result and r.result.get("wandb_id")],
                 g.primary) for g, d in sections]
        secs.insert(0, ("Summary", head.markdown(), [], ""))
        url = wandb_io.publish(publish or from_wandb, title, secs)
        write_atomic(out / "wandb_report_url.txt", url + "\n")
    return md
