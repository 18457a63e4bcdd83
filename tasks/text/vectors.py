"""Pretrained word vectors (GloVe / word2vec text files) for a family's word embedding."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch

from bench.schema import ConfigError, opt
from tasks.text.config import TextDataConfig
from tasks.text.parsers import open_text
from tasks.text.vocab import Vocab


@dataclass
class WordVectorsConfig(TextDataConfig):
    """TextDataConfig plus pretrained word vectors (families whose module has a word `embed`)."""

    embeddings: Optional[str] = opt(None, none_is_null=True, help="pretrained word vectors file (GloVe / word2vec text, .gz ok) "
                                    "for the training-vocab words; width = model.embedding_size")
    freeze_embeddings: bool = opt(False, help="with embeddings: keep the word vectors fixed")


VECTORS_HELP = ("word vectors as text, one 'word v1 ... vD' a line (GloVe; the word2vec text format's "
                "'count dim' first line is skipped), .gz allowed")


def load_vectors(path, vocab: "Vocab", dim: int, field: str = "task.embeddings") -> dict[str, list[float]]:
    """Vectors of the `vocab` words found in a GloVe / word2vec text file (first occurrence wins)."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise ConfigError(f"{field}: file {p} not found; expected {VECTORS_HELP}")
    rows: dict[str, list[float]] = {}
    with open_text(p) as f:
        for i, line in enumerate(f, 1):
            parts = line.rstrip("\n").rstrip(" ").split(" ")
            if i == 1 and len(parts) == 2 and all(x.isdigit() for x in parts):
                continue
            if len(parts) != dim + 1:
                raise ValueError(f"{p} line {i}: {len(parts) - 1} numbers, but model.embedding_size is {dim}; "
                                 f"expected {VECTORS_HELP}")
            if parts[0] in vocab and parts[0] not in rows:
                try:
                    rows[parts[0]] = [float(x) for x in parts[1:]]
                except ValueError:
                    raise ValueError(f"{p} line {i}: malformed; expected {VECTORS_HELP}") from None
    return rows


def init_embedding(embed: torch.nn.Embedding, vocab: "Vocab", path, freeze: bool = False,
                   field: str = "task.embeddings") -> dict:
    """Start the rows of `vocab` words found in the vectors file from their vectors; the other rows
    keep their init, rescaled to the vectors' standard deviation; the pad row is zero. `freeze`
    stops their training. Returns {"embeddings": path, "sha256", "words_found", "vocab_size"}."""
    rows = load_vectors(path, vocab, embed.embedding_dim, field)
    if not rows:
        raise ConfigError(f"{field}: no word of the training vocabulary is in {path}")
    vec = torch.tensor(list(rows.values()), dtype=embed.weight.dtype)
    idx = torch.tensor([vocab[w] for w in rows])
    with torch.no_grad():
        w = embed.weight
        w.mul_(vec.std() / w.std().clamp(min=1e-12))
        w[idx] = vec
        if embed.padding_idx is not None:
            w[embed.padding_idx] = 0
    embed.weight.requires_grad_(not freeze)
    digest = hashlib.sha256()
    with open(Path(path).expanduser(), "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return {"embeddings": str(path), "sha256": digest.hexdigest(), "words_found": len(rows), "vocab_size": len(vocab)}


class WordVectorsTask:
    """Task mixin: `task.embeddings` into `module.embed`, for the datamodule's "word" vocabulary."""

    def pretrained(self, module) -> dict:
        if not self.cfg.embeddings:
            return {}
        dm = self.datamodule()
        dm.setup()
        return init_embedding(module.embed, dm.vocabs["word"], self.cfg.embeddings, self.cfg.freeze_embeddings)
