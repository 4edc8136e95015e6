"""Display blocks for the reports: the same content as escaped Markdown and escaped HTML.

Model ids, error bodies and messages come from upstream and are untrusted, so
no block ever lets them through as markup.  A notebook cell displays a block;
the executed notebook then carries ``text/markdown`` (for the ``.md`` report)
and ``text/html`` (for the HTML report), and neither depends on how a Markdown
renderer treats raw HTML (nbconvert's passes it through).
"""

from __future__ import annotations

import html
import math
import re
from dataclasses import dataclass
from typing import Any, Iterable, Sequence, Union

import pandas as pd

from analysis.untrusted import show_controls

__all__ = [
    "Code",
    "Strong",
    "Inline",
    "md_escape",
    "md_inline",
    "html_inline",
    "cell_text",
    "Block",
    "Paragraph",
    "BulletList",
    "Table",
    "CodeBlock",
    "Stack",
    "FigureBlock",
]

MAX_CELL = 300  # characters of one table cell; an error body can be kilobytes


@dataclass(frozen=True)
class Code:
    """Inline text shown as code (a model string, a URL)."""

    text: str


@dataclass(frozen=True)
class Strong:
    """Inline text shown in bold."""

    text: str


Inline = Union[str, Code, Strong]

# Characters that start inline Markdown constructs anywhere in a line.  `<`, `>`
# and `&` become entities instead, so raw HTML can never form.  The `:` of `://`
# is escaped too: a bare-URL autolinker (mistune's, in nbconvert) runs greedily
# over the following characters and can swallow the backticks opening a code span.
_MD_INLINE = re.compile(r"([\\`*_\[\]{}|~$!]|:(?=//))")
# Constructs that only count at the start of a block: headings, list items, setext underlines.
_MD_BLOCK_START = re.compile(r"^[#+-](?=\s|$)|^[=-]+\s*$")
_MD_ORDERED_ITEM = re.compile(r"^(\d+)(?=[.)](?:\s|$))")


def _one_line(text: Any) -> str:
    # Newlines would end a table row or start a new block; inner spacing between parts is kept.  Control
    # characters (an ESC from an old store, a forged line) are shown escaped, never written raw.
    return re.sub(r"\s+", " ", show_controls(str(text)))


def md_escape(text: Any) -> str:
    """Untrusted text as literal inline Markdown: one line, no markup, no HTML, no links or images."""
    value = _one_line(text)
    value = value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return _MD_INLINE.sub(r"\\\1", value)


def _block_start_safe(markdown: str) -> str:
    # What starts a paragraph or list item must not read as a heading or a nested list.
    markdown = markdown.lstrip()
    if _MD_BLOCK_START.match(markdown):
        return "\\" + markdown
    return _MD_ORDERED_ITEM.sub(r"\1\\", markdown, count=1)


def _md_code_span(text: str) -> str:
    # A code span is literal, but a backtick run inside it would close it: use a longer fence.
    value = _one_line(text).strip()
    longest = max((len(run) for run in re.findall(r"`+", value)), default=0)
    fence = "`" * (longest + 1)
    pad = " " if value.startswith("`") or value.endswith("`") or not value else ""
    return f"{fence}{pad}{value}{pad}{fence}"


def _parts(parts: Inline | Sequence[Inline]) -> list[Inline]:
    return [parts] if isinstance(parts, (str, Code, Strong)) else list(parts)


def md_inline(parts: Inline | Sequence[Inline]) -> str:
    """Inline parts as one line of Markdown: strings escaped, :class:`Code` as code spans.

    The line is also safe at the start of a block (it cannot open a heading or a list).
    """
    out = []
    for part in _parts(parts):
        if isinstance(part, Code):
            out.append(_md_code_span(part.text))
        elif isinstance(part, Strong):
            out.append(f"**{md_escape(part.text)}**")
        else:
            out.append(md_escape(part))
    return _block_start_safe("".join(out))


def html_inline(parts: Inline | Sequence[Inline]) -> str:
    """Inline parts as HTML, every text escaped."""
    out = []
    for part in _parts(parts):
        if isinstance(part, Code):
            out.append(f"<code>{html.escape(_one_line(part.text))}</code>")
        elif isinstance(part, Strong):
            out.append(f"<strong>{html.escape(_one_line(part.text))}</strong>")
        else:
            out.append(html.escape(_one_line(part)))
    return "".join(out)


def cell_text(value: Any, limit: int = MAX_CELL) -> str:
    """A table cell as plain text: empty for missing, yes/no for bools, whole floats without ``.0``."""
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return ""
    if hasattr(value, "item") and not isinstance(value, (list, tuple, dict)):
        value = value.item()  # numpy scalar
    if isinstance(value, bool):
        text = "yes" if value else "no"
    elif isinstance(value, float):
        text = str(int(value)) if value.is_integer() else f"{value:g}"
    elif isinstance(value, (list, tuple, set)):
        text = ", ".join(str(v) for v in value)
    else:
        text = str(value)
    text = _one_line(text).strip()
    return text if len(text) <= limit else text[: limit - 1] + "…"


class Block:
    """Something a notebook cell displays; subclasses render Markdown and HTML."""

    def markdown(self) -> str:
        raise NotImplementedError

    def html(self) -> str:
        raise NotImplementedError

    def _repr_markdown_(self) -> str:
        return self.markdown()

    def _repr_html_(self) -> str:
        return self.html()

    def __repr__(self) -> str:
        # text/plain: what a console shows; Markdown is readable as it is.
        return self.markdown()


class Paragraph(Block):
    """One paragraph of inline parts."""

    def __init__(self, *parts: Inline) -> None:
        self.parts = list(parts)

    def markdown(self) -> str:
        return md_inline(self.parts)

    def html(self) -> str:
        return f"<p>{html_inline(self.parts)}</p>"


class BulletList(Block):
    """A bulleted list; each item is a string or a sequence of inline parts."""

    def __init__(self, items: Iterable[Inline | Sequence[Inline]]) -> None:
        self.items = [_parts(item) for item in items]

    def markdown(self) -> str:
        return "\n".join(f"- {md_inline(item)}" for item in self.items)

    def html(self) -> str:
        return "<ul>" + "".join(f"<li>{html_inline(item)}</li>" for item in self.items) + "</ul>"


class Table(Block):
    """A frame as a table (no index), every cell escaped and cut to ``limit`` characters.

    An empty frame shows ``empty`` as a paragraph instead.
    """

    def __init__(self, frame: pd.DataFrame, empty: str = "(none)", limit: int = MAX_CELL) -> None:
        self.columns = [str(c) for c in frame.columns]
        self.rows = [[cell_text(v, limit) for v in row] for row in frame.itertuples(index=False, name=None)]
        self.empty = empty

    def markdown(self) -> str:
        if not self.rows:
            return md_escape(self.empty)

        def line(cells: list[str]) -> str:
            # Inside a table a pipe must be escaped even where it is otherwise literal.
            return "| " + " | ".join(md_escape(c) or " " for c in cells) + " |"

        return "\n".join([line(self.columns), "|" + "---|" * len(self.columns), *(line(r) for r in self.rows)])

    def html(self) -> str:
        if not self.rows:
            return f"<p>{html.escape(self.empty)}</p>"
        head = "".join(f"<th>{html.escape(c)}</th>" for c in self.columns)
        body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in self.rows)
        return f'<table class="rca-table"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


class CodeBlock(Block):
    """Preformatted text (a curl command), kept verbatim but inert."""

    def __init__(self, text: str, language: str = "") -> None:
        self.text = show_controls(str(text))  # line breaks kept; escape sequences shown, never sent raw
        self.language = language

    def markdown(self) -> str:
        # The fence must be longer than any backtick run in the text, or the text could close it.
        longest = max((len(run) for run in re.findall(r"`+", self.text)), default=0)
        fence = "`" * max(3, longest + 1)
        return f"{fence}{self.language}\n{self.text}\n{fence}"

    def html(self) -> str:
        return f"<pre><code>{html.escape(self.text)}</code></pre>"


class Stack(Block):
    """Blocks one after the other (one cell, one display)."""

    def __init__(self, blocks: Iterable[Block]) -> None:
        self.blocks = list(blocks)

    def markdown(self) -> str:
        return "\n\n".join(b.markdown() for b in self.blocks)

    def html(self) -> str:
        return "\n".join(b.html() for b in self.blocks)


class FigureBlock:
    """A Plotly figure as an HTML fragment that needs no network.

    ``include_plotlyjs=True`` inlines plotly.js (about 4.6 MB) in this fragment;
    pass it for the first figure of a report only.  Plotly escapes ``<`` and
    ``/`` in the figure's JSON, so labels cannot close the script.
    """

    def __init__(self, figure: Any, include_plotlyjs: bool = False, title: str = "") -> None:
        self.figure = figure
        self.include_plotlyjs = include_plotlyjs
        self.title = title or (figure.layout.title.text or "figure")

    def _repr_html_(self) -> str:
        return self.figure.to_html(full_html=False, include_plotlyjs=bool(self.include_plotlyjs),
                                   include_mathjax=False)

    def __repr__(self) -> str:
        return f"[chart: {self.title}]"
