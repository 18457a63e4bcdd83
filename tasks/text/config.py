"""The data-source, vocabulary and batching fields every text family's Config shares."""
from __future__ import annotations

import codecs
from dataclasses import dataclass
from typing import Optional

from bench.schema import ConfigError, opt
from tasks.text.parsers import BUILDERS, PARSERS


@dataclass
class TextDataConfig:
    """Data-source, vocabulary and batching fields; a family's Config subclasses this and adds
    `name` and its own fields. Any other object with these attributes works with `load_splits`."""

    dataset: str = opt("", help="hub data set id (used when no local data dir is set)")
    hub_config: Optional[str] = opt(None, none_is_null=True, help="hub subset/config name, e.g. en_ewt")
    hub_revision: Optional[str] = opt(None, none_is_null=True, help="hub revision, e.g. refs/convert/parquet")
    splits: dict = opt({"train": "train", "validation": "validation", "test": "test"},
                       help="our split -> hub split name; validation null = carve from train")
    data_dir: Optional[str] = opt(None, none_is_null=True, help="local data root; default $RNNBENCH_DATA; null+unset = hub")
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
    encoding: str = opt("utf-8", help="text encoding of the local files, e.g. latin-1, cp1252 "
                        "(any Python codec name)", new=True)
    test_fraction: Optional[float] = opt(None, gt=0, lt=1, new=True,
                                         help="no test file: carve this share of train as test (seeded by data_seed)")
    folds: Optional[int] = opt(None, ge=2, new=True, help="no test file: k-fold cross-validation, test = fold "
                               "task.fold of the train file (folds drawn with data_seed); sweep over task.fold")
    fold: int = opt(0, ge=0, new=True, help="with folds: which fold is the test split (0 .. folds-1)")

    def check(self, path: str) -> None:
        try:
            codecs.lookup(self.encoding)
        except LookupError:
            raise ConfigError(f"{path}encoding: invalid value {self.encoding!r}; allowed: a Python codec "
                              f"name, e.g. utf-8, latin-1, cp1252") from None
        if self.folds is not None and self.test_fraction is not None:
            raise ConfigError(f"{path}folds: conflicts with test_fraction; allowed: one of them")
        if self.folds is None and self.fold != 0:
            raise ConfigError(f"{path}fold: {self.fold} without task.folds; allowed: 0, or set task.folds")
        if self.folds is not None and self.fold >= self.folds:
            raise ConfigError(f"{path}fold: invalid value {self.fold}; allowed: 0 .. {self.folds - 1} "
                              f"(task.folds={self.folds})")
        if (self.folds or self.test_fraction) and self.data_files and self.data_files.get("test"):
            key = "folds" if self.folds else "test_fraction"
            raise ConfigError(f"{path}{key}: the data has a test file (task.data_files.test); "
                              f"allowed: null, or task.data_files.test=null to carve the test split from train")
