"""Shared data layer for the text task families (sentiment, tagging, language modelling, translation).

Everything here is plain functions/classes that a family composes; nothing is family specific.

Data sources  -- one `datasets.load_dataset` code path for the hub and for local files
-----------------------------------------------------------------------------------------
`load_splits(cfg, path="task.") -> datasets.DatasetDict` with the splits "train", "validation",
"test" (validation carved from train with `cfg.data_seed` when the source has none). `cfg` is any
object with the fields of `TextDataConfig` (a family's Config usually subclasses it):

* local files when `cfg.data_dir` or the env var `RNNBENCH_DATA` is set AND `cfg.data_files` is
  non-empty. `cfg.data_files` maps our split names to a path (or list of paths) relative to the
  data dir (absolute paths also work). `cfg.format` is either a `datasets` builder
  ("text", "json", "csv", "parquet") or a parser from `PARSERS` ("label_text", "conllu", "conll";
  add one with `register_parser`), run through `datasets.Dataset.from_generator` -- so both the
  hub and every local format end in the same columns and both are cached by `datasets`.
* otherwise the hub data set `cfg.dataset` (`cfg.hub_config`, `cfg.hub_revision`), with
  `cfg.splits` mapping our split names to the hub's split names.
* ClassLabel columns (and sequences of ClassLabel) are turned into their string names, so hub
  and local data give the same label strings.
* `cfg.max_train` / `cfg.max_eval` keep the first N examples of a split (tests, reduced runs);
  with `cfg.subsample == "random"` N examples drawn with `cfg.data_seed` instead.
* Errors are one line: a missing file raises `ConfigError("task.data_files.train: file X not
  found; expected <format help>")`, a malformed one `ValueError("X line 3: malformed ...;
  expected <format help>")`, a missing column `ConfigError("task.text_column: ...")`.

Tokens  -- `tokenize(value, mode, lowercase)`; modes "whitespace", "basic" (regex words and
punctuation, strips `<br />`), "chars", "none" (the column already holds a token list).
`token_column(ds, column, mode, lowercase, max_len)` does it with a cached `Dataset.map`;
`column_list(ds, name)` gives a column as a plain list (fast).

Vocabulary  -- `Vocab.build(token_lists, min_freq=1, max_size=None, specials=(PAD, UNK), unk=UNK)`
(train split only: the caller passes only train tokens), `Vocab.labels(values)` for label sets
(no specials, sorted), `char_vocab(token_lists)`. `v.encode(tokens) -> list[int]`,
`v.decode(ids)`, `v[token]`, `len(v)`, `v.pad_id`, `v.unk_id`, `v.itos`. `v.to_dict()` is plain
dicts/lists/strings (safe for `torch.load(weights_only=True)`); `Vocab.from_dict(d)` restores.

Word vectors  -- `init_embedding(embed, vocab, path, freeze)` starts the rows of the training-vocab
words from a GloVe / word2vec text file (`rnnbench vectors` makes one with gensim). A family gets
`task.embeddings` / `task.freeze_embeddings` by subclassing `WordVectorsConfig` and `WordVectorsTask`.

Batches  -- `BucketBatchSampler(lengths, batch_size, shuffle, seed, pool=50)`: batches of similar
lengths, a pure function of (seed, epoch) (`set_epoch`, called by Lightning every epoch), sharded
over ranks when torch.distributed is initialised. `pad(seqs, value) -> (B, T) tensor, lengths`;
`lengths_to_mask(lengths, T) -> (B, T) bool`. Padding never changes a result as long as the model
gets `lengths` (models.recurrent.Recurrent does) and losses/metrics use the mask.

`TextDataModule(cfg, seed, num_workers)` -- LightningDataModule base: `setup()` (idempotent) calls `load_splits` then the
subclass's `build(raw)` which must fill `self.examples[split]` (list of dicts) and
`self.lengths[split]` (list of ints) and `self.vocabs` (name -> Vocab); it provides bucketed
loaders using `self.collate`, and `state_dict()` = {"vocabs": {name: vocab.to_dict()}} so the
vocabularies travel inside Lightning checkpoints.
"""
from __future__ import annotations

import codecs
import gzip
import hashlib
import io
import math
import os
import re
import zipfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator, Optional, Sequence

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from bench.schema import ConfigError, opt
from tasks.base import SkipDone, batches_done

PAD, UNK, BOS, EOS = "<pad>", "<unk>", "<bos>", "<eos>"
ENV_DATA = "RNNBENCH_DATA"
BUILDERS = ("text", "json", "csv", "parquet")


# ---------------------------------------------------------------- config fields shared by families


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


@dataclass
class WordVectorsConfig(TextDataConfig):
    """TextDataConfig plus pretrained word vectors (families whose module has a word `embed`)."""

    embeddings: Optional[str] = opt(None, help="pretrained word vectors file (GloVe / word2vec text, .gz ok) "
                                    "for the training-vocab words; width = model.embedding_size")
    freeze_embeddings: bool = opt(False, help="with embeddings: keep the word vectors fixed")


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


def sources(cfg, path: str = "task.") -> dict:
    """split -> where its data comes from (local files, or hub id[split]), for result.json."""
    root = local_root(cfg)
    if root is None:
        return {s: f"{cfg.dataset}[{h}]" for s, h in cfg.splits.items() if h is not None}
    return {s: ", ".join(f) for s, f in resolve_files(cfg, root, path).items()}


# ---------------------------------------------------------------- local-file parsers


FORMAT_HELP = {
    "text": "plain text, one example a line",
    "json": "JSON lines (optionally .gz), one object a line",
    "csv": "CSV with a header row",
    "parquet": "a parquet table",
    "label_text": "one example a line: '<label> <text>' (SST stsa.binary style)",
    "conllu": "CoNLL-U: 10 tab-separated columns a token, blank line between sentences",
    "conll": "CoNLL columns: whitespace-separated columns a token, blank line between sentences",
}


def _zip_members(path) -> list[str]:
    """The data files of a zip archive (no folders, no macOS resource forks)."""
    with zipfile.ZipFile(path) as z:
        return [n for n in z.namelist() if not n.endswith("/") and not n.startswith("__MACOSX/")]


def _open_binary(path):
    """A local file as bytes: .gz decompressed, a .zip archive's one data file."""
    path = str(path)
    if path.endswith(".gz"):
        return gzip.open(path, "rb")
    if path.endswith(".zip"):
        members = _zip_members(path)
        if len(members) != 1:
            raise ValueError(f"{path}: a zip archive of {len(members)} files ({', '.join(members[:4])}); "
                             f"expected one data file in it, or unpack it and name the files in task.data_files")
        z = zipfile.ZipFile(path)
        return z.open(members[0])
    return open(path, "rb")


def _open(path: str, encoding: str = "utf-8"):
    """A local text file (.gz, or a .zip archive of one file) in `encoding`."""
    return io.TextIOWrapper(_open_binary(path), encoding=encoding)


def check_file(path, fmt: str, encoding: str = "utf-8") -> None:
    """Raise a one-line ValueError when a local file is empty or not in `encoding` (with the line);
    parquet files and the zip archives of builder formats (several members allowed) included."""
    path = str(path)
    help_ = FORMAT_HELP.get(fmt, fmt)
    if fmt == "parquet":
        if os.path.getsize(path) == 0:
            raise ValueError(f"{path}: empty file; expected {help_}")
        return
    if path.endswith(".zip") and fmt in BUILDERS:
        with zipfile.ZipFile(path) as z:
            members = _zip_members(path)
            if not members:
                raise ValueError(f"{path}: empty zip archive; expected {help_}")
            for m in members:
                with z.open(m) as f:
                    _check_stream(f, f"{path}/{m}", help_, encoding)
        return
    with _open_binary(path) as f:
        _check_stream(f, path, help_, encoding)


def _check_stream(f, name: str, help_: str, encoding: str) -> None:
    decoder = codecs.getincrementaldecoder(encoding)()
    content = False
    for i, line in enumerate(f, 1):
        try:
            text = decoder.decode(line)
        except UnicodeDecodeError as e:
            raise ValueError(f"{name}: not {_codec_name(encoding)} at line {i} (byte 0x{line[e.start]:02x}); "
                             f"set task.encoding, e.g. task.encoding=latin-1") from None
        content = content or bool(text.strip())
    if not content:
        raise ValueError(f"{name}: empty file; expected {help_}")


def _codec_name(encoding: str) -> str:
    name = codecs.lookup(encoding).name
    return {"utf-8": "UTF-8", "iso8859-1": "latin-1"}.get(name, encoding)


def _malformed(path, lineno, fmt) -> ValueError:
    return ValueError(f"{path} line {lineno}: malformed; expected {FORMAT_HELP[fmt]}")


def parse_label_text(files: Sequence[str], text_column: str = "text", label_column: str = "label",
                     encoding: str = "utf-8", **_) -> Iterator[dict]:
    """`<label> <text>` lines -> {text_column: str, label_column: str}."""
    for path in files:
        with _open(path, encoding) as f:
            for i, line in enumerate(f, 1):
                line = line.strip()
                if not line:
                    continue
                parts = line.split(None, 1)
                if len(parts) != 2:
                    raise _malformed(path, i, "label_text")
                yield {text_column: parts[1], label_column: parts[0]}


CONLLU_FIELDS = ("idx", "tokens", "lemmas", "upos", "xpos", "feats", "head", "deprel", "deps", "misc")


def parse_conllu(files: Sequence[str], encoding: str = "utf-8", **_) -> Iterator[dict]:
    """CoNLL-U -> one row a sentence with the Hugging Face `universal_dependencies` column names
    (tokens, lemmas, upos, xpos, feats, head, deprel, deps, misc); multiword-token ranges and
    empty nodes are skipped (they carry no UPOS of their own)."""
    for path in files:
        rows: list[list[str]] = []
        with _open(path, encoding) as f:
            for i, line in enumerate(f, 1):
                line = line.rstrip("\n")
                if not line.strip():
                    if rows:
                        yield {k: [r[j] for r in rows] for j, k in enumerate(CONLLU_FIELDS) if k != "idx"}
                        rows = []
                    continue
                if line.startswith("#"):
                    continue
                cols = line.split("\t")
                if len(cols) != 10:
                    raise _malformed(path, i, "conllu")
                if "-" in cols[0] or "." in cols[0]:
                    continue
                rows.append(cols)
        if rows:
            yield {k: [r[j] for r in rows] for j, k in enumerate(CONLLU_FIELDS) if k != "idx"}


def parse_conll(files: Sequence[str], columns: Optional[Sequence[str]] = None, encoding: str = "utf-8",
                **_) -> Iterator[dict]:
    """CoNLL-2003 style columns -> one row a sentence, one list column per file column, named by
    `columns` (default tokens, pos_tags, chunk_tags, ner_tags). `-DOCSTART-` lines are skipped."""
    columns = list(columns or ("tokens", "pos_tags", "chunk_tags", "ner_tags"))
    for path in files:
        rows: list[list[str]] = []
        with _open(path, encoding) as f:
            for i, line in enumerate(f, 1):
                cols = line.split()
                if not cols:
                    if rows:
                        yield {k: [r[j] for r in rows] for j, k in enumerate(columns)}
                        rows = []
                    continue
                if cols[0] == "-DOCSTART-":
                    continue
                if len(cols) != len(columns):
                    raise ValueError(f"{path} line {i}: malformed; expected {len(columns)} "
                                     f"whitespace-separated columns ({', '.join(columns)}), got {len(cols)}")
                rows.append(cols)
        if rows:
            yield {k: [r[j] for r in rows] for j, k in enumerate(columns)}


PARSERS: dict[str, Callable[..., Iterator[dict]]] = {
    "label_text": parse_label_text,
    "conllu": parse_conllu,
    "conll": parse_conll,
}


def register_parser(name: str, fn: Callable[..., Iterator[dict]], help: str) -> None:
    """Add a local format: `fn(files: list[str], text_column=, label_column=, columns=, encoding=, **_)`
    yields one dict a row; raise ValueError("<file> line N: malformed; expected ...") on bad input."""
    PARSERS[name] = fn
    FORMAT_HELP[name] = help


# ---------------------------------------------------------------- data-source resolution


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
    import datasets

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
    import datasets

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
    import datasets

    if isinstance(feature, datasets.ClassLabel):
        return feature.names, False
    inner = getattr(feature, "feature", None)
    if isinstance(feature, (list, datasets.Sequence)) or inner is not None:
        inner = feature[0] if isinstance(feature, list) else inner
        if isinstance(inner, datasets.ClassLabel):
            return inner.names, True
    try:
        from datasets import List as _List  # datasets >= 4
        if isinstance(feature, _List) and isinstance(feature.feature, datasets.ClassLabel):
            return feature.feature.names, True
    except ImportError:
        pass
    return None, False


def _names_map(column: str, names: list, seq: bool):
    def fn(batch):
        if seq:
            return {column: [[names[i] for i in row] for row in batch[column]]}
        return {column: [names[i] if i is not None and i >= 0 else None for i in batch[column]]}
    return fn


def class_labels_to_names(ds, columns: Iterable[str]):
    """Replace ClassLabel ints by their names in `columns` (hub data sets store labels as ints)."""
    import datasets

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
    import datasets

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


# ---------------------------------------------------------------- tokens


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


# ---------------------------------------------------------------- vocabulary


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


# ---------------------------------------------------------------- pretrained word vectors


VECTORS_HELP = ("word vectors as text, one 'word v1 ... vD' a line (GloVe; the word2vec text format's "
                "'count dim' first line is skipped), .gz allowed")


def load_vectors(path, vocab: "Vocab", dim: int, field: str = "task.embeddings") -> dict[str, list[float]]:
    """Vectors of the `vocab` words found in a GloVe / word2vec text file (first occurrence wins)."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise ConfigError(f"{field}: file {p} not found; expected {VECTORS_HELP}")
    rows: dict[str, list[float]] = {}
    with _open(p) as f:
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


# ---------------------------------------------------------------- batching and padding


def _rng(*parts: int) -> torch.Generator:
    seed = 0
    for p in parts:
        seed = (seed * 1_000_003 + int(p)) % (2**63 - 1)
    return torch.Generator().manual_seed(seed)


class BucketBatchSampler(Sampler):
    """Batches of indices with similar lengths.

    shuffle=True (training): permute with (seed, epoch), cut into pools of `pool` batches, sort
    each pool by length, cut into batches, shuffle the batch order. shuffle=False (evaluation):
    all indices sorted by length (stable), cut into batches. Deterministic given seed and epoch;
    `set_epoch` is called by Lightning at every epoch start. Under torch.distributed each rank
    keeps every world-th batch (the list padded by repetition so all ranks get the same count).
    """

    def __init__(self, lengths: Sequence[int], batch_size: int, shuffle: bool = True, seed: int = 0,
                 pool: int = 50, drop_last: bool = False, num_replicas: Optional[int] = None,
                 rank: Optional[int] = None):
        self.lengths = list(lengths)
        self.batch_size, self.shuffle, self.seed = batch_size, shuffle, seed
        self.pool, self.drop_last = pool, drop_last
        self.num_replicas, self.rank = num_replicas, rank
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def _world(self) -> tuple[int, int]:
        if self.num_replicas is not None:
            return self.num_replicas, self.rank or 0
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            return torch.distributed.get_world_size(), torch.distributed.get_rank()
        return 1, 0

    def batches(self) -> list[list[int]]:
        n, bs = len(self.lengths), self.batch_size
        lengths = self.lengths
        if self.shuffle:
            g = _rng(self.seed, self.epoch)
            order = torch.randperm(n, generator=g).tolist()
            out = []
            step = bs * self.pool
            for s in range(0, n, step):
                chunk = sorted(order[s:s + step], key=lambda i: lengths[i])
                out += [chunk[j:j + bs] for j in range(0, len(chunk), bs)]
            perm = torch.randperm(len(out), generator=g).tolist()
            out = [out[i] for i in perm]
        else:
            order = sorted(range(n), key=lambda i: lengths[i])
            out = [order[j:j + bs] for j in range(0, n, bs)]
        if self.drop_last:
            out = [b for b in out if len(b) == bs]
        world, rank = self._world()
        if world > 1:
            total = math.ceil(len(out) / world) * world
            out = (out + out[:total - len(out)])[rank::world]
        return out

    def __iter__(self):
        return iter(self.batches())

    def __len__(self) -> int:
        n, bs = len(self.lengths), self.batch_size
        if self.shuffle:
            step = bs * self.pool
            k = sum(math.ceil(min(step, n - s) / bs) if not self.drop_last else min(step, n - s) // bs
                    for s in range(0, n, step))
        else:
            k = n // bs if self.drop_last else math.ceil(n / bs)
        world, _ = self._world()
        return math.ceil(k / world)


def pad(seqs: Sequence, value: int = 0, dtype=torch.long) -> tuple[torch.Tensor, torch.Tensor]:
    """List of 1-D sequences -> ((B, T) tensor padded with `value`, (B,) lengths)."""
    lengths = torch.tensor([len(s) for s in seqs], dtype=torch.long)
    T = int(lengths.max()) if len(seqs) else 0
    out = torch.full((len(seqs), max(T, 1)), value, dtype=dtype)
    for i, s in enumerate(seqs):
        if len(s):
            out[i, :len(s)] = torch.as_tensor(s, dtype=dtype)
    return out, lengths


def lengths_to_mask(lengths: torch.Tensor, max_len: Optional[int] = None) -> torch.Tensor:
    """(B,) lengths -> (B, T) bool mask, True on real steps."""
    T = int(lengths.max()) if max_len is None else max_len
    return torch.arange(T, device=lengths.device)[None, :] < lengths[:, None]


def last_valid(out: torch.Tensor, lengths: torch.Tensor, bidirectional: bool) -> torch.Tensor:
    """Sequence summary from a (B, T, H*dirs) output: forward half at step length-1, backward
    half at step 0 (the backward direction's final state) when bidirectional."""
    idx = (lengths - 1).clamp(min=0).to(out.device)
    last = out[torch.arange(out.size(0), device=out.device), idx]
    if not bidirectional:
        return last
    h = out.size(-1) // 2
    return torch.cat([last[:, :h], out[:, 0, h:]], dim=-1)


class ListDataset(Dataset):
    def __init__(self, items: list):
        self.items = items

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


# ---------------------------------------------------------------- datamodule base


class TextDataModule(L.LightningDataModule):
    """Base for text datamodules. Subclasses implement `build(raw: DatasetDict)` (fill
    `self.examples`, `self.lengths`, `self.vocabs`) and `collate(items) -> batch`."""

    def __init__(self, cfg, seed: int = 0, num_workers: int = 0, path: str = "task."):
        super().__init__()
        self.cfg, self.seed, self.num_workers, self.path = cfg, seed, num_workers, path
        self.examples: dict[str, list] = {}
        self.lengths: dict[str, list[int]] = {}
        self.vocabs: dict[str, Vocab] = {}
        self.info: dict = {}      # recorded in result.json under "data": sources, unseen labels
        self._restored: Optional[dict] = None
        self.ready = False

    # -- to implement
    def build(self, raw) -> None:
        raise NotImplementedError

    def collate(self, items: list):
        raise NotImplementedError

    # -- lifecycle
    def setup(self, stage: Optional[str] = None) -> None:
        if self.ready:
            return
        self.info["source"] = sources(self.cfg, self.path)
        self.build(load_splits(self.cfg, self.path))
        if self._restored is not None:
            self._check_restored()
        self.ready = True

    def _check_restored(self):
        for name, d in self._restored.items():
            if name in self.vocabs and self.vocabs[name].to_dict() != d:
                raise ValueError(f"checkpoint vocabulary {name!r} differs from the one built from "
                                 f"the training data ({len(d['itos'])} vs {len(self.vocabs[name])} tokens)")

    def state_dict(self) -> dict:
        return {"vocabs": {k: v.to_dict() for k, v in self.vocabs.items()}}

    def load_state_dict(self, state: dict) -> None:
        self._restored = dict(state.get("vocabs", {}))
        if self.ready:
            self._check_restored()

    # -- loaders
    def _loader(self, split: str, train: bool) -> DataLoader:
        self.setup()
        c = self.cfg
        bs = c.batch_size if train else (c.eval_batch_size or c.batch_size)
        sampler = BucketBatchSampler(self.lengths[split], bs, shuffle=train, seed=self.seed,
                                     pool=c.bucket_pool)
        if train and self.trainer is not None:
            sampler.set_epoch(self.trainer.current_epoch)
            sampler = SkipDone(sampler, batches_done(self.trainer))
        # its own generator: making an iterator must not draw from the global (dropout) RNG
        return DataLoader(ListDataset(self.examples[split]), batch_sampler=sampler, collate_fn=self.collate,
                          num_workers=self.num_workers, generator=torch.Generator())

    def train_dataloader(self):
        return self._loader("train", True)

    def val_dataloader(self):
        return self._loader("validation", False)

    def test_dataloader(self):
        return self._loader("test", False)
