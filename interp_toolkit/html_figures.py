"""Matplotlib figures embedded in offline HTML pages (base64 PNG data URIs: no network)."""

from __future__ import annotations

import base64
import html
import io


def figure_to_base64(fig, dpi: int = 110) -> str:
    """PNG of ``fig`` as base64 text."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def img_tag(fig, alt: str) -> str:
    """``<img>`` element holding ``fig`` inline."""
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{figure_to_base64(fig)}">'
