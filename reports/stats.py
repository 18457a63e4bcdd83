"""Statistics over seeds: mean, sample std, Student-t confidence interval, Welch's t-test and the
Welch interval of a difference, the Mann-Whitney U test, Holm.

Every function takes plain lists of finite floats; callers decide which runs are eligible
(only finished runs with a finite metric: diverged and failed runs are never averaged in).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence

from scipy import stats


@dataclass(frozen=True)
class Summary:
    n: int
    mean: Optional[float]
    std: Optional[float]          # sample std (ddof=1); None for n < 2
    ci_low: Optional[float]       # Student-t CI; None for n < 2
    ci_high: Optional[float]
    level: float = 0.95

    @property
    def ci_half(self) -> Optional[float]:
        return None if self.ci_low is None else (self.ci_high - self.ci_low) / 2


def mean(xs: Sequence[float]) -> Optional[float]:
    return sum(xs) / len(xs) if xs else None


def std(xs: Sequence[float]) -> Optional[float]:
    """Sample standard deviation (n - 1 in the denominator); None below two values."""
    if len(xs) < 2:
        return None
    m = mean(xs)
    return math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1))


def t_ci(xs: Sequence[float], level: float = 0.95) -> tuple[Optional[float], Optional[float]]:
    """mean ± t_{(1+level)/2, n-1} · s / √n; (None, None) for n < 2 (no interval from one seed)."""
    n = len(xs)
    if n < 2:
        return None, None

    m, s = mean(xs), std(xs)
    half = float(stats.t.ppf((1 + level) / 2, n - 1)) * s / math.sqrt(n)
    return m - half, m + half


def summarize(xs: Sequence[float], level: float = 0.95) -> Summary:
    xs = [float(x) for x in xs]
    lo, hi = t_ci(xs, level)
    return Summary(len(xs), mean(xs), std(xs), lo, hi, level)


def welch(a: Sequence[float], b: Sequence[float]) -> Optional[float]:
    """Two-sided p-value of Welch's t-test (unequal variances) of a against b; None when either
    side has fewer than two values or both have zero variance (the test is undefined)."""
    if len(a) < 2 or len(b) < 2:
        return None
    if all(std(xs) <= 1e-12 * max(1.0, max(map(abs, xs))) for xs in (a, b)):   # constant up to rounding
        return None

    p = float(stats.ttest_ind(list(a), list(b), equal_var=False).pvalue)
    return None if math.isnan(p) else p


def welch_ci(a: Sequence[float], b: Sequence[float], level: float = 0.95) -> tuple[Optional[float], Optional[float]]:
    """Confidence interval of mean(a) - mean(b) with Welch's degrees of freedom; (None, None)
    where `welch` is undefined."""
    if welch(a, b) is None:
        return None, None
    ci = stats.ttest_ind(list(a), list(b), equal_var=False).confidence_interval(level)
    return float(ci.low), float(ci.high)


def mann_whitney(a: Sequence[float], b: Sequence[float]) -> Optional[float]:
    """Two-sided p-value of the Mann-Whitney U test (ranks: robust to seeds that solve or stay at the
    baseline, or blow up); None below two values a side or when every value is equal."""
    if len(a) < 2 or len(b) < 2 or len(set(a) | set(b)) < 2:
        return None
    return float(stats.mannwhitneyu(list(a), list(b), alternative="two-sided").pvalue)


def holm(pvalues: dict) -> dict:
    """Holm-Bonferroni adjusted p-values (family = the given dict; None entries are skipped)."""
    items = sorted(((p, k) for k, p in pvalues.items() if p is not None), key=lambda t: t[0])
    m, out, running = len(items), {}, 0.0
    for i, (p, k) in enumerate(items):
        running = max(running, min(1.0, (m - i) * p))
        out[k] = running
    return {k: out.get(k) for k in pvalues}
