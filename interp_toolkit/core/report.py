"""One report layer: offline HTML pages built from sections, tables and embedded figures.

Every HTML the toolkit writes or displays comes from ``Page``: inline CSS, figures as PNG
data URIs or inline SVG, scripts (e.g. a widget bundle) inlined once per page, nothing
fetched from the network. ``Page.render()`` gives a whole document, ``Page.fragment()`` a
self-contained ``<div>`` for Jupyter/Colab ``_repr_html_``.
"""

from __future__ import annotations

import base64
import html
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

from .figures import figure_bytes
from .serialize import atomic_write_text

CSS = """
.itk{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;color:#222;max-width:1100px}
.itk h1{font-size:20px} .itk h2{font-size:17px;margin-top:26px;border-bottom:1px solid #ddd}
.itk h3{font-size:15px}
.itk table{border-collapse:collapse;font-size:13px;margin:8px 0}
.itk td,.itk th{border:1px solid #ccc;padding:3px 7px;text-align:right}
.itk th{background:#f3f3f3} .itk td.l,.itk th.l{text-align:left}
.itk img,.itk svg{max-width:100%;margin:6px 0}
.itk code,.itk pre{background:#f6f6f6;padding:2px 4px}
.itk .guide{background:#f7f9fc;border-left:3px solid #8aa8d8;padding:6px 10px;font-size:13px;margin:6px 0}
.itk .meta,.itk .small{color:#666;font-size:12px}
.itk .w{padding:1px 2px;border-radius:3px} .itk .pl{border-bottom:2px solid #888}
.itk .pos{background:#9ecbff} .itk .neg{background:#ffaaa5} .itk .dim{color:#999}
"""


def fmt(v, digits: int = 3) -> str:
    """A number (or anything) as escaped HTML text: NaN/None → "–", small floats in %g."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, float):
        return f"{v:.{digits}g}" if (abs(v) < 1e-2 and v != 0) or abs(v) >= 1e5 else f"{v:.{digits}f}"
    return html.escape(str(v))


def html_table(header: Sequence, rows: Iterable[Sequence], left: Iterable[int] = (), digits: int = 3,
               raw: Iterable[int] = ()) -> str:
    """``<table>``; columns in ``left`` are left-aligned, columns in ``raw`` hold HTML as is."""
    left, raw = set(left), set(raw)

    def cls(i):
        return ' class="l"' if i in left else ""

    th = "".join(f"<th{cls(i)}>{html.escape(str(h))}</th>" for i, h in enumerate(header))
    body = "".join("<tr>" + "".join(f"<td{cls(i)}>{c if i in raw else fmt(c, digits)}</td>"
                                    for i, c in enumerate(r)) + "</tr>" for r in rows)
    return f"<table><tr>{th}</tr>{body}</table>"


def img_tag(fig, alt: str, dpi: int = 110) -> str:
    """``<img>`` holding a matplotlib figure as a PNG data URI."""
    data = base64.b64encode(figure_bytes(fig, "png", dpi)).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def svg_tag(fig) -> str:
    """A matplotlib figure as inline ``<svg>`` (vector; the XML prolog is dropped)."""
    text = figure_bytes(fig, "svg").decode("utf-8")
    return text[text.index("<svg"):]


def meta_line(meta: dict) -> str:
    """``key=value, ...`` in small grey text (model identity, seeds, versions)."""
    items = ", ".join(f"{html.escape(str(k))}={html.escape(str(v))}" for k, v in meta.items())
    return f'<p class="meta">{items}</p>'


@dataclass
class Page:
    """An offline HTML page assembled from sections.

    >>> page = Page("s-Trace").section("Fidelity", html_table(["s", "TV"], [[0.1, 0.5]]),
    ...                                 guide="Lower TV is better.")
    >>> path = page.write("report.html")
    """

    title: str
    parts: list[str] = field(default_factory=list)
    head: dict[str, str] = field(default_factory=dict)

    def add(self, *html_parts: str) -> "Page":
        """Append raw HTML."""
        self.parts.extend(html_parts)
        return self

    def section(self, title: str, *html_parts: str, guide: str | None = None, level: int = 2) -> "Page":
        """A heading, an optional reading guide (plain text), then the parts."""
        self.parts.append(f"<h{level}>{html.escape(title)}</h{level}>")
        if guide:
            self.parts.append(f'<div class="guide">{html.escape(guide)}</div>')
        self.parts.extend(html_parts)
        return self

    def once(self, key: str, html_text: str) -> "Page":
        """Put ``html_text`` (a ``<script>`` bundle, a style) in the page once per ``key``."""
        self.head.setdefault(key, html_text)
        return self

    def extend(self, other: "Page") -> "Page":
        """Append another page's parts (its head entries are merged, each kept once)."""
        self.parts.extend(other.parts)
        for k, v in other.head.items():
            self.once(k, v)
        return self

    def fragment(self) -> str:
        """A self-contained ``<div>`` (style and scripts inside) for notebooks."""
        return (f'<div class="itk"><style>{CSS}</style>{"".join(self.head.values())}'
                f"{''.join(self.parts)}</div>")

    def render(self) -> str:
        """The whole HTML document."""
        return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(self.title)}</title>"
                f"<style>{CSS}</style>{''.join(self.head.values())}</head>"
                f'<body><div class="itk"><h1>{html.escape(self.title)}</h1>{"".join(self.parts)}</div></body></html>')

    def write(self, path) -> Path:
        """Write ``render()`` atomically (folders created)."""
        return atomic_write_text(path, self.render())
