"""Data sources: one `datasets.load_dataset` path for local files and for the hub, ending in
train/validation/test splits with the configured columns (see tasks/text/__init__.py)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Optional, Sequence

import datasets
import torch

from bench.schema import ConfigError
from tasks.text.parsers import FORMAT_HELP, PARSERS, check_file

ENV_DATA = "RNNBENCH_DATA"


def local_root(cfg) -> Optional[Path]:
    """The local data root when local files are to be used: whenever `cfg.data_files` names files
    (local files win; the hub is never used in their place), cfg.data_dir, else $RNNBENCH_DATA,
    else the current directory. None (the hub) only with no data_files."""
    root = getattr(cfg, "data_dir", None) or os.environ.get(ENV_DATA)
    if not getattr(cfg, "data_files", None):
        if getattr(cfg, "data_dir", None):
            raise ConfigError("task.data_files: empty, but task.data_dir is set; "
                              "allowed: a mapping split -> file, e.g. {train: train.jsonl}")
        return None
    return Path(root).expanduser() if root else Path.cwd()


def resolve_files(cfg, root: Path, path: str = "task.") -> dict[str, list[str]]:
    """Our split -> list of absolute file paths, each checked to exist."""
    out = {}
    unset = not (getattr(cfg, "data_dir", None) or os.environ.get(ENV_DATA))
    for split, files in cfg.data_files.items():
        if files is None:
            continue
        files = [files] if isinstance(files, str) else list(files)
        full = []
        for f in files:
            p = Path(f).expanduser()
            p = p if p.is_absolute() else root / p
            if not p.is_file():
                where = ""
                if unset and not Path(f).expanduser().is_absolute():
                    hub = f"; to use the hub data set {cfg.dataset} instead, set {path}data_files={{}}" \
                        if getattr(cfg, "dataset", "") else ""
                    where = f" (relative to the current directory: neither {path}data_dir nor ${ENV_DATA} is set{hub})"
                fmt = getattr(cfg, "format", "csv")  # the time-series family reads CSV only
                raise ConfigError(f"{path}data_files.{split}: file {p} not found{where}; "
                                  f"expected {FORMAT_HELP.get(fmt, fmt)}")
            full.append(str(p))
        out[split] = full
    if "train" not in out:
        raise ConfigError(f"{path}data_files: no 'train' entry; allowed keys: train, validation, test")
    return out


def check_files(cfg, path: str = "task.") -> None:
    """Check the local files of `cfg` (exist, not empty, readable in task.encoding) before any
    work; a no-op for hub data."""
    root = local_root(cfg)
    if root is None:
        return
    for files in resolve_files(cfg, root, path).values():
        for f in files:
            check_file(f, cfg.format, getattr(cfg, "encoding", "utf-8"))


def _gen(parser: str, files: tuple, stamp: str, options: dict):
    """Top-level (picklable, hashable) generator for Dataset.from_generator; `stamp` (sizes and
    mtimes) is only there so that a changed file gets a new cache fingerprint."""
    yield from PARSERS[parser](list(files), **options)


def _stamp(files: Sequence[str]) -> str:
    return ";".join(f"{f}:{os.stat(f).st_size}:{os.stat(f).st_mtime_ns}" for f in files)


def _load_local(cfg, root: Path, path: str):
    files = resolve_files(cfg, root, path)
    fmt, encoding = cfg.format, getattr(cfg, "encoding", "utf-8")
    for fl in files.values():
        for f in fl:
            check_file(f, fmt, encoding)
    out = {}
    for split, fl in files.items():
        try:
            if fmt in PARSERS:
                options = {"text_column": cfg.text_column, "label_column": cfg.label_column,
                           "columns": getattr(cfg, "columns", None)}
                if encoding != "utf-8":  # only when set: the datasets cache keys of utf-8 data stay
                    options["encoding"] = encoding
                ds = datasets.Dataset.from_generator(
                    _gen, gen_kwargs={"parser": fmt, "files": tuple(fl), "stamp": _stamp(fl),
                                      "options": options})
            else:
                kw = {"encoding": encoding} if fmt != "parquet" and encoding != "utf-8" else {}
                ds = datasets.load_dataset(fmt, data_files={split: fl}, split=split, **kw)
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
    if "test" not in raw:
        raw["train"], raw["test"] = carve_test(raw["train"], cfg, path)
    if "validation" not in raw:
        parts = raw["train"].train_test_split(test_size=cfg.val_fraction, seed=cfg.data_seed, shuffle=True)
        raw["train"], raw["validation"] = parts["train"], parts["test"]
    for split in ("train", "validation", "test"):
        cap = cfg.max_train if split == "train" else cfg.max_eval
        if cap is not None and len(raw[split]) > cap:
            if getattr(cfg, "subsample", "first") == "random":
                raw[split] = raw[split].shuffle(seed=cfg.data_seed)
            raw[split] = raw[split].select(range(cap))
    return datasets.DatasetDict({s: raw[s] for s in ("train", "validation", "test")})


def carve_test(ds, cfg, path: str = "task."):
    """(train, test) from one training set: `cfg.test_fraction` drawn with `cfg.data_seed`, or fold
    `cfg.fold` of `cfg.folds` (a permutation drawn with data_seed cut into `folds` near-equal parts:
    over fold = 0 .. folds-1 every example is tested exactly once)."""
    folds, frac = getattr(cfg, "folds", None), getattr(cfg, "test_fraction", None)
    if folds:
        n = len(ds)
        if n < folds:
            raise ValueError(f"{path}folds: {folds} folds, but the training data has {n} examples")
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(cfg.data_seed)).tolist()
        a, b = cfg.fold * n // folds, (cfg.fold + 1) * n // folds
        test = set(perm[a:b])
        return ds.select([i for i in range(n) if i not in test]), ds.select(sorted(test))
    if frac:
        parts = ds.train_test_split(test_size=frac, seed=cfg.data_seed, shuffle=True)
        return parts["train"], parts["test"]
    raise ConfigError(f"{path}data_files: no 'test' split; allowed: a test entry (train, validation, test), "
                      f"or carve one from train with {path}test_fraction=0.1 or {path}folds=10")


def column_list(ds, name: str) -> list:
    """A column as a plain Python list (fast; `ds[name]` is a lazy Column in datasets >= 4)."""
    return ds.select_columns([name])[:][name] if len(ds) else []


def sources(cfg, path: str = "task.") -> dict:
    """split -> where its data comes from (local files, or hub id[split]), for result.json."""
    root = local_root(cfg)
    if root is None:
        return {s: f"{cfg.dataset}[{h}]" for s, h in cfg.splits.items() if h is not None}
    return {s: ", ".join(f) for s, f in resolve_files(cfg, root, path).items()}
