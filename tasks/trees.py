"""Labelled constituency trees in PTB bracket form, as in the Stanford Sentiment Treebank:
`(3 (2 (2 The) (2 Rock)) (4 (2 is) ...))` -- every node `(label child ...)`, every leaf `(label word)`.

* `parse_tree(text) -> Tree` (nodes in post-order, the root last) raises `TreeError(column, what
  was expected)`; `parse_ptb_trees(files, text_column=...)` is the local-file parser registered as
  format `ptb_trees` (one tree a line): each row is {text_column: the tree string}, checked here so
  that a malformed line fails as `FILE line N: malformed tree at column C: expected ...`. The hub
  (e.g. `stanfordnlp/sst`, config `ptb`, column `ptb_tree`) gives the same strings.
* `unescape(word)`: PTB escapes back to text: -LRB- -> (, -RRB- -> ), -LSB-/-RSB-, -LCB-/-RCB-,
  `\\/` -> /, `\\*` -> *. Brackets inside words must be escaped, so a bare `(` never is a word.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Iterator, Sequence

from tasks.text import register_parser

PTB_HELP = ("one tree a line in PTB bracket form, '(label child child ...)' with leaves '(label word)' "
            "(Stanford Sentiment Treebank style)")
ESCAPES = {"-LRB-": "(", "-RRB-": ")", "-LSB-": "[", "-RSB-": "]", "-LCB-": "{", "-RCB-": "}"}
_TOKEN = re.compile(r"\(|\)|[^\s()]+")


class TreeError(ValueError):
    def __init__(self, column: int, what: str):
        super().__init__(f"malformed tree at column {column}: {what}")
        self.column, self.what = column, what


@dataclass
class Tree:
    """Nodes in post-order (children before parents, left to right; root = last node)."""
    labels: list[str] = field(default_factory=list)       # one per node
    words: list[str] = field(default_factory=list)        # one per node; "" for an internal node
    children: list[list[int]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def leaves(self) -> list[int]:
        return [i for i, c in enumerate(self.children) if not c]

    def tokens(self) -> list[str]:
        return [self.words[i] for i in self.leaves]

    def heights(self) -> list[int]:
        """0 for a leaf, 1 + the highest child otherwise (post-order makes one pass enough)."""
        h: list[int] = []
        for c in self.children:
            h.append(1 + max(h[k] for k in c) if c else 0)
        return h

    def spans(self) -> list[tuple[int, int]]:
        """(first, last + 1) leaf positions each node covers."""
        out: list[tuple[int, int]] = []
        n_leaf = 0
        for c in self.children:
            if c:
                out.append((out[c[0]][0], out[c[-1]][1]))
            else:
                out.append((n_leaf, n_leaf + 1))
                n_leaf += 1
        return out


def unescape(word: str) -> str:
    word = ESCAPES.get(word, word)
    return word.replace("\\/", "/").replace("\\*", "*")


def parse_tree(text: str, unescape_words: bool = True) -> Tree:
    """One bracketed tree -> Tree. Columns in errors are 1-based character positions."""
    toks = [(m.group(), m.start() + 1) for m in _TOKEN.finditer(text)]
    end = len(text.rstrip()) + 1
    tree = Tree()
    stack: list[tuple[str, list[int]]] = []    # open nodes: (label, children so far)
    i = 0
    while i < len(toks):
        tok, col = toks[i]
        if tok == "(":
            if i + 1 >= len(toks) or toks[i + 1][0] in "()":
                c = toks[i + 1][1] if i + 1 < len(toks) else end
                raise TreeError(c, "expected a label after '('")
            label = toks[i + 1][0]
            j = i + 2
            while j < len(toks) and toks[j][0] not in "()":
                j += 1
            if j > i + 2:          # a leaf: (label word); a word may hold spaces, as SST's '8 1\/2'
                if j >= len(toks) or toks[j][0] != ")":
                    c = toks[j][1] if j < len(toks) else end
                    raise TreeError(c, f"expected ')' after the word {toks[j - 1][0]!r} (a leaf is '(label word)')")
                start, stop = toks[i + 2][1] - 1, toks[j - 1][1] - 1 + len(toks[j - 1][0])
                word = " ".join(text[start:stop].split())
                tree.labels.append(label)
                tree.words.append(unescape(word) if unescape_words else word)
                tree.children.append([])
                if stack:
                    stack[-1][1].append(len(tree) - 1)
                elif j + 1 < len(toks):
                    raise TreeError(toks[j + 1][1], "expected the end of the line after the tree's closing ')'")
                i = j + 1
                continue
            stack.append((label, []))
            i += 2
            continue
        if tok == ")":
            if not stack:
                raise TreeError(col, "expected '(' to open a tree, got ')'")
            label, kids = stack.pop()
            if not kids:
                raise TreeError(col, "expected a word or a subtree before ')'")
            tree.labels.append(label)
            tree.words.append("")
            tree.children.append(kids)
            if stack:
                stack[-1][1].append(len(tree) - 1)
            elif i + 1 < len(toks):
                raise TreeError(toks[i + 1][1], "expected the end of the line after the tree's closing ')'")
            i += 1
            continue
        if not stack and not len(tree):
            raise TreeError(col, f"expected '(' to open a tree, got {tok!r}")
        raise TreeError(col, f"expected '(' or ')', got the bare word {tok!r} (a leaf is '(label word)')")
    if stack:
        raise TreeError(end, f"expected ')': {len(stack)} node(s) left open at the end of the line")
    if not len(tree):
        raise TreeError(1, "expected a tree, got an empty line")
    return tree


def parse_ptb_trees(files: Sequence[str], text_column: str = "tree", **_) -> Iterator[dict]:
    """Local format `ptb_trees`: one tree a line (blank lines skipped) -> {text_column: line}."""
    for path in files:
        with open(path, encoding="utf-8") as f:
            for i, line in enumerate(f, 1):
                line = line.strip()
                if not line:
                    continue
                try:
                    parse_tree(line)
                except TreeError as e:
                    raise ValueError(f"{path} line {i}: {e}; {PTB_HELP}") from None
                yield {text_column: line}


register_parser("ptb_trees", parse_ptb_trees, PTB_HELP)
