"""Word vectors (gensim word2vec) trained on the text of a task's data set, written in the
word2vec text format that `task.embeddings` reads: `rnnbench vectors CONFIG --out FILE`.

The text comes through the task's own loader and tokenizer (hub or local files, the same code
path as training), from the training split by default; labels are never read. Needs gensim
(`pip install -e '.[vectors]'`). With one worker the same corpus, options and seed give the same
file in any process (tests/test_vectors.py checks it under two PYTHONHASHSEEDs).
"""
from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

from bench.schema import ConfigError
from tasks.text import column_list, load_splits, token_column

SPLITS = ("train", "validation", "test")


def sentences(task_cfg, splits=("train",)) -> list[list[str]]:
    for s in splits:
        if s not in SPLITS:
            raise ConfigError(f"--splits: invalid value {s!r}; allowed: {', '.join(SPLITS)}")
    c = task_cfg
    raw = load_splits(c, need=[c.text_column])
    out = []
    for s in splits:
        ds = token_column(raw[s], c.text_column, c.tokenizer, c.lowercase)
        out += [t for t in column_list(ds, "_tokens") if t]
    return out


def train_vectors(sents, out, dim=300, window=5, min_count=5, epochs=5, sg=False, seed=0, workers=1) -> int:
    """Train word2vec on token lists and write `out`; returns the number of words."""
    try:
        from gensim.models import Word2Vec  # optional dependency: pip install -e '.[vectors]'
    except ImportError:
        raise ConfigError("rnnbench vectors: needs gensim; pip install -e '.[vectors]'") from None
    if not any(n >= min_count for n in Counter(t for sent in sents for t in sent).values()):
        raise ConfigError(f"--min-count: no word occurs {min_count} times in the {len(sents)} texts")
    model = Word2Vec(sents, vector_size=dim, window=window, min_count=min_count, epochs=epochs, sg=int(sg),
                     seed=seed, workers=workers)
    tmp = Path(f"{out}.tmp")
    model.wv.save_word2vec_format(str(tmp), binary=False)
    os.replace(tmp, out)                       # a half-written file never replaces a good one
    return len(model.wv)
