"""Labels (sentiment) and tags (tagging) that the training split never has: fall back or stop."""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Optional

from bench.schema import ConfigError, opt
from tasks.text.vocab import Vocab


@dataclass
class LabelsConfig:
    """What to do with a label (sentiment) or tag (tagging) that the training split never has."""

    unseen_labels: str = opt("fallback", choices=("fallback", "error"), new=True,
                             help="a validation/test label not in training: map it to fallback_label (and "
                             "count it in result.json under data.unseen), or stop with an error")
    fallback_label: Optional[str] = opt(None, new=True,
                                        help="unseen_labels=fallback: the label used; null = the most frequent training label")


def handle_unseen(values: dict, known: "Vocab", train: Counter, cfg, column: str, what: str = "label"):
    """`values`: split -> iterable of label strings. Returns (fallback label, record for result.json);
    raises with `cfg.unseen_labels == "error"` when a split has a label not in `known`."""
    unseen = {}
    for split, vals in values.items():
        c = Counter(v for v in vals if v not in known)
        if c:
            unseen[split] = dict(sorted(c.items()))
    fallback = cfg.fallback_label
    if fallback is None:
        fallback = min(train.items(), key=lambda kv: (-kv[1], kv[0]))[0]
    elif fallback not in known:
        raise ConfigError(f"task.fallback_label: invalid value {fallback!r}; allowed: a training {what}: "
                          f"{', '.join(known.itos[:20])}")
    if unseen and cfg.unseen_labels == "error":
        split, c = next(iter(unseen.items()))
        raise ValueError(f"{split} split: {what}(s) {', '.join(list(c)[:5])} not among the training {what}s "
                         f"{', '.join(known.itos[:20])} (column {column!r}); allowed: task.unseen_labels=fallback maps them to {fallback!r}")
    record = {"mode": cfg.unseen_labels, "fallback": fallback, "unseen": unseen}
    return fallback, record
