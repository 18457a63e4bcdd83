"""Figures and run groups of the published comparisons (reports/papers.py): runs grouped by task
and variant, the mean against T, bars per task, and the gradient-flow measurements of the seed-0
runs, kept in `gradflow.json` beside the report so that a report regenerates without checkpoints
(the committed raw results have none).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

from bench.store import Store, write_atomic
from models.registry import CELLS
from reports import stats
from reports.claims import baseline, matches, primary_of, values
from reports.collect import flatten
from reports.doc import Doc
from reports.gradflow import measure_run, plot
from reports.plots import bars_per_task, mean_vs_T

VARIANT_KEYS = ["model.cell", "model.hidden_size", "model.forget_bias", "model.recurrent_init"]


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
    """task label -> variant label -> runs; labels name the model keys that differ: those of
    VARIANT_KEYS across all runs, and under a label that still holds runs of different models, the
    other model keys that split it (e.g. `lstm hidden_size=150 bidirectional=True`: paper_socher's
    LSTM and BiLSTM), then `trainer.max_steps` (the same model trained longer), where every one of
    those runs records the key (a key missing from older configs splits nothing)."""
    def shown(r, k):
        spec = CELLS.get(str(r["config"].get("model", {}).get("cell")))
        return None if spec and k.split(".", 1)[1] in spec.fixed else flatten(r["config"]).get(k)

    differ = [k for k in VARIANT_KEYS if len({json.dumps(shown(r, k)) for r in runs}) > 1]
    under: dict = {}
    for r in runs:
        under.setdefault((task_label(r["config"]), variant_label(r["config"], differ)), []).append(r)
    out: dict = {}
    for (task, label), rs in under.items():
        cfgs = [flatten(r["config"]) for r in rs]
        keys = sorted({k for f in cfgs for k in f if k.startswith("model.")} - set(differ)) + ["trainer.max_steps"]
        split = [k for k in keys if all(k in f for f in cfgs) and len({json.dumps(shown(r, k), default=str) for r in rs}) > 1]
        for r in rs:
            out.setdefault(task, {}).setdefault(variant_label(r["config"], differ + split), []).append(r)
    return out


# ---------------------------------------------------------------- figures


def plot_vs_T(runs: list[dict], path: Path, title: str) -> Optional[Path]:
    by = groups(runs)
    Ts = sorted({flatten(r["config"]).get("task.T") for r in runs})
    if not Ts or None in Ts:
        return None
    at = lambda rs, T: [r for r in rs if flatten(r["config"]).get("task.T") == T]  # noqa: E731
    base = {T: b for T in Ts if (b := baseline(at(runs, T)))}
    Ts = [T for T in Ts if T in base]   # a T with no finished run has no baseline yet
    if not Ts:
        return None
    series, lost = {}, {}
    for lab in sorted({v for t in by.values() for v in t}):
        rs = [r for t in by.values() for v, rr in t.items() if v == lab for r in rr]
        series[lab] = [(T, stats.mean(values(at(rs, T))) / base[T]) for T in Ts if values(at(rs, T))]
        lost[lab] = [T for T in Ts if at(rs, T) and all(r.get("status") == "diverged" for r in at(rs, T))]
    return mean_vs_T(series, lost, f"{primary_of(runs[0])} / baseline", path, title)


def plot_bars(runs: list[dict], path: Path, title: str, ref: Optional[dict] = None) -> Optional[Path]:
    """Bars per task; the variants whose runs all match `ref` (the claims file's reference) in orange."""
    by = groups(runs)
    if not by:
        return None
    panels = {task: ({lab: values(rs) for lab, rs in variants.items()},
                     baseline([r for v in variants.values() for r in v]),
                     primary_of(next(iter(variants.values()))[0])) for task, variants in sorted(by.items())}
    refs = {lab for variants in by.values() for lab, rs in variants.items()
            if ref and rs and all(matches(r, ref) for r in rs)}
    return bars_per_task(panels, path, title + (", orange = reference" if refs else ""), refs)


def _cached(path: Path) -> dict:
    """gradflow.json entries by (run hash, phase); entries of an older format are ignored."""
    try:
        entries = json.loads(path.read_text()) if path.is_file() else []
    except ValueError:
        return {}
    return {(e["hash"], e["phase"]): e for e in entries if isinstance(e, dict) and {"hash", "lags", "finished_at"} <= set(e)}


def _measure(r: dict, stores: list, cache: dict) -> dict:
    """{"init": {lags, norm}, "trained": {lags, norm} or None} of one run: from the cache when it
    holds this run (same finish time) and no store has weights it lacks, else measured."""
    got = {ph: cache.get((r["hash"], ph)) for ph in ("init", "trained")}
    fresh = all(e is None or e["finished_at"] == r.get("finished_at") for e in got.values())
    ckpt = next((s for s in stores if s is not None and Store(s).checkpoint(r["hash"]) is not None), None)
    if got["init"] is not None and fresh and (got["trained"] is not None or ckpt is None):
        return got
    m = measure_run(ckpt or stores[0], r["hash"], batch=16)
    return {ph: None if m[ph] is None else {"lags": list(m[ph]["lags"]), "norm": list(m[ph]["norm"])}
            for ph in ("init", "trained")}


def measure_gradflow(runs: list[dict], store, out: Path, weights=None) -> tuple[list[dict], list[Path]]:
    """Gradient flow (reports.gradflow) of the seed-0 runs, one plot per task: at init and trained
    (from the last checkpoint in `weights` or `store`; cached in `out/gradflow.json`)."""
    done = [r for r in runs if r.get("status") == "done" and r["config"].get("seed") == 0]
    cache = _cached(out / "gradflow.json")
    curves, pngs, entries = [], [], []
    for task in sorted({r["config"]["task"]["name"] for r in done}):
        panels: dict = {"init": {}, "trained": {}}
        for r in (r for r in done if r["config"]["task"]["name"] == task):
            m = _measure(r, [store, weights], cache)
            lab = (f"{r['config']['model']['cell']} {r['config']['model']['recurrent_init']} init, "
                   f"T={r['config']['task'].get('T')} (run {r['hash'][:6]})")
            for ph in ("init", "trained"):
                if m[ph] is not None:
                    panels[ph][lab] = m[ph]
                    curves.append({"config": r["config"], "phase": ph, "norm": m[ph]["norm"], "label": lab})
                    entries.append({"hash": r["hash"], "finished_at": r.get("finished_at"), "label": lab, "task": task,
                                    "phase": ph, "lags": m[ph]["lags"], "norm": m[ph]["norm"]})
        Ts = sorted({r["config"]["task"].get("T") for r in done if r["config"]["task"]["name"] == task}, key=str)
        pngs.append(plot(panels["init"], panels["trained"], out / f"gradflow_{task}.png",
                         f"gradient flow, {task} T={', '.join(map(str, Ts))}, seed 0, batch 16 (rnnbench gradflow --run ...)"))
    if entries:
        write_atomic(out / "gradflow.json", json.dumps(entries) + "\n")
    return curves, pngs


def figures_section(doc: Doc, claims: dict, runs: list[dict], out: Path, sweep: str, gf_pngs: list) -> None:
    name = claims["name"]
    if any(c["kind"] == "beats_baseline" for c in claims["claims"]):
        pngs = [plot_vs_T(runs, out / "vs_T.png", f"{name}: mean over seeds ({sweep})")]
    else:
        pngs = [plot_bars(runs, out / "bars.png",
                          f"{name} ({sweep}): bars = mean, error bars = 95% t CI, dots = seeds, dashed = baseline",
                          claims.get("reference"))]
    doc.h(2, "Figures")
    for p in pngs + gf_pngs:
        if p is not None:
            doc.img(p.relative_to(out).as_posix(), p.stem)
    if gf_pngs:
        doc.p("`gradflow_<task>.png`: ‖∂l_T/∂h_t‖ (log scale) against the lag T − t for the seed-0 runs, at init "
              "and after training, measured with `reports.gradflow` (as `rnnbench gradflow --run HASH ...`); "
              "numbers in `gradflow.json` (kept, so the report regenerates without the checkpoints).")
