"""Verdicts under corrections, beside the uncorrected ones of the Verdict table.

- Several claims: every Welch claim of a comparison is tested at alpha on its own; judged again
  at Holm's adjusted p over all of them, a reader sees which verdicts survive multiplicity.
- Seeds added after a look: a Welch claim one of whose sides (variant or reference) has runs from
  several sweep files of its comparison (e.g. paper_socher_seeds.yaml, added after
  paper_socher.yaml's seeds 0-2 gave a verdict near the threshold) may have been tested once per
  file; a claims entry may also say `looks: K` where its runs were chosen after a look that the
  files do not show. It is judged again at Pocock's level (1977: the nominal two-sided level at each
  of K equally spaced looks for an overall 0.05; Bonferroni alpha / K past K = 5 or at another alpha).

A correction only takes significance away: a 'better' or 'worse' claim that loses it becomes
inconclusive, and so does a 'not worse' ('not better') claim whose 'does not agree' rested on it
(losing a significant difference does not show there is none).
"""
from __future__ import annotations

import functools
from pathlib import Path

from bench.schema import ConfigError
from bench.sweep import expand
from reports import stats
from reports.claims import DISAGREES, INCONCLUSIVE, WELCH_KINDS, check_claim, matches, sides
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
    files = sweep_files(sweep_names(claims)[0])
    return sorted(files, key=lambda p: p.name != claims["full"])


def claimed_looks(claim: dict) -> int:
    """The claims entry's `looks` (default 1); ConfigError (one line) for anything but an integer >= 1."""
    k = claim.get("looks", 1)
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ConfigError(f"claim {claim.get('id')}: looks: {k!r}; allowed: an integer >= 1")
    return k


def looks_of(claim: dict, runs: list[dict], files: list[Path]) -> tuple[int, list[str]]:
    """(looks, files): the most files either side's runs come from (each run counted in the first
    file, in `files`' order, that holds it), or the claim's `looks` if larger; and the names of
    all those files."""
    task = [r for r in runs if matches(r, claim.get("task"))]
    by_side = [{next((p.name for p in files if r["hash"] in _hashes(p)), None) for r in task if matches(r, claim[k])} - {None}
               for k in ("select", "ref")]
    used = set().union(*by_side)
    return max(claimed_looks(claim), *map(len, by_side)), [p.name for p in files if p.name in used]


def rejudged(c: dict, r: dict, runs: list[dict], at: float) -> str:
    """The claim's verdict with its test at level `at` instead of alpha: never 'agrees' where the
    uncorrected verdict was 'does not agree' (see the module's docstring)."""
    again = check_claim(c, runs, alpha=at)["verdict"]
    return INCONCLUSIVE if again != r["verdict"] and r["verdict"] == DISAGREES else again


def shown(again: str, r: dict) -> str:
    return f"**{again}**" + (" (unchanged)" if again == r["verdict"] else f" (uncorrected: {r['verdict']})")


def looks_section(doc: Doc, claims: dict, results: list, runs: list[dict]) -> None:
    """A table of the Welch claims with a verdict, judged at Holm's adjusted p over them all and,
    where seeds may have been added after a look, at Pocock's level; nothing when there is a
    single such claim tested once."""
    alpha, files = float(claims.get("alpha", 0.05)), files_of(claims)
    tested = [(c, r) for c, r in results if c["kind"] in WELCH_KINDS and r["verdict"] != "pending"]
    both = {c["id"]: sides(c, [x for x in runs if matches(x, c.get("task"))]) for c, _ in tested}
    ps = {k: stats.welch(*ab) for k, ab in both.items()}
    adjusted, rows = stats.holm(ps), []
    for c, r in tested:
        p, adj = ps[c["id"]], adjusted[c["id"]]
        looks, used = looks_of(c, runs, files)
        holm_v = DASH if p is None else shown(r["verdict"] if adj == p else rejudged(c, r, runs, alpha * p / adj), r)
        lv = level(looks, alpha) if looks > 1 else None
        look_v = DASH if lv is None else shown(rejudged(c, r, runs, lv), r)
        rows.append([c["id"], num(p) if p is not None else DASH, num(adj) if adj is not None else DASH, holm_v,
                     f"{looks}: " + ", ".join(f"`{u}`" for u in used) if lv else "1", f"{lv:g}" if lv else DASH, look_v,
                     num(mw) if (mw := stats.mann_whitney(*both[c["id"]])) is not None else DASH])
    if len(rows) < 2 and not any(row[5] != DASH for row in rows):
        return
    doc.p(f"Verdicts under corrections (`reports/looks.py`; the table above is uncorrected). Holm: each claim's Welch "
          f"p Holm-adjusted over the {len(ps)} Welch claims of this comparison. Looks: where one side's runs come from "
          "several sweep files, added one after another, possibly after looking at the earlier ones' verdict (or the "
          "claims file says `looks`), the claim judged again at Pocock's per-look level for K equally spaced looks at "
          f"an overall {alpha:g} (Bonferroni {alpha:g} / K past K = 5; an approximation, since the looks here are not "
          "equally spaced). A correction only takes significance away: a 'does not agree' that rested on it becomes "
          "inconclusive, never 'agrees'. Mann–Whitney p: the two-sided rank test on the same seeds, a check only (the "
          "verdicts use Welch's test, as the papers do): where seeds either solve the task or stay at the baseline, or "
          "blow up, Welch's normal approximation loses power and the ranks say more.")
    doc.table(["claim", "Welch p", "Holm p", "verdict at Holm", "looks (at most): runs from", "level", "verdict at that level",
               "Mann–Whitney p"], rows, align="lrrllrlr")
