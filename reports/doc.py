"""A tiny document model rendered to Markdown and to self-contained HTML (same content)."""
from __future__ import annotations

import base64
import html
import re
from pathlib import Path


class Doc:
    def __init__(self):
        self.blocks: list[tuple] = []

    def h(self, level: int, text: str):
        self.blocks.append(("h", level, text))

    def p(self, text: str):
        self.blocks.append(("p", text))

    def ul(self, items: list[str]):
        self.blocks.append(("ul", list(items)))

    def table(self, headers: list[str], rows: list[list], align: str = ""):
        """align: one char per column, 'l' or 'r' (default: first left, rest right)."""
        align = align or ("l" + "r" * (len(headers) - 1))
        self.blocks.append(("table", list(headers), [[str(c) for c in r] for r in rows], align))

    def img(self, rel: str, alt: str):
        self.blocks.append(("img", rel, alt))

    # ------------------------------------------------------------ Markdown
    def markdown(self) -> str:
        out = []
        for b in self.blocks:
            kind = b[0]
            if kind == "h":
                out.append("#" * b[1] + " " + b[2])
            elif kind == "p":
                out.append(b[1])
            elif kind == "ul":
                out.append("\n".join(f"- {i}" for i in b[1]))
            elif kind == "table":
                _, headers, rows, align = b
                cell = lambda s: str(s).replace("|", "\\|").replace("\n", " ")  # noqa: E731
                lines = ["| " + " | ".join(cell(x) for x in headers) + " |",
                         "|" + "|".join(":---" if a == "l" else "---:" for a in align) + "|"]
                lines += ["| " + " | ".join(cell(x) for x in r) + " |" for r in rows]
                out.append("\n".join(lines))
            elif kind == "img":
                out.append(f"![{b[2]}]({b[1]})")
        return "\n\n".join(out) + "\n"

    # ------------------------------------------------------------ HTML
    def html(self, root: Path, title: str) -> str:
        """Self-contained: images are embedded as base64 data URIs (read from `root / rel`)."""
        body = []
        for b in self.blocks:
            kind = b[0]
            if kind == "h":
                body.append(f"<h{b[1]}>{_inline(b[2])}</h{b[1]}>")
            elif kind == "p":
                body.append(f"<p>{_inline(b[1])}</p>")
            elif kind == "ul":
                body.append("<ul>" + "".join(f"<li>{_inline(i)}</li>" for i in b[1]) + "</ul>")
            elif kind == "table":
                _, headers, rows, align = b
                st = lambda a: ' class="r"' if a == "r" else ""  # noqa: E731
                head = "".join(f"<th{st(a)}>{_inline(x)}</th>" for x, a in zip(headers, align))
                trs = "".join("<tr>" + "".join(f"<td{st(a)}>{_inline(x)}</td>" for x, a in zip(r, align)) + "</tr>"
                              for r in rows)
                body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{trs}</tbody></table>")
            elif kind == "img":
                data = base64.b64encode((root / b[1]).read_bytes()).decode()
                body.append(f'<figure><img alt="{html.escape(b[2])}" src="data:image/png;base64,{data}">'
                            f"<figcaption>{html.escape(b[2])}</figcaption></figure>")
        css = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}"
               "table{border-collapse:collapse;margin:1em 0;font-size:13px}"
               "th,td{border:1px solid #ccc;padding:3px 7px}th{background:#f3f3f3}"
               "td{overflow-wrap:anywhere}"  # long cells (commit, implementation) wrap: wide tables fit the page
               "td.r,th.r{text-align:right}"
               "code{background:#f3f3f3;padding:0 3px}img{max-width:100%}figcaption{font-size:12px;color:#555}")
        return (f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
                f"<style>{css}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")


def _inline(text: str) -> str:
    """Escape, then render `code` and **bold** (the only inline Markdown the reports use)."""
    s = html.escape(str(text))
    s = re.sub(r"`([^`]+)`", r"<code>\1</code>", s)
    return re.sub(r"\*\*([^*]+)\*\*", r"<b>\1</b>", s)
