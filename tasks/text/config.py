"""The data-source, vocabulary and batching fields every text family's Config shares."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from bench.schema import opt
from tasks.text.parsers import BUILDERS, PARSERS


@dataclass
class TextDataConfig:
    """Data-source, vocabulary and batching fields; a family's Config subclasses this and adds
    `name` and its own fields. Any other object with these attributes works with `load_splits`."""

    dataset: str = opt("", help="hub data set id (used when no local data dir is set)")
    hub_config: Optional[str] = opt(None, help="hub subset/config name, e.g. en_ewt")
    hub_revision: Optional[str] = opt(None, help="hub revision, e.g. refs/convert/parquet")
    splits: dict = opt({"train": "train", "validation": "validation", "test": "test"},
                       help="our split -> hub split name; validation null = carve from train")
    data_dir: Optional[str] = opt(None, help="local data root; default $RNNBENCH_DATA; null+unset = hub")
    format: str = opt("json", choices=lambda: list(BUILDERS) + list(PARSERS),
                      help="local format: a datasets builder or a parser from tasks.text.PARSERS")
    data_files: dict = opt({}, help="our split -> file (or list) relative to the data dir")
    columns: Optional[list] = opt(None, help="format 'conll': names of the whitespace columns")
    text_column: str = opt("text", help="column holding the text (string) or tokens (list)")
    label_column: str = opt("label", help="column holding the label(s)")
    tokenizer: str = opt("whitespace", choices=("whitespace", "basic", "chars", "none"),
                         help="how a string text column becomes tokens")
    lowercase: bool = opt(False)
    max_len: Optional[int] = opt(None, ge=1, help="truncate token sequences to this length")
    truncate: str = opt("head", choices=("head", "tail"), help="max_len keeps the first (head) or last (tail) tokens")
    min_freq: int = opt(1, ge=1, help="vocabulary: minimum training-split frequency")
    max_vocab: Optional[int] = opt(None, ge=1, help="vocabulary: keep the most frequent N")
    val_fraction: float = opt(0.1, gt=0, lt=1, help="validation share carved from train when none exists")
    data_seed: int = opt(1234, ge=0, help="seed of the validation carve (evaluation data)")
    max_train: Optional[int] = opt(None, ge=1, help="keep the first N training examples")
    max_eval: Optional[int] = opt(None, ge=1, help="keep the first N validation/test examples")
    subsample: str = opt("first", choices=("first", "random"),
                         help="max_train/max_eval keep the first N, or N drawn with data_seed (files sorted by label)")
    batch_size: int = opt(32, ge=1)
    eval_batch_size: Optional[int] = opt(None, ge=1, help="default: batch_size")
    bucket_pool: int = opt(50, ge=1, help="batches per length-sorted pool (1 = no bucketing)")
