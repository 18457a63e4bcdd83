"""Vocabularies: token <-> id, built from the training split only, saved as plain dicts."""
from __future__ import annotations

import re
from collections import Counter
from typing import Iterable, Optional, Sequence

PAD, UNK, BOS, EOS = "<pad>", "<unk>", "<bos>", "<eos>"


class Vocab:
    """Token <-> id. Ids: specials first (in the given order), then tokens by descending training
    frequency, ties alphabetical -- deterministic. `unk=None` makes unknown tokens an error."""

    def __init__(self, itos: Sequence[str], unk: Optional[str] = UNK, pad: Optional[str] = PAD):
        self.itos = list(itos)
        self.stoi = {t: i for i, t in enumerate(self.itos)}
        if len(self.stoi) != len(self.itos):
            raise ValueError("vocabulary has duplicate tokens")
        self.unk = unk if unk in self.stoi else None
        self.pad = pad if pad in self.stoi else None

    @classmethod
    def build(cls, token_lists: Iterable[Iterable[str]], min_freq: int = 1, max_size: Optional[int] = None,
              specials: Sequence[str] = (PAD, UNK), unk: Optional[str] = UNK, pad: Optional[str] = PAD) -> "Vocab":
        counts = Counter()
        for toks in token_lists:
            counts.update(toks)
        for s in specials:
            counts.pop(s, None)
        items = sorted(((t, c) for t, c in counts.items() if c >= min_freq), key=lambda tc: (-tc[1], tc[0]))
        if max_size is not None:
            items = items[:max(0, max_size - len(specials))]
        return cls(list(specials) + [t for t, _ in items], unk=unk, pad=pad)

    @classmethod
    def labels(cls, values: Iterable) -> "Vocab":
        """A label set: no specials; numeric order when all labels are integers, else alphabetical."""
        vals = {str(v) for v in values}
        if all(re.fullmatch(r"-?\d+", v) for v in vals):
            order = sorted(vals, key=int)
        else:
            order = sorted(vals)
        return cls(order, unk=None, pad=None)

    def __len__(self) -> int:
        return len(self.itos)

    def __contains__(self, token) -> bool:
        return token in self.stoi

    def __getitem__(self, token) -> int:
        i = self.stoi.get(token)
        if i is None:
            if self.unk is None:
                raise KeyError(f"{token!r} not in vocabulary (and no unknown token)")
            return self.stoi[self.unk]
        return i

    @property
    def unk_id(self) -> Optional[int]:
        return None if self.unk is None else self.stoi[self.unk]

    @property
    def pad_id(self) -> Optional[int]:
        return None if self.pad is None else self.stoi[self.pad]

    def encode(self, tokens: Iterable[str]) -> list[int]:
        return [self[t] for t in tokens]

    def decode(self, ids: Iterable[int]) -> list[str]:
        return [self.itos[int(i)] for i in ids]

    def to_dict(self) -> dict:
        return {"itos": list(self.itos), "unk": self.unk, "pad": self.pad}

    @classmethod
    def from_dict(cls, d: dict) -> "Vocab":
        return cls(d["itos"], unk=d.get("unk"), pad=d.get("pad"))

    def __eq__(self, other) -> bool:
        return isinstance(other, Vocab) and self.to_dict() == other.to_dict()

    def __repr__(self) -> str:
        return f"Vocab({len(self)} tokens, unk={self.unk!r}, pad={self.pad!r})"


def char_vocab(token_lists: Iterable[Iterable[str]], min_freq: int = 1) -> Vocab:
    """Character vocabulary over the words of `token_lists` (pass the training split only)."""
    return Vocab.build(((ch for tok in toks for ch in tok) for toks in token_lists), min_freq=min_freq)
