"""Local-file formats: the parsers (one dict a row) that `load_splits` runs through
`datasets.Dataset.from_generator`, their one-line help, and `register_parser` to add one."""
from __future__ import annotations

import gzip
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


def open_text(path: str):
    return gzip.open(path, "rt", encoding="utf-8") if str(path).endswith(".gz") else open(path, encoding="utf-8")


def _malformed(path, lineno, fmt) -> ValueError:
    return ValueError(f"{path} line {lineno}: malformed; expected {FORMAT_HELP[fmt]}")


def parse_label_text(files: Sequence[str], text_column: str = "text", label_column: str = "label",
                     **_) -> Iterator[dict]:
    """`<label> <text>` lines -> {text_column: str, label_column: str}."""
    for path in files:
        with open_text(path) as f:
            for i, line in enumerate(f, 1):
                line = line.strip()
                if not line:
                    continue
                parts = line.split(None, 1)
                if len(parts) != 2:
                    raise _malformed(path, i, "label_text")
                yield {text_column: parts[1], label_column: parts[0]}


CONLLU_FIELDS = ("idx", "tokens", "lemmas", "upos", "xpos", "feats", "head", "deprel", "deps", "misc")


def parse_conllu(files: Sequence[str], **_) -> Iterator[dict]:
    """CoNLL-U -> one row a sentence with the Hugging Face `universal_dependencies` column names
    (tokens, lemmas, upos, xpos, feats, head, deprel, deps, misc); multiword-token ranges and
    empty nodes are skipped (they carry no UPOS of their own)."""
    for path in files:
        rows: list[list[str]] = []
        with open_text(path) as f:
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


def parse_conll(files: Sequence[str], columns: Optional[Sequence[str]] = None, **_) -> Iterator[dict]:
    """CoNLL-2003 style columns -> one row a sentence, one list column per file column, named by
    `columns` (default tokens, pos_tags, chunk_tags, ner_tags). `-DOCSTART-` lines are skipped."""
    columns = list(columns or ("tokens", "pos_tags", "chunk_tags", "ner_tags"))
    for path in files:
        rows: list[list[str]] = []
        with open_text(path) as f:
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
    """Add a local format: `fn(files: list[str], text_column=, label_column=, columns=, **_)`
    yields one dict a row; raise ValueError("<file> line N: malformed; expected ...") on bad input."""
    PARSERS[name] = fn
    FORMAT_HELP[name] = help
