"""Interactive circuitsvis widgets that work offline: the JS bundle is inlined once per page.

circuitsvis ships its browser bundle (``dist/cdn/iife.js``, which defines ``window.CircuitsVis``)
in the wheel. Its own ``RenderedHTML`` either points at a CDN (``str(obj)``, blank offline) or
inlines the 1.3 MB bundle in every widget, and its ``_repr_html_`` probes the network on every
display. Here the bundle goes into the page head once (``Page.once``) and each widget is a
``<div>`` plus a small module script that calls ``CircuitsVis.render``.
"""

from __future__ import annotations

import functools
import json
import uuid
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from jaxtyping import Float

from .report import Page
from .serialize import to_jsonable

BUNDLE_KEY = "circuitsvis-bundle"


@functools.cache
def circuitsvis_bundle() -> str:
    """The circuitsvis browser bundle as inline-safe JavaScript text."""
    import circuitsvis

    path = Path(circuitsvis.__file__).parent / "dist" / "cdn" / "iife.js"
    if not path.is_file():
        raise FileNotFoundError(f"circuitsvis bundle not found at {path}; reinstall circuitsvis")
    return path.read_text(encoding="utf-8").replace("</script>", "<\\/script>")


def widget(page: Page, element: str, **props) -> str:
    """HTML of one circuitsvis React ``element`` (e.g. ``"AttentionHeads"``) with ``props``.

    The bundle is added to ``page`` once; the returned ``<div>`` + script renders into itself.
    """
    page.once(BUNDLE_KEY, f'<script data-bundle="circuitsvis">{circuitsvis_bundle()}</script>')
    el_id = "cv-" + uuid.uuid4().hex[:12]
    props_js = json.dumps(to_jsonable(props))
    return (f'<div id="{el_id}" class="cv-widget" data-element="{element}" style="margin:10px 0"></div>'
            f'<script type="module">CircuitsVis.render("{el_id}", CircuitsVis.{element}, {props_js});</script>')


def attention_heads(page: Page, str_tokens: Sequence[str],
                    attention: Float[torch.Tensor, "head query key"] | np.ndarray,
                    head_names: Sequence[str] | None = None) -> str:
    """circuitsvis ``AttentionHeads`` for one prompt: a thumbnail per head, click to enlarge."""
    att = torch.as_tensor(np.asarray(attention, dtype=np.float32) if isinstance(attention, np.ndarray) else attention)
    if att.ndim != 3 or att.shape[1] != len(str_tokens) or att.shape[2] != len(str_tokens):
        raise ValueError(f"attention must be [head, {len(str_tokens)}, {len(str_tokens)}], got {tuple(att.shape)}")
    props = {"attention": att.double().cpu().numpy().round(4), "tokens": list(str_tokens)}
    if head_names is not None:
        if len(head_names) != att.shape[0]:
            raise ValueError(f"{len(head_names)} head names for {att.shape[0]} heads")
        props["attentionHeadNames"] = list(head_names)
    return widget(page, "AttentionHeads", **props)


def colored_tokens(page: Page, str_tokens: Sequence[str], values: Sequence[float] | np.ndarray) -> str:
    """circuitsvis ``ColoredTokens``: each token shaded by a value (e.g. a probability)."""
    values = np.asarray(values, dtype=np.float64)
    if values.shape != (len(str_tokens),):
        raise ValueError(f"one value per token expected ({len(str_tokens)}), got shape {values.shape}")
    return widget(page, "ColoredTokens", tokens=list(str_tokens), values=values.round(5))


# ---------------------------------------------------------------------- plotly
PLOTLY_KEY = "plotly-bundle"


@functools.cache
def plotly_bundle() -> str:
    """plotly.js from the installed ``plotly`` package (no CDN), as inline-safe JavaScript."""
    try:
        from plotly.offline import get_plotlyjs
    except ImportError as exc:
        raise ImportError("interactive figures need plotly: pip install 'interp_toolkit[geometry]'") from exc
    return get_plotlyjs().replace("</script>", "<\\/script>")


def plotly_html(page: Page, fig) -> str:
    """HTML of one plotly figure: plotly.js goes into ``page`` once (``Page.once``), the figure
    is a ``<div>`` and a script that draws it — nothing is fetched from the network."""
    page.once(PLOTLY_KEY, f'<script data-bundle="plotly">{plotly_bundle()}</script>')
    el_id = "plotly-" + uuid.uuid4().hex[:12]
    return fig.to_html(full_html=False, include_plotlyjs=False, include_mathjax=False, div_id=el_id,
                       default_width="100%", default_height="420px", config={"displaylogo": False, "responsive": True})
