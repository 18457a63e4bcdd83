"""Data sources: one `datasets.load_dataset` path for local files and for the hub, ending in
train/validation/test splits with the configured columns (see tasks/text/__init__.py)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Optional, Sequence

import datasets

from bench.schema import ConfigError
from tasks.text.parsers import FORMAT_HELP, PARSERS

ENV_DATA = "RNNBENCH_DATA"


def local_root(cfg) -> Optional[Path]:
    """The local data root (cfg.data_dir, else $RNNBENCH_DATA) when local files are to be used."""
    root = getattr(cfg, "data_dir", None) or os.environ.get(ENV_DATA)
    if not root or not getattr(cfg, "data_files", None):
        if getattr(cfg, "data_dir", None):
            raise ConfigError("task.data_files: empty, but task.data_dir is set; "
                              "allowed: a mapping split -> file, e.g. {train: train.jsonl}")
        return None
    return Path(root).expanduser()


def resolve_files(cfg, root: Path, path: str = "task.") -> dict[str, list[str]]:
    """Our split -> list of absolute file paths, each checked to exist."""
    out = {}
    for split, files in cfg.data_files.items():
        if files is None:
            continue
        files = [files] if isinstance(files, str) else list(files)
        full = []
        for f in files:
            p = Path(f).expanduser()
            p = p if p.is_absolute() else root / p
            if not p.is_file():
                raise ConfigError(f"{path}data_files.{split}: file {p} not found; "
                                  f"expected {FORMAT_HELP.get(cfg.format, cfg.format)}")
            full.append(str(p))
        out[split] = full
    if "train" not in out:
        raise ConfigError(f"{path}data_files: no 'train' entry; allowed keys: train, validation, test")
    return out


def _gen(parser: str, files: tuple, stamp: str, options: dict):
    """Top-level (picklable, hashable) generator for Dataset.from_generator; `stamp` (sizes and
    mtimes) is only there so that a changed file gets a new cache fingerprint."""
    yield from PARSERS[parser](list(files), **options)


def _stamp(files: Sequence[str]) -> str:
    return ";".join(f"{f}:{os.stat(f).st_size}:{os.stat(f).st_mtime_ns}" for f in files)


def _load_local(cfg, root: Path, path: str):
    files = resolve_files(cfg, root, path)
    fmt = cfg.format
    out = {}
    for split, fl in files.items():
        try:
            if fmt in PARSERS:
                options = {"text_column": cfg.text_column, "label_column": cfg.label_column,
                           "columns": getattr(cfg, "columns", None)}
                ds = datasets.Dataset.from_generator(
                    _gen, gen_kwargs={"parser": fmt, "files": tuple(fl), "stamp": _stamp(fl),
                                      "options": options})
            else:
                ds = datasets.load_dataset(fmt, data_files={split: fl}, split=split)
        except Exception as e:  # datasets may wrap a parser's error in its own exception types
            cause, depth = e, 0
            while cause is not None and depth < 20:
                depth += 1
                msg = str(cause).splitlines()[0] if str(cause) else ""
                if isinstance(cause, ValueError) and any(f in msg for f in fl):
                    raise (ConfigError if isinstance(cause, ConfigError) else ValueError)(msg) from None
                cause = cause.__cause__ or cause.__context__
            raise ValueError(f"{', '.join(fl)}: could not be read as {fmt}; "
                             f"expected {FORMAT_HELP.get(fmt, fmt)}") from None
        if len(ds) == 0:
            raise ValueError(f"{', '.join(fl)}: no examples; expected {FORMAT_HELP.get(fmt, fmt)}")
        out[split] = ds
    return out, {s: ", ".join(f) for s, f in files.items()}


def _load_hub(cfg, path: str):
    if not cfg.dataset:
        raise ConfigError(f"{path}dataset: empty and no local data (set {path}data_dir or "
                          f"${ENV_DATA} with {path}data_files); allowed: a hub id, e.g. stanfordnlp/imdb")
    out = {}
    for ours, theirs in cfg.splits.items():
        if theirs is None:
            continue
        out[ours] = datasets.load_dataset(cfg.dataset, cfg.hub_config, split=theirs,
                                          revision=cfg.hub_revision)
    if "train" not in out:
        raise ConfigError(f"{path}splits: no 'train' entry; allowed keys: train, validation, test")
    return out, {s: f"{cfg.dataset}[{cfg.splits[s]}]" for s in out}


def _class_names(feature):
    """Names of a ClassLabel feature or of a sequence of ClassLabel; None otherwise."""
    if isinstance(feature, datasets.ClassLabel):
        return feature.names, False
    inner = getattr(feature, "feature", None)
    if isinstance(feature, (list, datasets.Sequence)) or inner is not None:
        inner = feature[0] if isinstance(feature, list) else inner
        if isinstance(inner, datasets.ClassLabel):
            return inner.names, True
    hf_list = getattr(datasets, "List", None)           # datasets >= 4 has a List feature type
    if hf_list is not None and isinstance(feature, hf_list) and isinstance(feature.feature, datasets.ClassLabel):
        return feature.feature.names, True
    return None, False


def _names_map(column: str, names: list, seq: bool):
    def fn(batch):
        if seq:
            return {column: [[names[i] for i in row] for row in batch[column]]}
        return {column: [names[i] if i is not None and i >= 0 else None for i in batch[column]]}
    return fn


def class_labels_to_names(ds, columns: Iterable[str]):
    """Replace ClassLabel ints by their names in `columns` (hub data sets store labels as ints)."""
    for col in columns:
        if col not in ds.column_names:
            continue
        names, seq = _class_names(ds.features[col])
        if names is not None:
            feats = ds.features.copy()
            feats[col] = datasets.Sequence(datasets.Value("string")) if seq else datasets.Value("string")
            ds = ds.map(_names_map(col, list(names), seq), batched=True, features=feats,
                        desc=f"names of {col}")
    return ds


def load_splits(cfg, path: str = "task.", need: Sequence[str] = ()):
    """Load train/validation/test as a `datasets.DatasetDict` (see the module docstring).
    `need`: column names that must exist (default: cfg.text_column and cfg.label_column)."""
    root = local_root(cfg)
    raw, where = _load_local(cfg, root, path) if root is not None else _load_hub(cfg, path)
    need = list(need) or [cfg.text_column, cfg.label_column]
    for split, ds in raw.items():
        for col in need:
            if col not in ds.column_names:
                keys = [k for k, v in getattr(cfg, "__dict__", {}).items() if v == col]
                keys = ([k for k in keys if "column" in k] or
                        [k for k in keys if k not in ("name", "format", "tokenizer", "dataset")] or ["columns"])
                key = keys[0]
                raise ConfigError(f"{path}{key}: column {col!r} not in {where[split]}; "
                                  f"available: {', '.join(ds.column_names)}")
        raw[split] = class_labels_to_names(ds, need[1:])
    if "validation" not in raw:
        parts = raw["train"].train_test_split(test_size=cfg.val_fraction, seed=cfg.data_seed, shuffle=True)
        raw["train"], raw["validation"] = parts["train"], parts["test"]
    if "test" not in raw:
        raise ConfigError(f"{path}data_files: no 'test' split; allowed keys: train, validation, test")
    for split in ("train", "validation", "test"):
        cap = cfg.max_train if split == "train" else cfg.max_eval
        if cap is not None and len(raw[split]) > cap:
            if getattr(cfg, "subsample", "first") == "random":
                raw[split] = raw[split].shuffle(seed=cfg.data_seed)
            raw[split] = raw[split].select(range(cap))
    return datasets.DatasetDict({s: raw[s] for s in ("train", "validation", "test")})


def column_list(ds, name: str) -> list:
    """A column as a plain Python list (fast; `ds[name]` is a lazy Column in datasets >= 4)."""
    return ds.select_columns([name])[:][name] if len(ds) else []
