"""Evidence runs of a published comparison: runs outside its sweep, named in its claims file
(`evidence: [paper_<name>_<what>.yaml, ...]`), that test what else could explain a verdict (for
example the same run trained longer). They are exported with the comparison's raw results and
listed in its report, and never enter a verdict."""
from __future__ import annotations

from bench.store import FINISHED, Store
from reports.claims import primary_of
from reports.collect import store_runs
from reports.doc import Doc
from reports.leaderboard import run_command
from reports.published_runs import evidence_names
from reports.report import DASH, num


def evidence_section(doc: Doc, claims: dict, store) -> None:
    """A table of every evidence run the store holds (its status, steps, primary metric against
    the baseline, and its command), or a line saying none has run yet."""
    files = claims.get("evidence") or []
    if not files:
        return
    doc.h(2, "Evidence runs (outside the verdicts)")
    doc.p("Runs outside the full sweep, kept as evidence for the notes above; the comment at the top of each "
          "file says what it tests: " + ", ".join(f"`{f}`" for f in files) + ".")
    known = Store(store).sweeps()
    runs = [r for name in evidence_names(claims) if name in known for r in store_runs(store, [name])]
    if not runs:
        doc.p("None of them has run yet.")
        return
    rows = []
    for run in runs:
        res = run.result or {}
        key = primary_of(res)
        metric, base = (res.get("metrics") or {}).get(key), (res.get("baseline") or {}).get(key)
        stopped = res.get("stopped") or {}
        rows.append([f"`{run.hash}`", run.status, res.get("step", DASH) if run.status in FINISHED else DASH,
                     f"{stopped.get('reason')} at {stopped.get('step')}" if stopped else DASH,
                     f"{key}: {num(metric)}", num(base), f"`{run_command(run)}`"])
    doc.table(["run", "status", "steps trained", "stopped", "primary metric", "baseline", "command"], rows,
              align="llrllrl")
