"""Seeds added after a look: a Welch claim whose runs come from several sweep files of its
comparison (e.g. paper_socher_seeds.yaml, added after paper_socher.yaml's seeds 0-2 gave a
verdict near the threshold) was tested once per file at most. Its p-value is not corrected for
those looks; this section sets it against a level that is (Pocock 1977: the nominal two-sided
level at each of K equally spaced looks for an overall 0.05; Bonferroni 0.05 / K past K = 5 or at
another alpha), so a reader sees which verdicts would survive optional stopping."""
from __future__ import annotations

import functools
from pathlib import Path

from bench.sweep import expand
from reports import stats
from reports.claims import SWEEPS, WELCH_KINDS, matches, values
from reports.doc import Doc
from reports.published_runs import sweep_files, sweep_names
from reports.report import DASH, num

POCOCK = {2: 0.0294, 3: 0.0221, 4: 0.0182, 5: 0.0158}   # overall alpha 0.05, two-sided


def level(looks: int, alpha: float) -> float:
    """The per-look level for `looks` looks at an overall `alpha`."""
    return POCOCK[looks] if alpha == 0.05 and looks in POCOCK else alpha / looks


@functools.lru_cache(maxsize=None)
def _hashes(path: Path) -> frozenset:
    return frozenset(c.hash for c in expand(path)[1])


def files_of(claims: dict) -> list[Path]:
    """The comparison's full sweep files, its `full` file first (the first look), then the rest."""
    first = SWEEPS / claims["full"]
    return [first] + [p for p in sweep_files(sweep_names(claims)[0]) if p != first]


def looks_of(claim: dict, runs: list[dict], files: list[Path]) -> list[str]:
    """The names of the files the claim's runs come from (each run counted in the first file, in
    `files`' order, that holds it)."""
    mine = [r for r in runs if matches(r, claim.get("task")) and (matches(r, claim["select"]) or matches(r, claim["ref"]))]
    used = {next((p.name for p in files if r["hash"] in _hashes(p)), None) for r in mine} - {None}
    return [p.name for p in files if p.name in used]


def looks_section(doc: Doc, claims: dict, results: list, runs: list[dict]) -> None:
    """A table of the Welch claims with a verdict whose runs span several sweep files; nothing
    when there is none."""
    alpha, files, rows = float(claims.get("alpha", 0.05)), files_of(claims), []
    for c, r in results:
        if c["kind"] not in WELCH_KINDS or r["verdict"] == "pending":
            continue
        used = looks_of(c, runs, files)
        if len(used) < 2:
            continue
        task = [x for x in runs if matches(x, c.get("task"))]
        p = stats.welch(values([x for x in task if matches(x, c["select"])]), values([x for x in task if matches(x, c["ref"])]))
        lv = level(len(used), alpha)
        if p is None or p >= alpha:
            now = "unchanged (not significant)"
        else:
            now = f"unchanged: **{r['verdict']}**" if p < lv else "**inconclusive** (significant only without the correction)"
        rows.append([c["id"], ", ".join(f"`{u}`" for u in used), len(used), num(p) if p is not None else DASH, f"{lv:g}", now])
    if not rows:
        return
    doc.p("Seeds added after a look: the claims below compare runs from several sweep files, each added after the "
          "earlier ones had given a verdict (at most one look a file). Their Welch p above is not corrected for "
          f"those looks. Against a level that is (Pocock's per-look level for K equally spaced looks at an overall "
          f"{alpha:g}; Bonferroni {alpha:g} / K past K = 5; the looks here are not equally spaced, so this is an "
          "approximation), their verdicts read:")
    doc.table(["claim", "runs from", "looks (at most)", "Welch p", "level", "verdict at that level"], rows,
              align="llrrrl")
