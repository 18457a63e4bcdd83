"""Local files: opening (.gz, a .zip of one file, any text encoding), checking (empty, not in the
encoding, with the line), and the parsers (one dict a row) that `load_splits` runs through
`datasets.Dataset.from_generator`, with their one-line help and `register_parser` to add one."""
from __future__ import annotations

import codecs
import gzip
import io
import os
import zipfile
from typing import Callable, Iterator, Optional, Sequence

BUILDERS = ("text", "json", "csv", "parquet")     # local formats read by a `datasets` builder


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


def open_text(path: str, encoding: str = "utf-8"):
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
        with open_text(path, encoding) as f:
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
        with open_text(path, encoding) as f:
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
        with open_text(path, encoding) as f:
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
