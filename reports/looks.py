"""Seeds added after a look: a Welch claim one of whose sides (variant or reference) has runs from
several sweep files of its comparison (e.g. paper_socher_seeds.yaml, added after
paper_socher.yaml's seeds 0-2 gave a verdict near the threshold) may have been tested once per
file; a claims entry may also say `looks: K` where its runs were chosen after a look that the files
do not show. Its p-value is not corrected for those looks; this section judges the claim again at
a level that is (Pocock 1977: the nominal two-sided level at each of K equally spaced looks for an
overall 0.05; Bonferroni alpha / K past K = 5 or at another alpha), so a reader sees which
verdicts survive optional stopping."""
from __future__ import annotations

import functools
from pathlib import Path

from bench.sweep import expand
from reports import stats
from reports.claims import WELCH_KINDS, check_claim, matches, values
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


def looks_of(claim: dict, runs: list[dict], files: list[Path]) -> tuple[int, list[str]]:
    """(looks, files): the most files either side's runs come from (each run counted in the first
    file, in `files`' order, that holds it), or the claim's `looks` if larger; and the names of
    all those files."""
    task = [r for r in runs if matches(r, claim.get("task"))]
    sides = [{next((p.name for p in files if r["hash"] in _hashes(p)), None) for r in task if matches(r, claim[k])} - {None}
             for k in ("select", "ref")]
    used = set().union(*sides)
    return max(int(claim.get("looks", 1)), *map(len, sides)), [p.name for p in files if p.name in used]


def looks_section(doc: Doc, claims: dict, results: list, runs: list[dict]) -> None:
    """A table of the Welch claims with a verdict that may have had several looks; nothing when
    there is none."""
    alpha, files, rows = float(claims.get("alpha", 0.05)), files_of(claims), []
    for c, r in results:
        if c["kind"] not in WELCH_KINDS or r["verdict"] == "pending":
            continue
        looks, used = looks_of(c, runs, files)
        if looks < 2:
            continue
        task = [x for x in runs if matches(x, c.get("task"))]
        p = stats.welch(values([x for x in task if matches(x, c["select"])]), values([x for x in task if matches(x, c["ref"])]))
        lv = level(looks, alpha)
        again = check_claim(c, runs, alpha=lv)["verdict"]
        rows.append([c["id"], ", ".join(f"`{u}`" for u in used), looks, num(p) if p is not None else DASH, f"{lv:g}",
                     f"**{again}**" + (" (unchanged)" if again == r["verdict"] else f" (uncorrected: {r['verdict']})")])
    if not rows:
        return
    doc.p("Seeds added after a look: for the claims below, one side's runs come from several sweep files, added one "
          "after another, possibly after looking at the earlier ones' verdict (or the claims file says how many looks "
          "chose them: `looks`). The Welch p above is not corrected for those looks. Judged again at a level that is "
          f"(Pocock's per-look level for K equally spaced looks at an overall {alpha:g}; Bonferroni {alpha:g} / K past "
          "K = 5; an approximation, since the looks here are not equally spaced), they read:")
    doc.table(["claim", "runs from", "looks (at most)", "Welch p", "level", "verdict at that level"], rows,
              align="llrrrl")
