"""What would settle an inconclusive claim: the seeds a side that a Welch test needs for 80 % power
at the difference and spreads observed, and what those runs would cost here. For a not-worse
(not-better) claim not shown within its margin: the seeds a side for 80 % power of showing that the
interval's worse (better) end stays within the margin, if the true difference is the observed one.

Post hoc, so a guide rather than a promise: the observed difference may over- or understate the
true one. A claim inconclusive because neither variant learnt the task is left out: more seeds of
the same setting do not change that.
"""
from __future__ import annotations

import math
from typing import Optional

from scipy import stats as st

from reports import stats
from reports.claims import INCONCLUSIVE, NOT_SHOWN, WELCH_KINDS, baseline, lower_is_better, margin_of, matches, sides, towards
from reports.doc import Doc
from reports.looks import files_of, level, looks_of
from reports.report import DASH, num

POWER = 0.8
MAX_SEEDS = 10_000


def _se_df(sa: float, sb: float, n: int) -> tuple[float, float]:
    """Standard error of the difference of two means of n seeds each, and its Welch-Satterthwaite df."""
    va, vb = sa * sa / n, sb * sb / n
    se = math.sqrt(va + vb)
    return se, ((va + vb) ** 2 / ((va * va + vb * vb) / (n - 1)) if se else float("inf"))


def power(d: float, sa: float, sb: float, n: int, alpha: float) -> float:
    """Power of the two-sided Welch test at level alpha with n seeds a side, true difference d."""
    se, df = _se_df(sa, sb, n)
    if se == 0:
        return 1.0 if d else 0.0
    crit = float(st.t.ppf(1 - alpha / 2, df))
    ncp = abs(d) / se
    return float(st.nct.sf(crit, df, ncp) + st.nct.cdf(-crit, df, ncp))


def power_within(gap: float, sa: float, sb: float, n: int, alpha: float) -> float:
    """Power of showing that the (1 - alpha) Welch interval's end towards the margin stays within it
    (a one-sided test at alpha / 2), with n seeds a side, when the true difference lies `gap` inside it."""
    se, df = _se_df(sa, sb, n)
    if se == 0:
        return 1.0 if gap > 0 else 0.0
    return float(st.nct.sf(float(st.t.ppf(1 - alpha / 2, df)), df, gap / se))


def seeds_needed(d: float, sa: float, sb: float, alpha: float = 0.05, target: float = POWER, within=None) -> Optional[int]:
    """The fewest seeds a side (>= 2) with power >= target (of the Welch test at difference d, or of
    the margin test with `within` = the margin's distance from d); None past MAX_SEEDS, for d = 0
    in the Welch test, or for within <= 0 (d at or past the margin: no number of seeds shows it within)."""
    pw = (lambda n: power_within(within, sa, sb, n, alpha)) if within is not None else (lambda n: power(d, sa, sb, n, alpha))
    if (d == 0 and within is None) or (within is not None and within <= 0) or pw(MAX_SEEDS) < target:
        return None
    lo, hi = 2, MAX_SEEDS
    while lo < hi:   # power grows with n
        mid = (lo + hi) // 2
        lo, hi = (mid + 1, hi) if pw(mid) < target else (lo, mid)
    return lo


def settle_section(doc: Doc, claims: dict, results: list, runs: list[dict]) -> None:
    """A table of the Welch claims inconclusive for want of significance or not shown within their
    margin; nothing when there is none."""
    alpha, rows, files = float(claims.get("alpha", 0.05)), [], files_of(claims)
    for c, r in results:
        if c["kind"] not in WELCH_KINDS or r["verdict"] != INCONCLUSIVE or not any(
                w in r["why"] for w in ("no significant difference", NOT_SHOWN)):
            continue
        mine = [x for x in runs if matches(x, c.get("task"))]
        a, b = sides(c, mine)
        d, sa, sb = stats.mean(a) - stats.mean(b), stats.std(a), stats.std(b)
        looks = looks_of(c, runs, files)[0]
        at = level(looks, alpha) if looks > 1 else alpha   # the level the claim will be judged at
        m, within = DASH, None
        if NOT_SHOWN in r["why"]:   # d towards the claim's word ('worse' or 'better'), against the margin
            low = lower_is_better(mine)
            m = margin_of(c, stats.mean(b), baseline(mine), low)[0]
            within, m = m - towards(c, low) * d, num(m)
        n = seeds_needed(d, sa, sb, at, within=within)
        walls = [x["wall_time_s"] for x in mine if x.get("wall_time_s") and x.get("status") == "done"
                 and (matches(x, c["select"]) or matches(x, c["ref"]))]
        extra = None if n is None else max(0, n - len(a)) + max(0, n - len(b))
        hours = f"{extra * stats.mean(walls) / 3600:.1f}" if extra is not None and walls else "—"
        never = "never" if within is not None and within <= 0 else f"> {MAX_SEEDS:,}"
        rows.append([c["id"], num(d), m, f"{num(sa)} / {num(sb)}", f"{len(a)} / {len(b)}", f"{at:g}",
                     never if n is None else str(n), "—" if extra is None else str(extra), hours])
    if not rows:
        return
    doc.p(f"What would settle the claims inconclusive for want of significance (`reports/settle.py`): the seeds a side "
          f"for which a two-sided Welch test has {POWER:.0%} power at the level the claim is judged at ({alpha:g}, or "
          "Pocock's per-look level where seeds come from several looks: the corrections table), if the true difference and spreads "
          "were the ones observed (post hoc: a guide, not a promise), the runs that adds, and their cost at these runs' "
          "mean recorded training time (run-hours, at the thread counts they ran with). A not-worse (not-better) claim "
          "not shown within its margin (a margin in the table) needs the power to show the interval's worse (better) "
          "end inside the margin instead; none where the observed difference is already past it.")
    doc.table(["claim", "difference (variant − reference)", "margin", "std variant / reference", "seeds now", "level",
               f"seeds a side for {POWER:.0%} power", "runs to add", "run-hours"], rows, align="lrrrrrrrr")
