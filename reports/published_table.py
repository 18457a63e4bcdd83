"""The published-figures table of a paper report (reports/papers.py): for each `published` row of
a claims file, the paper's number, the target set here and ours (mean ± std over the finished seeds,
in the paper's units), per metric, with the mean training time.

    published:
      - label: RNTN
        select: {model.cell: rntn}
        scale: 100                      # our metric x scale = the paper's units (accuracy in %)
        paper: {test/fine_root: 45.7, test/binary_root: 85.4}
        target: {test/fine_root: 44, test/binary_root: 84}   # met when ours (mean) >= target
"""
from __future__ import annotations

import math
from typing import Optional

from reports import stats
from reports.claims import matches
from reports.doc import Doc
from reports.report import DASH, load_mark, loaded_note, seeds_by_status


def one_decimal(x: Optional[float]) -> str:
    """A figure in the paper's units (one decimal, as papers print accuracies in %)."""
    return DASH if x is None else f"{x:.1f}"


def ours(runs: list[dict], metric: str, scale: float) -> tuple[str, Optional[float]]:
    xs = [float(r["metrics"][metric]) * scale for r in runs
          if r.get("status") == "done" and isinstance((r.get("metrics") or {}).get(metric), (int, float))
          and math.isfinite(float(r["metrics"][metric]))]
    if not xs:
        return DASH, None
    m = stats.mean(xs)
    sd = stats.summarize(xs).std
    return (one_decimal(m) if sd is None else f"{one_decimal(m)} ± {one_decimal(sd)}") + f" (n={len(xs)})", m


def published_table(rows: list[dict], runs: list[dict], pick=matches) -> str:
    """The section as Markdown (`pick(run, selector)` chooses a row's runs; default claims.matches)."""
    doc = Doc()
    published_section(doc, rows, runs, pick)
    return doc.markdown()


def published_section(doc: Doc, rows: list[dict], runs: list[dict], pick=matches) -> None:
    """Add the section: one table row per `published` row, its runs picked by `select`."""
    metrics = []
    for row in rows:
        for k in list(row.get("paper", {})) + list(row.get("target", {})):
            if k not in metrics:
                metrics.append(k)
    head = ["model"] + [f"{m.split('/', 1)[-1]}: paper / target / ours" for m in metrics] + ["train time/run (s)", "seeds not done"]
    table = []
    for row in rows:
        mine = [r for r in runs if pick(r, row.get("select"))]
        cells = [row["label"]]
        for m in metrics:
            text, mean = ours(mine, m, float(row.get("scale", 1.0)))
            target = row.get("target", {}).get(m)
            met = "" if target is None or mean is None else (" ✓" if mean >= target else " ✗")
            cells.append(f"{one_decimal(row.get('paper', {}).get(m))} / {one_decimal(target)} / {text}{met}")
        timed = [r for r in mine if r.get("status") == "done" and r.get("wall_time_s")]
        cells.append(f"{stats.mean([r['wall_time_s'] for r in timed]):.0f}{load_mark(timed)}" if timed else DASH)
        cells.append(seeds_by_status([r for r in mine if r.get("status") != "done"]))
        table.append(cells)
    doc.h(2, "Published figures beside ours")
    doc.p("Paper / target here / ours on the test set (mean ± std over the finished seeds; ✓ = mean meets the target).")
    doc.table(head, table, align="l" * len(head))
    loaded_note(doc, [row[-2] for row in table])
