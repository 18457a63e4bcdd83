"""Tokenizers (whitespace, basic regex, characters, pre-tokenised) and a cached token column."""
from __future__ import annotations

import re
from typing import Optional


_BASIC = re.compile(r"[\w']+|[^\w\s]")
_BR = re.compile(r"<br\s*/?>", re.I)


def tokenize(value, mode: str = "whitespace", lowercase: bool = False) -> list[str]:
    """A string (or an already tokenised list) -> tokens."""
    if isinstance(value, (list, tuple)):
        toks = [str(t) for t in value]
        return [t.lower() for t in toks] if lowercase else toks
    if value is None:
        return []
    text = value.lower() if lowercase else value
    if mode == "whitespace":
        return text.split()
    if mode == "basic":
        return _BASIC.findall(_BR.sub(" ", text))
    if mode == "chars":
        return list(text)
    if mode == "none":
        raise ValueError("tokenizer 'none' needs a column of token lists, got a string")
    raise ValueError(f"unknown tokenizer {mode!r}")


def _tok_map(column: str, out: str, mode: str, lowercase: bool, max_len: Optional[int], tail: bool):
    def fn(batch):
        toks = [tokenize(v, mode, lowercase) for v in batch[column]]
        if max_len is not None:
            toks = [t[-max_len:] if tail else t[:max_len] for t in toks]
        return {out: toks}
    return fn


def token_column(ds, column: str, mode: str = "whitespace", lowercase: bool = False,
                 max_len: Optional[int] = None, out: str = "_tokens", truncate: str = "head"):
    """Add a token-list column `out` (cached `Dataset.map`, deterministic fingerprint);
    `max_len` keeps the first (truncate="head") or last ("tail") tokens."""
    return ds.map(_tok_map(column, out, mode, lowercase, max_len, truncate == "tail"),
                  batched=True, desc="tokenize")
