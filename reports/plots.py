"""Figures of a report (matplotlib, Agg backend): learning curves, bar chart, solved vs T."""
from __future__ import annotations

import io
import math
import textwrap
from pathlib import Path
from typing import Optional

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from bench.store import write_atomic  # noqa: E402
from reports import stats  # noqa: E402
from reports.collect import TaskGroup, Variant  # noqa: E402

DPI = 110
PNG_METADATA = {"Software": None}   # published PNGs: no matplotlib version, so regenerated files are the same bytes


def save(fig, path, **kw) -> None:
    """fig.savefig into memory, then the file by rename: a crash never leaves a truncated image."""
    buf = io.BytesIO()
    fig.savefig(buf, format=Path(path).suffix.lstrip(".") or "png", **kw)
    write_atomic(path, buf.getvalue())


def _colors(n: int):
    cmap = plt.get_cmap("tab10" if n <= 10 else "tab20")
    return [cmap(i % cmap.N) for i in range(n)]


def curve(run, metric: str) -> dict[int, float]:
    """step -> value of `metric` for one run (the last row wins for a repeated step)."""
    out = {}
    for row in run.metric_rows():
        v, s = row.get(metric), row.get("step")
        if isinstance(v, (int, float)) and isinstance(s, (int, float)):
            out[int(s)] = float(v)
    return out


def mean_curve(v: Variant, metric: str) -> tuple[list[int], list[float], list[Optional[float]], list[int]]:
    """Mean and sample std over the variant's finished seeds at each logged step, and n per step."""
    curves = [curve(r, metric) for r in v.usable()]
    steps = sorted({s for c in curves for s in c})
    means, stds, ns = [], [], []
    for s in steps:
        xs = [c[s] for c in curves if s in c and math.isfinite(c[s])]
        means.append(stats.mean(xs) if xs else float("nan"))
        stds.append(stats.std(xs))
        ns.append(len(xs))
    return steps, means, stds, ns


def spans_decades(ys: list[float], decades: float = 2.0) -> bool:
    """Whether the finite values are positive and span at least `decades` powers of ten (then a log
    axis shows them all: on a linear one the small ones are flat at zero)."""
    ys = [y for y in ys if y is not None and math.isfinite(y)]
    return bool(ys) and min(ys) > 0 and max(ys) / min(ys) >= 10 ** decades


def _auto_log(ax, ys: list[float]) -> None:
    if spans_decades(ys):
        ax.set_yscale("log")


def learning_curves(g: TaskGroup, path: Path, metric: str = "val/loss") -> Optional[Path]:
    """Mean over finished seeds (line) ± 1 sample std (band); runs that diverged or failed are
    drawn on their own, dashed, ending with an x at their last logged value."""
    fig, ax = plt.subplots(figsize=(7, 4.2))
    drawn, ys_all = False, []
    for v, color in zip(g.variants, _colors(len(g.variants))):
        steps, means, stds, ns = mean_curve(v, metric)
        if steps:
            drawn = True
            ys_all += means
            ax.plot(steps, means, color=color, label=f"{v.label} (n={len(v.usable())})", lw=1.6,
                    marker="o" if len(steps) <= 25 else None, ms=3)
            lo = [m - s if s is not None else m for m, s in zip(means, stds)]
            hi = [m + s if s is not None else m for m, s in zip(means, stds)]
            ax.fill_between(steps, lo, hi, color=color, alpha=0.2, lw=0)
        for r in v.excluded():
            c = curve(r, metric)
            if not c:
                continue
            drawn = True
            xs = sorted(c)
            ys = [c[s] for s in xs]
            ys_all += ys
            ax.plot(xs, ys, color=color, ls="--", lw=1, alpha=0.8, label=f"{v.label} seed {r.seed} ({r.status})")
            finite = [(x, y) for x, y in zip(xs, ys) if math.isfinite(y)]
            if finite:
                ax.plot(*finite[-1], marker="x", color=color, ms=8)
    if not drawn:
        plt.close(fig)
        return None
    _auto_log(ax, ys_all)
    ax.set_xlabel("step")
    ax.set_ylabel(metric)
    ax.set_title(f"{g.title}: {metric} (mean over seeds, band = ±1 std)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    save(fig, path, dpi=DPI)
    plt.close(fig)
    return path


def bar_chart(g: TaskGroup, path: Path) -> Optional[Path]:
    """Primary metric: mean over finished seeds, error bars = 95 % Student-t CI (none for one
    seed), every seed as a dot, the task baseline as a dashed line."""
    if not any(v.usable() for v in g.variants):
        return None
    vs = g.variants
    fig, ax = plt.subplots(figsize=(max(4.5, 1.1 * len(vs) + 2), 4.2))
    colors = _colors(len(g.variants))
    for i, v in enumerate(vs):
        s = v.summary()
        color = colors[g.variants.index(v)]
        if not s.n:
            ax.annotate("no finished seed", (i, 0), xycoords=("data", "axes fraction"), xytext=(0, 6),
                        textcoords="offset points", ha="center", fontsize=7, rotation=90, va="bottom")
            continue
        yerr = [[s.mean - s.ci_low], [s.ci_high - s.mean]] if s.ci_low is not None else None
        ax.bar(i, s.mean, color=color, alpha=0.75, yerr=yerr, capsize=5, ecolor="black")
        ax.scatter([i] * len(v.values()), v.values(), color="black", s=12, zorder=3)
    base = g.baseline_value()
    _auto_log(ax, [x for v in vs for x in v.values()] + ([base] if base is not None else []))
    ax.set_xlim(-0.6, len(vs) - 0.4)
    if base is not None:
        ax.axhline(base, color="red", ls="--", lw=1.2, label=f"baseline {base:.4g}")
        ax.legend(fontsize=8)
    ax.set_xticks(range(len(vs)))
    ax.set_xticklabels([v.label for v in vs], rotation=20, ha="right", fontsize=8)
    arrow = "lower is better" if g.mode == "min" else "higher is better"
    ax.set_ylabel(f"{g.primary} ({arrow})")
    ax.set_title(f"{g.title}: mean, 95% CI (t), seeds as dots", fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    save(fig, path, dpi=DPI)
    plt.close(fig)
    return path


def solved_vs_T(family: str, points: dict[str, dict[int, tuple[int, int]]], path: Path) -> Optional[Path]:
    """points: variant label -> {T: (solved, finished)}; plots the solved fraction against T."""
    if not points:
        return None
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for (label, by_T), color in zip(sorted(points.items()), _colors(len(points))):
        Ts = sorted(by_T)
        frac = [by_T[T][0] / by_T[T][1] if by_T[T][1] else float("nan") for T in Ts]
        ax.plot(Ts, frac, marker="o", color=color, label=label)
    ax.set_xlabel("T (delay / sequence length)")
    ax.set_ylabel("fraction of seeds solved")
    ax.set_ylim(-0.05, 1.05)
    if len({T for p in points.values() for T in p}) > 1:
        ax.set_xscale("log")
    ax.set_title(f"{family}: solved vs T")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    save(fig, path, dpi=DPI)
    plt.close(fig)
    return path


def mean_vs_T(series: dict[str, list[tuple]], lost: dict[str, list], ylabel: str, path: Path,
              title: str) -> Path:
    """One line per label through its (T, mean / baseline) points; 1 = the task's trivial baseline
    (dashed); an x on top where every finished run of a label diverged or failed (published reports)."""
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    top = 1.1 * max([1.0] + [y for pts in series.values() for _, y in pts])
    for lab, pts in series.items():
        line = ax.plot(*zip(*pts), marker="o", label=lab)[0] if pts else None
        if lost.get(lab):
            ax.plot(lost[lab], [top] * len(lost[lab]), "x", ms=8, mew=2, color=line.get_color() if line else "k",
                    label=f"{lab}: every run diverged")
    ax.axhline(1.0, color="k", ls="--", label="baseline (learnt nothing)")
    ax.set_xlabel("T")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    save(fig, path, dpi=100, metadata=PNG_METADATA)
    plt.close(fig)
    return path


def bars_per_task(panels: dict[str, tuple[dict, Optional[float], str]], path: Path, title: str,
                  refs: frozenset = frozenset()) -> Path:
    """One panel per task: {task: ({label: values}, baseline, ylabel)}; bar = mean, error bar =
    95% t CI, dots = seeds, dashed = baseline, the labels in `refs` orange (published reports)."""
    ticks = {task: [textwrap.fill(lab.replace("lstm_", "") + ("" if xs else " (no runs)"), 20, break_long_words=False)
                    for lab, xs in v[0].items()] for task, v in panels.items()}
    # room for each bar's wrapped label: about 0.07 inch a character at 7 pt
    widths = [max(4.2, sum(max(0.5, 0.07 * max(map(len, t.splitlines()))) for t in ts)) for ts in ticks.values()]
    fig, axes = plt.subplots(1, len(panels), figsize=(sum(widths), 4.0), squeeze=False, gridspec_kw={"width_ratios": widths})
    for ax, (task, (variants, base, ylabel)) in zip(axes[0], panels.items()):
        labels = list(variants)
        for i, lab in enumerate(labels):
            xs = variants[lab]
            if not xs:
                continue
            s = stats.summarize(xs)
            ax.bar(i, s.mean, color="C1" if lab in refs else "C0", alpha=0.6)
            if s.ci_half is not None:
                ax.errorbar(i, s.mean, yerr=s.ci_half, color="k", capsize=3)
            ax.plot([i] * len(xs), xs, "k.", ms=4)
        if base is not None:
            ax.axhline(base, ls="--", color="k", lw=1)
        allv = [x for lab in labels for x in variants[lab] if x > 0]
        if allv and max(allv + [base or 0]) / min(allv) > 50:   # the baseline too: bars far below it stay visible
            ax.set_yscale("log")
        if not any(variants.values()):
            ax.text(0.5, 0.5, "no runs yet", transform=ax.transAxes, ha="center", va="center", fontsize=9)
            ax.set_yticks([])
        ax.set_xticks(range(len(labels)))
        ax.set_xlim(-0.5, len(labels) - 0.5)
        ax.set_xticklabels(ticks[task], fontsize=7)
        ax.set_title(task, fontsize=9)
        ax.set_ylabel(ylabel, fontsize=8)
    fig.suptitle(textwrap.fill(title, int(sum(widths) * 72 / 5.5)), fontsize=9)   # ~5.5 pt a character at 9 pt
    fig.tight_layout()
    save(fig, path, dpi=100, metadata=PNG_METADATA)
    plt.close(fig)
    return path
