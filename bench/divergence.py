"""Divergence without a NaN: a loss that stays finite but explodes (ReLU/identity-init RNNs reach
1e16-1e28 on copy at T = 500) has diverged as surely as one that turns NaN.

    exploded(key, value, baseline, factor) -> 'KEY VALUE > FACTOR x baseline B' or None
    at_validation(cfg, result, val) -> why a validation ends the run as diverged, or None
    StopWhenExploded(cfg, result)      the Lightning callback of bench.train (raises tasks.base.Diverged)

`trainer.divergence_factor` (default EXPLODED; null = off; only with `stop_on_divergence`) ends a
run as `diverged` at the first validation whose loss, the val/ twin of a primary loss metric (mode
min), is finite but beyond that multiple of the task's baseline of the metric on the validation
split (`Task.val_baseline`, recorded as the result's `val_baseline`), else on the test split
(synthetic tasks: the same distribution, one baseline); a packed member is
dropped there the same way (bench/packed.py). Checked at validations only: training-loss spikes
that recovered reached 1658x in the published copy runs. reports.collect applies the same bound
to the final metric of runs recorded `done` before the check existed.
"""
from __future__ import annotations

import math
from typing import Optional

import lightning as L

from tasks.base import Diverged

# In the published copy runs (reports/published/copy), the runs that learnt or sat at the baseline
# never exceeded 8.2x the baseline at any validation; the exploded IRNN runs sat at 1e18x-1e29x
# from the first validation on
EXPLODED = 1000.0


def exploded(key: str, value, baseline, factor: Optional[float] = EXPLODED, what: str = "baseline") -> Optional[str]:
    """'KEY VALUE > FACTOR x baseline B' when a loss is finite but beyond `factor` x its task's
    baseline, else None (also for factor None or a missing number)."""
    if factor is None or not all(isinstance(x, (int, float)) for x in (value, baseline)):
        return None
    if baseline > 0 and math.isfinite(value) and value > factor * baseline:
        return f"{key} {value:.3g} > {factor:g} x {what} {baseline:.4g}"
    return None


def at_validation(cfg, result: dict, val: dict) -> Optional[str]:
    """Why this validation's metrics `val` end the run as diverged (trainer.divergence_factor), from
    the run's record `result` (primary, mode, baseline); None to go on."""
    t = cfg.trainer
    primary = result.get("primary") or ""
    if not t.stop_on_divergence or result.get("mode") != "min" or "/" not in primary:
        return None
    key = "val/" + primary.split("/", 1)[1]
    v = None if val.get(key) is None else float(val[key])
    if v is not None and not math.isfinite(v):   # the training loss can stay finite (e.g. 5e35) while it does
        return f"{key} became {v}"
    own = (result.get("val_baseline") or {}).get(key)
    if own is not None:
        return exploded(key, v, own, t.divergence_factor, "validation baseline")
    return exploded(key, v, (result.get("baseline") or {}).get(primary), t.divergence_factor)


class StopWhenExploded(L.Callback):
    """bench.train's check of `at_validation` after each validation: raises Diverged (recorded
    `diverged` at that step, before that validation's checkpoint is written)."""

    def __init__(self, cfg, result: dict):
        self.cfg, self.result = cfg, result

    def on_validation_end(self, trainer, pl_module) -> None:
        val = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/") and v.numel() == 1}
        why = at_validation(self.cfg, self.result, val)
        if why:
            step = int(trainer.global_step)
            raise Diverged(step, val[why.split()[0]], f"{why} at step {step}")
