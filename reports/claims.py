"""Claim checking: a paper's finding (a claims-file entry) against runs, with a plain verdict.

Claim kinds (see bench/sweeps/paper_<name>.claims.yaml):
* `beats_baseline`: `select` picks a variant, `expect` maps T -> whether its mean primary metric
  beats the task baseline (by `margin`, relative). A paper success that a shortened run misses is
  inconclusive (training was cut), not a disagreement.
* `better_than_ref` / `worse_than_ref` / `not_worse_than_ref` / `not_better_than_ref`: two-sided
  Welch t-test (unequal variances, Welch-Satterthwaite degrees of freedom) of `select`'s seeds
  against `ref`'s on the task `task`: better / worse agrees when p < `alpha` with the mean in the
  claim's direction (a one-sided test at alpha / 2), disagrees when p < alpha the other way;
  not-worse (not-better) disagrees when p < alpha with the mean worse (better), and agrees only
  when it is shown within a margin (a non-inferiority test at alpha / 2): the interval's worse
  (better) end is within `margin` (claim field; default MARGIN = 5 %) of the reference's gain over
  the task baseline (of the reference's mean where there is no baseline or no gain); else it is
  inconclusive, since no significant difference alone is no evidence of none. A not-better claim
  may name the metric's `best` value (0 for a loss): no variant is better by more than the distance
  from it to the reference's far (1 - alpha) bound, whatever a skewed interval says. Only runs
  `done` with a finite metric enter the test; the finished others (diverged, failed) are named in
  `ours`. An inconclusive verdict, and a not-worse / not-better one without significance, states
  the (1 - alpha) Welch interval of the difference (select - ref), the interval that excludes 0
  exactly when p < alpha: how far from settled it is, how much worse (better) the variant could be.
* `gradflow_ratio`: ||dl_T/dh_t|| at each run's largest lag, at init, mean over the runs (every T): `select` over `ref` >= `min_ratio`.

The checker works on plain run dicts -- result.json plus `config` (nested, or flat dotted keys),
`run_dict` makes one from a `reports.collect.Run` -- so it can be tested on hand-made results.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Optional

import yaml

from bench.schema import ConfigError
from bench.store import FINISHED
from reports import stats
from reports.collect import Run, flatten
from reports.report import DASH, num, pval

SWEEPS = Path(__file__).resolve().parents[1] / "bench" / "sweeps"
AGREES, DISAGREES, INCONCLUSIVE = "agrees", "does not agree", "inconclusive"
WELCH_KINDS = ("better_than_ref", "worse_than_ref", "not_worse_than_ref", "not_better_than_ref")
LEARNT_MARGIN = 0.05   # a variant has learnt a task when its mean beats the baseline by this (relative)
MARGIN = 0.05          # not worse / not better: by at most this share of the reference's gain over the baseline


def run_dict(run: Run) -> dict:
    """The plain dict the checker reads: result.json (or an empty one) + hash, status, config."""
    return {**(run.result or {"metrics": {}}), "hash": run.hash, "status": run.status, "config": run.config,
            **({"error": run.note} if run.note else {})}


def _same(a, b) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool) \
            and not isinstance(b, bool):
        return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-12)
    return a == b or str(a) == str(b)


def matches(run: dict, selector: Optional[dict]) -> bool:
    cfg = flatten(run.get("config") or {})
    return all(k in cfg and _same(cfg[k], v) for k, v in (selector or {}).items())


def primary_of(run: dict) -> str:
    return run.get("primary") or "test/loss"


def value(run: dict) -> Optional[float]:
    """The run's primary metric, only for finished runs with a finite value."""
    if run.get("status") != "done":
        return None
    v = (run.get("metrics") or {}).get(primary_of(run))
    return float(v) if isinstance(v, (int, float)) and math.isfinite(v) else None


def values(runs: list[dict]) -> list[float]:
    return [v for v in map(value, runs) if v is not None]


def lower_is_better(runs: list[dict]) -> bool:
    return next((r.get("mode", "min") for r in runs if r.get("mode")), "min") == "min"


def check_claim(claim: dict, runs: list[dict], *, margin: float = 0.0, alpha: float = 0.05,
                reduced: bool = False, gradflow: Optional[list] = None) -> dict:
    """-> {"verdict", "why", "ours", "paper", "rows"}: one claim against plain run dicts.
    `reduced`: the runs are shortened (a paper success they miss is inconclusive)."""
    kind = claim["kind"]
    runs = [r for r in runs if matches(r, claim.get("task"))]
    if kind == "beats_baseline":
        return _beats(claim, runs, margin, reduced)
    if kind in WELCH_KINDS:
        return _versus(claim, runs, alpha)
    if kind == "gradflow_ratio":
        return _gradflow_claim(claim, gradflow or [])
    raise ValueError(f"claim {claim.get('id')}: unknown kind {kind!r}")


def baselines(runs: list[dict]) -> list[float]:
    """The task baseline of each run's primary metric, for the runs that record one."""
    bs = ((r.get("baseline") or {}).get(primary_of(r)) for r in runs)
    return [float(b) for b in bs if isinstance(b, (int, float))]


def baseline(runs: list[dict]) -> Optional[float]:
    """The task baseline of the runs' primary metric (from the first run that records one)."""
    return next(iter(baselines(runs)), None)


def _beats(claim, runs, margin, reduced) -> dict:
    mine = [r for r in runs if matches(r, claim["select"])]
    rows, verdicts = [], []
    for T, expected in sorted(((int(t), bool(e)) for t, e in claim["expect"].items())):
        at = [r for r in mine if _same(flatten(r.get("config") or {}).get("task.T"), T)]
        xs, base = values(at), baseline(at)
        div = sum(1 for r in at if r.get("status") == "diverged")   # counted as not beating, never averaged
        paper = "beats" if expected else "does not beat"
        if not (xs or div) or base is None:
            why = "not run" if not at else f"no finished run ({', '.join(sorted({str(r.get('status')) for r in at}))})"
            rows.append({"T": T, "paper": paper, "ours": DASH, "verdict": INCONCLUSIVE, "why": why})
            verdicts.append(None)
            continue
        if xs:
            m = stats.mean(xs)
            beats = m < base * (1 - margin) if lower_is_better(at) else m > base * (1 + margin)
            beats = beats and div < len(xs)   # the finite runs' mean beats, and they outnumber the diverged ones
            ours = f"{'beats' if beats else 'does not beat'} ({num(m)} vs {num(base)}, n={len(xs)}" \
                   + (f"; {div} diverged)" if div else ")")
        else:
            fin = sum(1 for r in at if r.get("status") in FINISHED)   # failed runs finished too
            beats, ours = False, f"does not beat ({div} of {fin} finished runs diverged)"
        if beats == expected:
            v, why = AGREES, ""
            if not expected and reduced:
                why = "weak: a shortened run is biased towards not beating"
        elif expected and reduced:
            v, why = INCONCLUSIVE, "training cut short: the paper's success may need more steps"
        else:
            v, why = DISAGREES, ""
        rows.append({"T": T, "paper": paper, "ours": ours, "verdict": v, "why": why})
        verdicts.append(v)
    run_v = [v for v in verdicts if v is not None]
    missing = [str(r["T"]) for r, v in zip(rows, verdicts) if v is None]
    if DISAGREES in run_v:
        verdict = DISAGREES
        why = "at T=" + ", ".join(str(r["T"]) for r in rows if r["verdict"] == DISAGREES)
    elif not run_v:
        verdict, why = INCONCLUSIVE, "no finished runs"
    elif INCONCLUSIVE in run_v:
        verdict = INCONCLUSIVE
        why = "; ".join(f"T={r['T']}: {r['why']}" for r in rows if r["verdict"] == INCONCLUSIVE and r["ours"] != DASH)
    else:
        verdict, why = AGREES, ""
        if reduced and any(r["paper"] == "does not beat" and r["verdict"] == AGREES for r in rows):
            why = "weak: shortened runs are biased towards not beating"
    if missing and verdict != INCONCLUSIVE or (missing and run_v):
        why = (why + "; " if why else "") + f"checked at T={', '.join(str(r['T']) for r, v in zip(rows, verdicts) if v)} only (T={', '.join(missing)} not run)"
    return {"verdict": verdict, "why": why, "rows": rows,
            "paper": claim.get("text", ""), "ours": "; ".join(f"T={r['T']}: {r['ours']}" for r in rows if r["ours"] != DASH)}


def sides(claim: dict, runs: list[dict]) -> tuple[list[float], list[float]]:
    """The finite values of a Welch claim's variant and reference, among `runs` (its task's)."""
    return values([r for r in runs if matches(r, claim["select"])]), values([r for r in runs if matches(r, claim["ref"])])


def _versus(claim, runs, alpha) -> dict:
    for key, kinds in (("margin", ("not_worse_than_ref", "not_better_than_ref")), ("best", ("not_better_than_ref",))):
        if key in claim and claim["kind"] not in kinds:
            raise ConfigError(f"claim {claim.get('id')}: {key} applies to {' and '.join(kinds)} claims only, "
                              f"not {claim['kind']}")
    bases = {round(b, 12) for b in baselines(runs)}
    if len(bases) > 1:  # pooling e.g. several T would mix tasks of different difficulty
        raise ConfigError(f"claim {claim.get('id')}: its runs span {len(bases)} task baselines "
                         f"({', '.join(num(b) for b in sorted(bases))}); narrow its task selector (e.g. task.T)")
    a, b = sides(claim, runs)
    low = lower_is_better(runs)
    base = {"paper": claim.get("text", ""), "rows": []}
    if len(a) < 2 or len(b) < 2:
        return {**base, "verdict": INCONCLUSIVE, "ours": f"n={len(a)} vs n={len(b)}" + _left_out(runs, claim),
                "why": "fewer than 2 finished seeds on a side: no t-test"}
    ma, mb = stats.mean(a), stats.mean(b)
    base_v = baseline(runs)
    if base_v is not None:  # a comparison between two models that learnt nothing says nothing
        learnt = (lambda m: m < base_v * (1 - LEARNT_MARGIN)) if low else (lambda m: m > base_v * (1 + LEARNT_MARGIN))
        if not learnt(ma) and not learnt(mb):
            return {**base, "verdict": INCONCLUSIVE, "ours": f"{num(ma)} vs {num(mb)}, baseline {num(base_v)}, n={len(a)}/{len(b)}" + _left_out(runs, claim),
                    "why": f"neither variant learnt the task (both means within {LEARNT_MARGIN:.0%} of the trivial baseline, or worse)"}
    p = stats.welch(a, b)
    if p is None:  # both constant
        p = 1.0 if _same(ma, mb) else 0.0
    better = ma < mb if low else ma > mb
    sig = p < alpha
    rel = (ma - mb) / abs(mb) if mb else float("nan")
    ours = f"{num(ma)} vs {num(mb)} ({rel:+.1%}), Welch p={pval(p)}, n={len(a)}/{len(b)}" + _left_out(runs, claim)
    kind = claim["kind"]
    lo, hi = stats.welch_ci(a, b, 1 - alpha)
    ci = f"{(1 - alpha) * 100:g}% interval of the difference from the reference {num(lo)} to {num(hi)}" \
        if lo is not None else "no interval"
    if kind in ("not_worse_than_ref", "not_better_than_ref"):
        word, other = ("worse", "better") if kind == "not_worse_than_ref" else ("better", "worse")
        if sig:
            return {**base, "verdict": DISAGREES, "ours": ours, "why": f"significantly {word} (p < {alpha})"} \
                if better == (word == "better") else {**base, "verdict": AGREES, "ours": ours, "why": f"significantly {other}"}
        m, of = margin_of(claim, mb, base_v, low)
        s = towards(claim, low)   # how far towards `word` the interval reaches
        reach = (0.0 if _same(ma, mb) else None) if lo is None else max(s * lo, s * hi)
        cap, most = "", best_cap(claim, b, low, alpha) if word == "better" else None
        if reach is not None and most is not None and most < reach:   # no mean gets past the metric's best value
            reach, cap = most, (f"; capped at {num(most)}, the distance from the metric's best value ({num(float(claim['best']))}) "
                                f"to the reference's {(1 - alpha) * 100:g}% bound")
        if reach is not None and reach <= m:
            return {**base, "verdict": AGREES, "ours": ours,
                    "why": f"not significantly {word} at p < {alpha}, and at most {num(reach)} {word} ({ci}{cap}): "
                           f"within the margin {num(m)}, {of}"}
        return {**base, "verdict": INCONCLUSIVE, "ours": ours,
                "why": f"not significantly {word} at p < {alpha}, but {NOT_SHOWN}: "
                       + (ci if reach is None else f"up to {num(reach)} {word} ({ci}), beyond the margin {num(m)}, {of}")}
    want_better = kind == "better_than_ref"
    if sig and better == want_better:
        return {**base, "verdict": AGREES, "ours": ours, "why": ""}
    if sig:
        return {**base, "verdict": DISAGREES, "ours": ours,
                "why": f"significantly {'worse' if want_better else 'better'}, the opposite of the paper"}
    return {**base, "verdict": INCONCLUSIVE, "ours": ours,
            "why": f"no significant difference at p < {alpha} (n={len(a)}/{len(b)}; mean {'in' if better == want_better else 'against'} "
                   f"the paper's direction; {ci})"}


NOT_SHOWN = "not shown within the margin"


def towards(claim: dict, low: bool) -> int:
    """+1 or -1: the sign that turns a difference (variant - reference) into how far a not-worse
    (not-better) claim's variant is worse (better)."""
    return 1 if (claim["kind"] == "not_worse_than_ref") == low else -1


def margin_of(claim: dict, ref_mean: float, base_v: Optional[float], low: bool) -> tuple[float, str]:
    """(m, what m is): how much worse (better) a not-worse (not-better) claim's variant may be: the
    claim's `margin` share (default MARGIN) of the reference's gain over the task's trivial
    baseline (the variant keeps 95 % of it), or of the reference's mean without a baseline or a gain."""
    share = claim.get("margin", MARGIN)
    if isinstance(share, bool) or not isinstance(share, (int, float)) or not 0 < share <= 1:
        raise ConfigError(f"claim {claim.get('id')}: margin: {share!r}; allowed: a share in (0, 1], e.g. 0.05")
    gain = None if base_v is None else (base_v - ref_mean if low else ref_mean - base_v)
    if gain is not None and gain > 0:
        return share * gain, f"{share:.0%} of the reference's gain over the task baseline ({num(base_v)})"
    return share * abs(ref_mean), f"{share:.0%} of the reference's mean"


def best_cap(claim: dict, ref: list[float], low: bool, alpha: float) -> Optional[float]:
    """With the claim's `best` (the metric's best possible value, e.g. 0 for a loss): how much better
    than the reference any variant can be, the distance from `best` to the reference's far
    (1 - alpha) bound; None without it."""
    if "best" not in claim:
        return None
    best, mb = claim["best"], stats.mean(ref)
    if isinstance(best, bool) or not isinstance(best, (int, float)) or (mb < best if low else mb > best):
        raise ConfigError(f"claim {claim.get('id')}: best: {best!r}; allowed: the metric's best possible value, a number "
                          f"{'at or below' if low else 'at or above'} every run's (the reference's mean is {num(mb)})")
    lo, hi = stats.t_ci(ref, 1 - alpha)
    return hi - best if low else best - lo


def _left_out(runs: list[dict], claim: dict) -> str:
    """'; left out of the test: 1 diverged (variant), 1 failed (reference)' for the finished runs of
    either side without a finite value (never averaged in), else ''."""
    parts = []
    for side, sel in (("variant", claim["select"]), ("reference", claim["ref"])):
        out: dict = {}
        for r in runs:
            if matches(r, sel) and r.get("status") in FINISHED and value(r) is None:
                st = "done without a finite metric" if r.get("status") == "done" else str(r.get("status"))
                out[st] = out.get(st, 0) + 1
        parts += [f"{n} {st} ({side})" for st, n in sorted(out.items())]
    return f"; left out of the test: {', '.join(parts)}" if parts else ""


def _gradflow_claim(claim, curves: list[dict]) -> dict:
    """`curves`: [{"config": {"model": {...}}, "phase": "init", "norm": [...by lag...]}, ...]."""
    base = {"paper": claim.get("text", ""), "rows": []}
    curves = [c for c in curves if matches(c, claim.get("task"))]

    def lasts(sel):
        return [c["norm"][-1] for c in curves if c.get("phase", "init") == "init" and matches(c, sel) and c.get("norm")]
    la, lb = lasts(claim["select"]), lasts(claim["ref"])
    a, b = (stats.mean(v) if v else None for v in (la, lb))
    if a is None or b is None:
        return {**base, "verdict": INCONCLUSIVE, "ours": DASH, "why": "gradient flow not measured"}
    ratio = a / b if b > 0 else float("inf")
    ours = (f"at each run's largest lag, mean over the seed-0 runs at init (n={len(la)}/{len(lb)}): "
            f"{a:.3g} vs {b:.3g} (ratio {ratio:.3g})")
    ok = ratio >= float(claim.get("min_ratio", 1.0))
    return {**base, "verdict": AGREES if ok else DISAGREES, "ours": ours,
            "why": "" if ok else f"ratio below {claim.get('min_ratio')}"}



# ---------------------------------------------------------------- claims files


def load_claims(name_or_path) -> dict:
    p = Path(name_or_path)
    if not p.is_file():
        p = SWEEPS / f"paper_{name_or_path}.claims.yaml"
    return yaml.safe_load(p.read_text())


def all_claims() -> list[dict]:
    return [yaml.safe_load(p.read_text()) for p in sorted(SWEEPS.glob("paper_*.claims.yaml"))]
