"""The overview of the published comparisons (reports/papers.py): `reports/published/README.md`
and the "Published comparisons" table of the repository's README.md (between the markers
`<!-- published:begin -->` and `<!-- published:end -->`), both from each comparison's
`claims.json` beside its report.
"""
from __future__ import annotations

import json
from pathlib import Path

from bench.store import write_atomic
from reports.claims import AGREES, DISAGREES, INCONCLUSIVE
from reports.doc import Doc
from reports.published_runs import PENDING, estimate, expected, full_sweeps, start_command, sweep_names

VERDICTS = (AGREES, DISAGREES, INCONCLUSIVE, PENDING)
BEGIN, END = "<!-- published:begin -->", "<!-- published:end -->"


def _hours(s: float) -> str:
    return f"{s / 3600:.2f} h" if s >= 360 else f"{s:.0f} s"


def summary(c: dict, out_root) -> dict:
    """The comparison's claims.json (written by reports.papers.build), or an empty stand-in."""
    path = Path(out_root) / c["name"] / "claims.json"
    return json.loads(path.read_text()) if path.is_file() else {"claims": [], "finished": 0, "total": None}


def wall_text(s: dict) -> str:
    if not s.get("finished"):
        return "not run"
    text = f"{_hours(s.get('train_s') or 0)} summed training time of the finished runs"
    if s.get("sweep_wall_s"):
        text += f"; sweep wall {_hours(s['sweep_wall_s'])}"
    return text


def verdict_text(s: dict) -> str:
    return " / ".join(str(sum(1 for v in s["claims"] if v["verdict"] == k)) for k in VERDICTS)


def table_rows(all_c: list[dict], out_root, link: str) -> list[list]:
    rows = []
    for c in all_c:
        s = summary(c, out_root)
        sweep = s.get("sweep") or Path(c["full"]).stem
        kind = " (reduced)" if s.get("reduced") else ""
        rows.append([c["title"], f"`{sweep}`{kind}", f"{s.get('finished', 0)} / {s.get('total') or '?'}",
                     len(s.get("seeds") or []) or "?", wall_text(s), verdict_text(s), f"[report]({link}{c['name']}/report.md)"])
    return rows


HEADERS = ["comparison", "sweep", "runs finished / total", "seeds", "wall time on this machine",
           "verdicts: agrees / does not agree / inconclusive / pending", "report"]
TABLE_NOTE = ("Runs: finished (done, failed or diverged) out of the sweep files' runs. Seeds: how many distinct seeds "
              "the sweep files use (some variants or tasks may have fewer). Wall time: the sum of "
              "the finished runs' recorded training times (`wall_time_s`, Lightning's timer: no start-up, "
              "validation or test; a packed group's time shared among its members) and, where the runner recorded it (`sweep_times.txt`), the sweep's wall "
              "time. A claim is `pending` until every run of the full sweep it needs is finished.")


def table_doc(doc: Doc, all_c: list[dict], out_root, link: str) -> None:
    doc.table(HEADERS, table_rows(all_c, out_root, link), align="llrrlll")
    doc.p(TABLE_NOTE)


def write_readme(all_c: list[dict], out_root) -> Path:
    doc = Doc()
    doc.h(2, "Published comparisons")
    doc.p("Sweep files reproducing classic comparisons of recurrent architectures. Each `paper_<name>.yaml` is "
          "the full sweep, `paper_<name>_cpu.yaml` a reduced version where there is one, `paper_<name>.claims.yaml` the paper's "
          "findings, checked by `python -m reports.papers` into `<name>/report.md`. Each `<name>/` directory "
          "also holds the raw results the report is built from (`runs/<hash>/config.yaml`, `result.json`, "
          "`logs/version_<k>/metrics.csv`; `sweeps/<sweep>.json`), a compact copy of the result store.")
    table_doc(doc, all_c, out_root, "")
    doc.p("Regenerate every report, this file and the README's table from the committed raw results alone: "
          "`python -m reports.papers`. After (part of) a full sweep ran in the working store "
          "`results_published`: `python -m reports.papers --store results_published --export` copies its "
          "finished runs here and regenerates. In a fresh checkout, `python -m reports.papers --store "
          "results_published --import` seeds the working store with the committed runs; the sweep's start "
          "command below then trains only the runs still missing.")
    full_sweeps_doc(doc, all_c)
    path = Path(out_root) / "README.md"
    write_atomic(path, doc.markdown())
    return path


def full_sweeps_doc(doc: Doc, all_c: list[dict]) -> None:
    """The full sweeps' estimated cost on this machine and the command that starts (or resumes)
    each, from reports/published/full_sweeps.yaml (extrapolated by bench.benchmarks.sweep_cost)."""
    spec = full_sweeps()
    doc.h(3, "Full sweeps: estimated cost on this machine, and how to start them")
    if spec.get("note"):
        doc.p(spec["note"])
    rows = []
    for c in all_c:
        e = estimate(c) or {}
        exp = expected(sweep_names(c)[0])
        steps = ", ".join(str(x) for x in sorted({r["config"]["trainer"]["max_steps"] for r in exp}))
        rows.append([f"`bench/sweeps/{c['full']}`", e.get("runs", len(exp)),
                     e.get("seeds", len({r["config"].get("seed") for r in exp})), e.get("steps", steps),
                     e.get("hours_alone", "not estimated"), e.get("hours_packed", "not measured"),
                     f"`{start_command(c)}`"])
    doc.table(["sweep", "runs", "seeds", "steps a run", "hours, --pack 1", "hours, --pack 8", "start / resume"],
              rows, align="lrrrrrl")


def update_root_readme(path, all_c: list[dict], out_root) -> bool:
    """Rewrite the table between the markers of the repository's README.md; False if it has none."""
    path = Path(path)
    text = path.read_text() if path.is_file() else ""
    if BEGIN not in text or END not in text:
        return False
    doc = Doc()
    table_doc(doc, all_c, out_root, "reports/published/")
    head, rest = text.split(BEGIN, 1)
    write_atomic(path, head + BEGIN + "\n" + doc.markdown() + END + rest.split(END, 1)[1])
    return True

