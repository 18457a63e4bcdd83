"""Published comparisons: the paper's findings beside the suite's, one Markdown report per paper.

    python -m reports.papers --store results_papers --out reports/published

For every `bench/sweeps/paper_<name>.claims.yaml` (the paper's findings, machine-readable) this
reads the runs of its sweep from the result store (the full sweep `paper_<name>` when the store
has it, else the reduced `paper_<name>_cpu`), checks each claim and writes
`<out>/<name>/report.md` (+ PNGs): the paper's finding beside ours with a plain verdict per claim
(agrees / does not agree / inconclusive, with why), the reduction applied and the measured cost.
It also writes `<out>/README.md`, the list of sweep files with their commands and costs.

Claim kinds (see the claims files):
* `beats_baseline`: `select` picks a variant, `expect` maps T -> whether its mean primary metric
  beats the task baseline (by `margin`, relative). A paper success that a shortened run misses is
  inconclusive (training was cut), not a disagreement.
* `better_than_ref` / `worse_than_ref` / `not_worse_than_ref`: Welch t-test of `select`'s seeds
  against `ref`'s on the task `task`, at `alpha`.
* `gradflow_ratio`: ||dl_T/dh_t|| at the largest lag, at init: `select` over `ref` >= `min_ratio`.

The checker (`check_claim`) works on plain run dicts -- result.json plus `config` (nested, or
flat dotted keys) -- so it can be tested on hand-made results.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Optional

import yaml

from reports import stats
from reports.published_table import published_table

ROOT = Path(__file__).resolve().parents[1]
SWEEPS = ROOT / "bench" / "sweeps"
AGREES, DISAGREES, INCONCLUSIVE = "agrees", "does not agree", "inconclusive"
DASH = "—"
LEARNT_MARGIN = 0.05   # a variant has learnt a task when its mean beats the baseline by this (relative)


# ---------------------------------------------------------------- run dicts


def flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in (d or {}).items():
        if isinstance(v, dict):
            out.update(flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _same(a, b) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool) \
            and not isinstance(b, bool):
        return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-12)
    return a == b or str(a) == str(b)


def matches(run: dict, selector: Optional[dict]) -> bool:
    cfg = flat(run.get("config") or {})
    return all(k in cfg and _same(cfg[k], v) for k, v in (selector or {}).items())


def primary_of(run: dict) -> str:
    return run.get("primary") or "test/loss"


def value(run: dict) -> Optional[float]:
    """The run's primary metric, only for finished runs with a finite value."""
    if run.get("status") != "done":
        return None
    v = (run.get("metrics") or {}).get(primary_of(run))
    return float(v) if isinstance(v, (int, float)) and math.isfinite(v) else None


def values(runs: list[dict]) -> list[float]:
    return [v for v in map(value, runs) if v is not None]


def lower_is_better(runs: list[dict]) -> bool:
    return next((r.get("mode", "min") for r in runs if r.get("mode")), "min") == "min"


def fmt(x, digits: int = 4) -> str:
    if x is None:
        return DASH
    return f"{x:.{digits}g}" if isinstance(x, float) else str(x)


def pfmt(p: Optional[float]) -> str:
    return "n/a" if p is None else ("<1e-4" if p < 1e-4 else f"{p:.3g}")


# ---------------------------------------------------------------- claims


def check_claim(claim: dict, runs: list[dict], *, margin: float = 0.0, alpha: float = 0.05,
                reduced: bool = False, gradflow: Optional[list] = None) -> dict:
    """-> {"verdict", "why", "ours", "paper", "rows"}: one claim against plain run dicts.
    `reduced`: the runs are shortened (a paper success they miss is inconclusive)."""
    kind = claim["kind"]
    runs = [r for r in runs if matches(r, claim.get("task"))]
    if kind == "beats_baseline":
        return _beats(claim, runs, margin, reduced)
    if kind in ("better_than_ref", "worse_than_ref", "not_worse_than_ref"):
        return _versus(claim, runs, alpha)
    if kind == "gradflow_ratio":
        return _gradflow_claim(claim, gradflow or [])
    raise ValueError(f"claim {claim.get('id')}: unknown kind {kind!r}")


def _baseline(runs: list[dict]) -> Optional[float]:
    for r in runs:
        b = (r.get("baseline") or {}).get(primary_of(r))
        if isinstance(b, (int, float)):
            return float(b)
    return None


def _beats(claim, runs, margin, reduced) -> dict:
    mine = [r for r in runs if matches(r, claim["select"])]
    rows, verdicts = [], []
    for T, expected in sorted(((int(t), bool(e)) for t, e in claim["expect"].items())):
        at = [r for r in mine if _same(flat(r.get("config") or {}).get("task.T"), T)]
        xs, base = values(at), _baseline(at)
        paper = "beats" if expected else "does not beat"
        if not xs or base is None:
            why = "not run" if not at else f"no finished run ({', '.join(sorted({str(r.get('status')) for r in at}))})"
            rows.append({"T": T, "paper": paper, "ours": DASH, "verdict": INCONCLUSIVE, "why": why})
            verdicts.append(None)
            continue
        m = stats.mean(xs)
        low = lower_is_better(at)
        beats = m < base * (1 - margin) if low else m > base * (1 + margin)
        ours = f"{'beats' if beats else 'does not beat'} ({fmt(m)} vs {fmt(base)}, n={len(xs)})"
        if beats == expected:
            v, why = AGREES, ""
            if not expected and reduced:
                why = "weak: a shortened run is biased towards not beating"
        elif expected and reduced:
            v, why = INCONCLUSIVE, "training cut short: the paper's success may need more steps"
        else:
            v, why = DISAGREES, ""
        rows.append({"T": T, "paper": paper, "ours": ours, "verdict": v, "why": why})
        verdicts.append(v)
    run_v = [v for v in verdicts if v is not None]
    missing = [str(r["T"]) for r, v in zip(rows, verdicts) if v is None]
    if DISAGREES in run_v:
        verdict = DISAGREES
        why = "at T=" + ", ".join(str(r["T"]) for r in rows if r["verdict"] == DISAGREES)
    elif not run_v:
        verdict, why = INCONCLUSIVE, "no finished runs"
    elif INCONCLUSIVE in run_v:
        verdict = INCONCLUSIVE
        why = "; ".join(f"T={r['T']}: {r['why']}" for r in rows if r["verdict"] == INCONCLUSIVE and r["ours"] != DASH)
    else:
        verdict, why = AGREES, ""
        if reduced and any(r["paper"] == "does not beat" and r["verdict"] == AGREES for r in rows):
            why = "weak: shortened runs are biased towards not beating"
    if missing and verdict != INCONCLUSIVE or (missing and run_v):
        why = (why + "; " if why else "") + f"checked at T={', '.join(str(r['T']) for r, v in zip(rows, verdicts) if v)} only (T={', '.join(missing)} not run)"
    return {"verdict": verdict, "why": why, "rows": rows,
            "paper": claim.get("text", ""), "ours": "; ".join(f"T={r['T']}: {r['ours']}" for r in rows if r["ours"] != DASH)}


def _versus(claim, runs, alpha) -> dict:
    a = values([r for r in runs if matches(r, claim["select"])])
    b = values([r for r in runs if matches(r, claim["ref"])])
    low = lower_is_better(runs)
    base = {"paper": claim.get("text", ""), "rows": []}
    if len(a) < 2 or len(b) < 2:
        return {**base, "verdict": INCONCLUSIVE, "ours": f"n={len(a)} vs n={len(b)}",
                "why": "fewer than 2 finished seeds on a side: no t-test"}
    ma, mb = stats.mean(a), stats.mean(b)
    base_v = _baseline(runs)
    if base_v is not None:  # a comparison between two models that learnt nothing says nothing
        learnt = (lambda m: m < base_v * (1 - LEARNT_MARGIN)) if low else (lambda m: m > base_v * (1 + LEARNT_MARGIN))
        if not learnt(ma) and not learnt(mb):
            return {**base, "verdict": INCONCLUSIVE, "ours": f"{fmt(ma)} vs {fmt(mb)}, baseline {fmt(base_v)}, n={len(a)}/{len(b)}",
                    "why": f"neither variant learnt the task (both means within {LEARNT_MARGIN:.0%} of the trivial baseline, or worse)"}
    p = stats.welch(a, b)
    if p is None:  # both constant
        p = 1.0 if _same(ma, mb) else 0.0
    better = ma < mb if low else ma > mb
    sig = p < alpha
    rel = (ma - mb) / abs(mb) if mb else float("nan")
    ours = f"{fmt(ma)} vs {fmt(mb)} ({rel:+.1%}), Welch p={pfmt(p)}, n={len(a)}/{len(b)}"
    kind = claim["kind"]
    if kind == "not_worse_than_ref":
        if sig and not better:
            return {**base, "verdict": DISAGREES, "ours": ours, "why": f"significantly worse (p < {alpha})"}
        why = f"not significantly worse at p < {alpha}" + (f"; low power with n={min(len(a), len(b))}" if min(len(a), len(b)) < 5 else "")
        if sig and better:
            why = "significantly better"
        return {**base, "verdict": AGREES, "ours": ours, "why": why}
    want_better = kind == "better_than_ref"
    if sig and better == want_better:
        return {**base, "verdict": AGREES, "ours": ours, "why": ""}
    if sig:
        return {**base, "verdict": DISAGREES, "ours": ours,
                "why": f"significantly {'worse' if want_better else 'better'}, the opposite of the paper"}
    return {**base, "verdict": INCONCLUSIVE, "ours": ours,
            "why": f"no significant difference at p < {alpha} (n={len(a)}/{len(b)}; mean {'in' if better == want_better else 'against'} the paper's direction)"}


def _gradflow_claim(claim, curves: list[dict]) -> dict:
    """`curves`: [{"config": {"model": {...}}, "phase": "init", "norm": [...by lag...]}, ...]."""
    base = {"paper": claim.get("text", ""), "rows": []}
    curves = [c for c in curves if matches(c, claim.get("task"))]

    def last(sel):
        vals = [c["norm"][-1] for c in curves if c.get("phase", "init") == "init" and matches(c, sel) and c.get("norm")]
        return stats.mean(vals) if vals else None
    a, b = last(claim["select"]), last(claim["ref"])
    if a is None or b is None:
        return {**base, "verdict": INCONCLUSIVE, "ours": DASH, "why": "gradient flow not measured"}
    ratio = a / b if b > 0 else float("inf")
    ours = f"at the largest lag: {a:.3g} vs {b:.3g} (ratio {ratio:.3g})"
    ok = ratio >= float(claim.get("min_ratio", 1.0))
    return {**base, "verdict": AGREES if ok else DISAGREES, "ours": ours,
            "why": "" if ok else f"ratio below {claim.get('min_ratio')}"}


# ---------------------------------------------------------------- store + report


def load_claims(name_or_path) -> dict:
    p = Path(name_or_path)
    if not p.is_file():
        p = SWEEPS / f"paper_{name_or_path}.claims.yaml"
    return yaml.safe_load(p.read_text())


def all_claims() -> list[dict]:
    return [yaml.safe_load(p.read_text()) for p in sorted(SWEEPS.glob("paper_*.claims.yaml"))]


def store_runs(store, sweep: str) -> list[dict]:
    from bench.store import Store

    store = Store(store)
    out = []
    for h in store.sweep_hashes(sweep):
        if not (store.run_dir(h) / "config.yaml").is_file():
            continue
        r = store.result(h) or {"status": store.status(h), "metrics": {}}
        out.append({**r, "hash": h, "status": store.status(h), "config": store.config(h)})
    return out


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


def _sweep_summary(path: Path) -> dict:
    from bench.sweep import expand

    name, cfgs = expand(path)
    vals = lambda f: sorted({f(c) for c in cfgs}, key=str)
    return {"name": name, "runs": len(cfgs), "steps": vals(lambda c: c.trainer.max_steps),
            "seeds": vals(lambda c: c.seed), "T": [t for t in vals(lambda c: getattr(c.task, "T", None)) if t is not None] or ["n/a"],
            "tasks": vals(lambda c: c.task.name), "hidden": vals(lambda c: c.model.hidden_size)}


def _variant_label(cfg: dict, keys: list[str]) -> str:
    from models.registry import CELLS

    f = flat(cfg)
    spec = CELLS.get(str(f.get("model.cell")))
    fixed = {f"model.{k}" for k in (spec.fixed if spec else {})}
    return " ".join([str(f.get("model.cell"))] + [f"{k.split('.', 1)[1]}={f.get(k)}" for k in keys
                                                  if k != "model.cell" and k not in fixed and f.get(k) is not None])


def _task_label(cfg: dict) -> str:
    t = cfg.get("task", {})
    return t.get("name", "?") + (f" T={t['T']}" if "T" in t else "") + \
        (f" ({Path(str((t.get('data_files') or {}).get('train', ''))).parent.name})" if t.get("name") == "lm" else "")


def _table(headers, rows) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _groups(runs: list[dict]):
    """task label -> variant label -> runs; labels name the model keys that differ."""
    keys = ["model.cell", "model.hidden_size", "model.forget_bias", "model.recurrent_init"]
    from models.registry import CELLS

    def shown(r, k):
        spec = CELLS.get(str(r["config"].get("model", {}).get("cell")))
        return None if spec and k.split(".", 1)[1] in spec.fixed else flat(r["config"]).get(k)

    differ = [k for k in keys if len({json.dumps(shown(r, k)) for r in runs}) > 1]
    out: dict = {}
    for r in runs:
        out.setdefault(_task_label(r["config"]), {}).setdefault(_variant_label(r["config"], differ), []).append(r)
    return out


def _plot_vs_T(runs, path: Path, title: str) -> Optional[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by = _groups(runs)
    Ts = sorted({flat(r["config"]).get("task.T") for r in runs})
    if not Ts or None in Ts:
        return None
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    labels = sorted({v for t in by.values() for v in t})
    for lab in labels:
        pts = []
        for T in Ts:
            rs = [r for t in by.values() for v, rr in t.items() if v == lab for r in rr
                  if flat(r["config"]).get("task.T") == T]
            xs = values(rs)
            if xs:
                pts.append((T, stats.mean(xs)))
        if pts:
            ax.plot(*zip(*pts), marker="o", label=lab)
    base = [(T, _baseline([r for r in runs if flat(r["config"]).get("task.T") == T])) for T in Ts]
    base = [(T, b) for T, b in base if b is not None]
    if base:
        ax.plot(*zip(*base), "k--", label="baseline")
    ax.set_xlabel("T")
    ax.set_ylabel(primary_of(runs[0]))
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _plot_bars(runs, path: Path, title: str) -> Optional[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by = _groups(runs)
    if not by:
        return None
    fig, axes = plt.subplots(1, len(by), figsize=(4.2 * len(by), 3.6), squeeze=False)
    for ax, (task, variants) in zip(axes[0], sorted(by.items())):
        labels = list(variants)
        for i, lab in enumerate(labels):
            xs = values(variants[lab])
            if not xs:
                continue
            s = stats.summarize(xs)
            ax.bar(i, s.mean, color="C0" if i else "C1", alpha=0.6)
            if s.ci_half is not None:
                ax.errorbar(i, s.mean, yerr=s.ci_half, color="k", capsize=3)
            ax.plot([i] * len(xs), xs, "k.", ms=4)
        b = _baseline([r for v in variants.values() for r in v])
        if b is not None:
            ax.axhline(b, ls="--", color="k", lw=1)
        allv = [x for lab in labels for x in values(variants[lab]) if x > 0]
        if allv and max(allv) / min(allv) > 50:
            ax.set_yscale("log")
        ax.set_xticks(range(len(labels)))
        ax.set_xticklabels([l.replace("lstm_", "") for l in labels], rotation=45, ha="right", fontsize=7)
        ax.set_title(task, fontsize=9)
        ax.set_ylabel(primary_of(next(iter(variants.values()))[0]), fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _measure_gradflow(runs: list[dict], store, out: Path) -> tuple[list[dict], list[Path]]:
    """Gradient flow (reports.gradflow) of the seed-0 runs, one plot per task: at init and trained."""
    from reports.gradflow import measure_run, plot

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


def build(claims: dict, store, out_root, full: bool = False) -> Path:
    """Write <out_root>/<name>/report.md (+ PNGs) for one claims file; returns the path."""
    name = claims["name"]
    out = Path(out_root) / name
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("*.png"):
        old.unlink()
    from bench.store import Store

    known = Store(store).sweeps()
    full_name, red_name = Path(claims["full"]).stem, Path(claims["reduced"]).stem
    sweep = full_name if (full or full_name in known) else red_name
    reduced = sweep == red_name
    runs = store_runs(store, sweep)
    margin, alpha = float(claims.get("margin", 0.0)), float(claims.get("alpha", 0.05))
    curves, gf_pngs = [], []
    if any(c["kind"] == "gradflow_ratio" for c in claims["claims"]):
        curves, gf_pngs = _measure_gradflow(runs, store, out)
    results = [(c, check_claim(c, runs, margin=margin, alpha=alpha, reduced=reduced, gradflow=curves))
               for c in claims["claims"]]

    md = [f"# {claims['title']}\n",
          f"Paper: {claims['paper']}.\n",
          f"Paper's finding: **{claims['finding']}**\n",
          f"Generated {time.strftime('%Y-%m-%d %H:%M %Z')} by `python -m reports.papers` from sweep `{sweep}` "
          f"in result store `{Path(store).name}`.\n"]
    counts = {v: sum(1 for _, r in results if r["verdict"] == v) for v in (AGREES, DISAGREES, INCONCLUSIVE)}
    md.append("## Verdict\n")
    md.append(f"{counts[AGREES]} claim(s) agree, {counts[DISAGREES]} do not agree, "
              f"{counts[INCONCLUSIVE]} inconclusive" + (" — on the REDUCED CPU version (see below)." if reduced else ".") + "\n")
    rows = [[c["id"], r["paper"], r["ours"] or DASH, f"**{r['verdict']}**" + (f" ({r['why']})" if r["why"] else "")]
            for c, r in results]
    md.append(_table(["claim", "paper", "ours", "verdict"], rows))
    per_T = [[c["id"], x["T"], x["paper"], x["ours"], x["verdict"] + (f" ({x['why']})" if x["why"] else "")]
             for c, r in results for x in r["rows"]]
    if per_T:
        md.append("\nPer T (a variant 'beats' the baseline when its mean test metric is below baseline × "
                  f"(1 − {margin:g})):\n\n")
        md.append(_table(["claim", "T", "paper", "ours", "verdict"], per_T))

    if claims.get("published"):
        md.append(published_table(claims["published"], runs, matches))
    if claims.get("notes"):
        md.append("Notes (context from the literature, not measured here):\n\n" + "".join(f"- {n}\n" for n in claims["notes"]))
    # variant table
    md.append("\n## Results\n")
    by = _groups(runs)
    ref_sel = claims.get("reference")
    for task, variants in sorted(by.items()):
        allr = [r for v in variants.values() for r in v]
        base = _baseline(allr)
        ref_vals = values([r for r in allr if matches(r, ref_sel)]) if ref_sel else []
        pv = {lab: stats.welch(values(rs), ref_vals) for lab, rs in variants.items()} if ref_sel else {}
        holm = stats.holm({k: v for k, v in pv.items() if ref_vals and not all(matches(r, ref_sel) for r in variants[k])})
        md.append(f"\n### {task}\n\nPrimary: `{primary_of(allr[0])}` ({'lower' if lower_is_better(allr) else 'higher'} is better); "
                  f"baseline {fmt(base)}.\n\n")
        headers = ["variant", "mean ± std", "n", "params", "steps", "train time/run (s)"]
        if ref_sel:
            headers += ["Welch p vs ref", "Holm p"]
        headers += ["not in statistics"]
        trows = []
        for lab, rs in variants.items():
            s = stats.summarize(values(rs))
            params = sorted({r.get("params") for r in rs} - {None})
            wall = [r["wall_time_s"] for r in rs if r.get("wall_time_s")]
            row = [lab, DASH if s.n == 0 else (fmt(s.mean) if s.std is None else f"{fmt(s.mean)} ± {fmt(s.std)}"),
                   s.n, params[0] if params else DASH, flat(rs[0]["config"]).get("trainer.max_steps"),
                   fmt(stats.mean(wall), 3) if wall else DASH]
            if ref_sel:
                isref = all(matches(r, ref_sel) for r in rs)
                row += ["ref", DASH] if isref else [pfmt(pv.get(lab)), pfmt(holm.get(lab))]
            bad = [f"seed {r['config'].get('seed')}: {r.get('status')}" for r in rs if value(r) is None]
            row.append("; ".join(bad) or "none")
            trows.append(row)
        md.append(_table(headers, trows))
    pngs = []
    if any(c["kind"] == "beats_baseline" for c in claims["claims"]):
        pngs.append(_plot_vs_T(runs, out / "vs_T.png", f"{name}: mean over seeds ({sweep})"))
    else:
        pngs.append(_plot_bars(runs, out / "bars.png", f"{name} ({sweep}): bars = mean, error bars = 95% t CI, dots = seeds, dashed = baseline"))
    pngs += gf_pngs
    md.append("\n## Figures\n")
    for p in pngs:
        if p is not None:
            md.append(f"\n![{p.stem}]({p.relative_to(out).as_posix()})\n")
    if gf_pngs:
        md.append("\n`gradflow_<task>.png`: ‖∂l_T/∂h_t‖ (log scale) against the lag T − t for the seed-0 runs, at init "
                  "and after training, measured with `reports.gradflow` (as `rnnbench gradflow --run HASH ...`); "
                  "numbers in `gradflow.json`.\n")

    # reduction and cost
    fs, rs_ = _sweep_summary(SWEEPS / claims["full"]), _sweep_summary(SWEEPS / claims["reduced"])
    md.append("\n## Reduction\n\n")
    md.append(_table(["", "full (`" + claims["full"] + "`)", "reduced (`" + claims["reduced"] + "`)"],
                     [[k, ", ".join(map(str, fs[k])) if isinstance(fs[k], list) else fs[k],
                       ", ".join(map(str, rs_[k])) if isinstance(rs_[k], list) else rs_[k]]
                      for k in ("runs", "tasks", "T", "steps", "seeds", "hidden")]))
    md.append(f"\nThese results come from the {'reduced' if reduced else 'full'} sweep. The comments at the top of "
              "each sweep file name everything else that differs from the paper.\n")
    times = sweep_times(store)
    wall = [r.get("wall_time_s") for r in runs if r.get("wall_time_s")]
    statuses = {s: sum(1 for r in runs if r.get("status") == s) for s in sorted({r.get("status") for r in runs})}
    md.append("\n## Cost on this machine\n\n")
    md.append(f"- runs: {len(runs)} ({', '.join(f'{n} {s}' for s, n in statuses.items())})\n")
    if sweep in times:
        md.append(f"- sweep wall time: {times[sweep]} s ({times[sweep] / 60:.1f} min) on 2 CPU cores, "
                  "`--workers 2` (includes ~8 s start-up per run)\n")
    commits = sorted({r.get("git_commit") for r in runs} - {None})
    if commits:
        md.append(f"- code: git {', '.join(f'`{c}`' for c in commits)}"
                  + (" (runs made while the checkout changed; `+dirty` = uncommitted changes)" if len(commits) > 1 or any(c.endswith("+dirty") for c in commits) else "") + "\n")
    md.append(f"- summed training time of the runs (Lightning timer, excludes start-up and test): "
              f"{sum(wall):.0f} s\n")
    md.append(f"\nReproduce: `rnnbench sweep bench/sweeps/{claims['reduced']} --workers 2 --store results_papers "
              f"--wandb disabled` then `python -m reports.papers --store results_papers --only {name}`.\n")
    path = out / "report.md"
    path.write_text("\n".join(md))
    (out / "claims.json").write_text(json.dumps(
        {"sweep": sweep, "reduced": reduced,
         "claims": [{"id": c["id"], **{k: r[k] for k in ("verdict", "why", "paper", "ours")}} for c, r in results]},
        indent=1) + "\n")
    return path


def write_readme(all_c: list[dict], store, out_root) -> Path:
    times = sweep_times(store)
    lines = ["## Published comparisons\n\n",
             "Sweep files reproducing classic comparisons of recurrent architectures. Each `paper_<name>.yaml` is "
             "the full configuration (for a cluster); `paper_<name>_cpu.yaml` is a reduced version that a 2-core "
             "CPU finishes; `paper_<name>.claims.yaml` holds the paper's findings, checked by "
             "`python -m reports.papers` into `reports/published/<name>/report.md`.\n\n"]
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
    lines.append(_table(["comparison", "full sweep", "reduced sweep", "command (reduced)", "measured cost, 2 CPU cores",
                         "claims (reduced)", "report"], rows))
    total = sum(times.get(Path(c["reduced"]).stem, 0) for c in all_c)
    if total:
        lines.append(f"\nAll reduced sweeps together: {total} s ({total / 60:.1f} min) wall on 2 CPU cores.\n")
    lines.append("\nThen: `python -m reports.papers --store results_papers --out reports/published` regenerates every "
                 "report and this file. The full sweeps run the same way (`--executor slurm` on a cluster); the "
                 "generator uses a full sweep's runs whenever the store holds them.\n")
    path = Path(out_root) / "README.md"
    path.write_text("".join(lines))
    return path


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
