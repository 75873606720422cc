"""``core.widgets.plotly_html``: plotly figures inlined offline, plotly.js once per page."""

from __future__ import annotations

import json
import os
import re

import pytest

if os.environ.get("CI"):
    import plotly.graph_objects as go
else:
    go = pytest.importorskip("plotly.graph_objects", reason="plotly is in the dev and geometry extras")

from interp_toolkit.core import Page
from interp_toolkit.core.widgets import PLOTLY_KEY, plotly_bundle, plotly_html


def test_plotly_bundle_once_per_page_and_figure_data_inline():
    page = Page("p")
    a = plotly_html(page, go.Figure(go.Scatter(x=[1, 2, 3], y=[3, 1, 2], name="first")))
    b = plotly_html(page, go.Figure(go.Heatmap(z=[[0.25, 0.5], [0.75, 1.0]])))
    page.section("figures", a, b)
    html = page.render()
    assert list(page.head) == [PLOTLY_KEY] and html.count('data-bundle="plotly"') == 1
    ids = re.findall(r'<div id="(plotly-[0-9a-f]{12})"', html)
    assert len(ids) == 2 and ids[0] != ids[1]
    # the traces travel as JSON inside the page
    calls = re.findall(r'Plotly\.newPlot\(\s*"(plotly-[0-9a-f]{12})",\s*(\[.*?\]),\s*\{', html, re.S)
    assert [c[0] for c in calls] == ids
    assert json.loads(calls[0][1])[0]["y"] == [3, 1, 2]
    assert json.loads(calls[1][1])[0]["z"] == [[0.25, 0.5], [0.75, 1.0]]
    # nothing is loaded from elsewhere: no external script, no CDN in the figures' HTML
    # (the browser test checks that the page fetches nothing)
    assert not re.search(r"<script[^>]*\bsrc=", html)
    assert "cdn" not in a + b and "http" not in a + b
    # the bundle is the installed plotly.js, and the notebook fragment carries it too
    assert plotly_bundle()[:2000] in html and plotly_bundle()[:2000] in page.fragment()
    assert "</script>" not in plotly_bundle()
