"""The HTML reports in a real browser (headless Chromium): every inline figure decodes, and
the page loads nothing but itself and its data: URIs (the reports must work offline).

Needs the Debian package ``chromium`` (``make setup-browser``). Without it the tests skip,
except under CI (``CI`` set), where that is a failure.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from _engine_support import single_thread  # noqa: F401  (autouse fixture)
from interp_toolkit.interactions import PlayerTokens, compute_interactions
from interp_toolkit.interactions import analysis
from interp_toolkit.interactions.result import Comparison
from interp_toolkit.models import tiny_model
from interp_toolkit.strace import trace
from interp_toolkit.strace.dataset import trace_dataset
from interp_toolkit.strace.report import dataset_page

BROWSER = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)

# After the load event (and a pause of virtual time in which scripts render their widgets):
# how many <img> decoded *completely* (drawn on a canvas with no transparent pixel: the
# figures are opaque, and Chromium shows a truncated PNG as far as it goes, leaving the rest
# transparent); how many circuitsvis widget <div>s the bundle's JS filled with elements; how
# many plotly figures drew their SVG; and every resource the page fetched that is neither the
# page itself nor a data: URI — written into the DOM that --dump-dom prints.
PROBE = """<script>
addEventListener('load', () => setTimeout(() => {  // virtual time: --dump-dom waits for it
  const imgs = [...document.images];
  let ok = 0;
  for (const img of imgs) {
    try {
      const c = document.createElement('canvas');
      c.width = img.naturalWidth; c.height = img.naturalHeight;
      const ctx = c.getContext('2d');
      ctx.drawImage(img, 0, 0);
      const px = ctx.getImageData(0, 0, c.width, c.height).data;
      let transparent = 0;
      for (let i = 3; i < px.length; i += 4) if (px[i] === 0) transparent++;
      if (c.width > 0 && transparent === 0) ok++;
    } catch (e) { /* a broken image cannot be drawn: not counted */ }
  }
  const widgets = [...document.querySelectorAll('div.cv-widget')];
  const drawn = widgets.filter(w => w.querySelectorAll('*').length >= 5 && w.getBoundingClientRect().height > 20);
  const plots = [...document.querySelectorAll('div.plotly-graph-div')];
  const plotted = plots.filter(p => p.querySelector('svg.main-svg') && p.querySelector('.trace, .hm') !== null);
  const fetched = performance.getEntriesByType('resource').map(e => e.name)
      .filter(n => !n.startsWith('data:') && n !== location.href);
  const out = document.createElement('pre');
  out.id = 'probe';
  out.textContent = JSON.stringify({images: imgs.length, decoded: ok, widgets: widgets.length,
                                    widgets_drawn: drawn.length, plots: plots.length,
                                    plots_drawn: plotted.length, fetched: fetched});
  document.body.appendChild(out);
}, 3000));
</script>"""


@pytest.fixture(scope="module")
def browser():
    if BROWSER is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed: run `make setup-browser`")
        pytest.skip("chromium is not installed (make setup-browser)")
    return BROWSER


def _chromium(browser, tmp_path, *args) -> subprocess.CompletedProcess:
    cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
           "--disable-dev-shm-usage", f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=20000",
           *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=180)


def render(browser, html: str, tmp_path) -> dict:
    """Load ``html`` from a file in headless Chromium; the probe's findings."""
    assert "</body>" in html
    page = tmp_path / "report.html"
    page.write_text(html.replace("</body>", PROBE + "</body>"), encoding="utf-8")
    out = _chromium(browser, tmp_path, "--dump-dom", page.as_uri())
    m = re.search(r'<pre id="probe">(.*?)</pre>', out.stdout, re.S)
    assert m, f"the page did not finish loading (exit {out.returncode}): {out.stderr[-2000:]}"
    return json.loads(m.group(1).replace("&quot;", '"'))


def screenshot(browser, html: str, tmp_path, width: int = 1000, height: int = 900):
    """A headless-Chromium screenshot of ``html`` as an RGB array ``[height, width, 3]``."""
    from PIL import Image

    page, png = tmp_path / "shot.html", tmp_path / "shot.png"
    page.write_text(html, encoding="utf-8")
    png.unlink(missing_ok=True)
    out = _chromium(browser, tmp_path, "--hide-scrollbars", f"--window-size={width},{height}",
                    f"--screenshot={png}", page.as_uri())
    assert png.is_file(), f"no screenshot (exit {out.returncode}): {out.stderr[-2000:]}"
    return np.asarray(Image.open(png).convert("RGB"))


def is_blank(shot) -> bool:
    """Fewer than 1 % of the pixels differ from the background, or fewer than 16 colours."""
    background = shot[0, 0]
    changed = (np.abs(shot.astype(int) - background).sum(-1) > 30).mean()
    colours = len(np.unique(shot.reshape(-1, 3)[:: max(1, shot.size // 300000)], axis=0))
    return changed < 0.01 or colours < 16


def check(found: dict, min_images: int, min_widgets: int = 0, min_plots: int = 0) -> None:
    assert found["images"] >= min_images, found
    assert found["decoded"] == found["images"], f"{found['images'] - found['decoded']} figure(s) did not decode"
    assert found["widgets"] >= min_widgets and found["widgets_drawn"] == found["widgets"], \
        f"{found['widgets'] - found['widgets_drawn']} of {found['widgets']} circuitsvis widget(s) did not render"
    assert found["plots"] >= min_plots and found["plots_drawn"] == found["plots"], \
        f"{found['plots'] - found['plots_drawn']} of {found['plots']} plotly figure(s) did not render"
    assert found["fetched"] == [], found["fetched"]


@pytest.fixture(scope="module")
def tiny():
    return tiny_model("gpt2", n_layers=2, n_heads=2, init_std=0.3)


def test_probe_catches_a_broken_figure_and_a_network_request(browser, tmp_path):
    """The probe itself can fail: a PNG signature alone, a figure cut short (whose header and
    first rows still show), and an external image are reported; the whole figure is not."""
    from matplotlib.figure import Figure

    from interp_toolkit.core import img_tag

    fig = Figure(figsize=(2, 2))
    fig.add_subplot().plot([1, 3, 2])
    png = re.search(r"base64,([^\"]*)", img_tag(fig, "f")).group(1)
    html = ("<!DOCTYPE html><html><body><img src='data:image/png;base64,iVBORw0KGgo='>"
            f"<img src='data:image/png;base64,{png[: len(png) // 2]}'>"
            "<img src='http://127.0.0.1:9/x.png'></body></html>")
    found = render(browser, html, tmp_path)
    assert found["images"] == 3 and found["decoded"] == 0
    assert found["fetched"] == ["http://127.0.0.1:9/x.png"]
    whole = render(browser, f"<!DOCTYPE html><html><body><img src='data:image/png;base64,{png}'></body></html>",
                   tmp_path)
    assert whole["images"] == 1 and whole["decoded"] == 1 and whole["fetched"] == []


def test_trace_report_renders(browser, tiny, tmp_path):
    r = trace(tiny, torch.tensor([3, 9, 14, 2, 7, 11]), sizes=(0.05, 0.2, 0.5), keep_subgraphs=(0.2,),
              token_freq=None)
    check(render(browser, r.report(subgraph_size=0.2).render(), tmp_path), min_images=3)


def test_dataset_report_renders(browser, tiny, tmp_path):
    texts = ["the cat sat on", "a b c d e f", "hello world again"]
    other = tiny_model("gpt2", n_layers=2, n_heads=2, init_std=0.3, seed=3)
    runs = [trace_dataset(m, texts, None, sizes=(0.05, 0.2, 0.5), progress=False, token_freq=None)
            for m in (tiny, other)]
    check(render(browser, dataset_page(runs, command="pytest").render(), tmp_path), min_images=3)


def test_interaction_reports_render(browser, tmp_path):
    players = PlayerTokens.from_positions(list(range(5, 17)), [[1], [2, 3], [5], [7], [9, 10]])
    results = [compute_interactions(tiny_model("llama", init_std=0.3, dtype=torch.float64, seed=s), None,
                                    players=players, baseline="zero", target=4) for s in (3, 4)]
    check(render(browser, results[0].to_html(), tmp_path), min_images=1)
    cmp = Comparison(results=results, sharing=analysis.sharing(results[0], results[1]))
    check(render(browser, cmp.to_html(), tmp_path), min_images=3)


# ---------------------------------------------------------------------- widgets, analyze, notebooks
BUNDLE_SCRIPT = re.compile(r'<script data-bundle="circuitsvis">.*?</script>', re.S)
PLOTLY_SCRIPT = re.compile(r'<script data-bundle="plotly">.*?</script>', re.S)


def widget_page() -> str:
    """A page holding only circuitsvis widgets (two attention views and coloured tokens)."""
    from interp_toolkit.core import Page
    from interp_toolkit.core.widgets import attention_heads, colored_tokens

    tokens = ["The", " cat", " sat", " on", " the", " mat"]
    att = torch.rand(3, 6, 6).tril() + torch.eye(6)
    att = att / att.sum(-1, keepdim=True)
    page = Page("widgets")
    page.add(attention_heads(page, tokens, att), attention_heads(page, tokens, att[:2]),
             colored_tokens(page, tokens, [0.1, 0.9, 0.4, 0.0, 0.7, 0.2]))
    return page.render()


def test_widgets_render_and_the_checks_fail_without_the_bundle_or_with_a_cdn(browser, tmp_path):
    """Every widget draws (DOM built by the bundle's JS, a screenshot that is not blank); with
    the bundle removed, or replaced by the CDN copy (unreachable offline — and a fetch), the
    same checks fail."""
    good = widget_page()
    assert good.count('data-bundle="circuitsvis"') == 1
    check(render(browser, good, tmp_path), min_images=0, min_widgets=3)
    assert not is_blank(screenshot(browser, good, tmp_path))
    missing = BUNDLE_SCRIPT.sub("", good)
    cdn = BUNDLE_SCRIPT.sub('<script src="https://unpkg.com/circuitsvis@1.43.3/dist/cdn/iife.js"></script>', good)
    for broken in (missing, cdn):
        found = render(browser, broken, tmp_path)
        assert found["widgets"] == 3 and found["widgets_drawn"] == 0, found
        with pytest.raises(AssertionError, match="did not render"):
            check(found, min_images=0, min_widgets=3)
    assert is_blank(screenshot(browser, missing, tmp_path))


def test_plotly_figure_renders_offline_and_fails_without_its_bundle(browser, tmp_path):
    go = pytest.importorskip("plotly.graph_objects") if not os.environ.get("CI") else __import__(
        "plotly.graph_objects", fromlist=["Figure"])
    from interp_toolkit.core import Page
    from interp_toolkit.core.widgets import plotly_html

    page = Page("plotly")
    page.add(plotly_html(page, go.Figure(go.Scatter(x=[1, 2, 3], y=[2, 0, 1]))),
             plotly_html(page, go.Figure(go.Heatmap(z=[[1, 2], [3, 4]]))))
    good = page.render()
    check(render(browser, good, tmp_path), min_images=0, min_plots=2)
    for broken in (PLOTLY_SCRIPT.sub("", good),
                   PLOTLY_SCRIPT.sub('<script src="https://cdn.plot.ly/plotly-2.35.2.min.js"></script>', good)):
        with pytest.raises(AssertionError, match="did not render"):
            check(render(browser, broken, tmp_path), min_images=0, min_plots=2)


@pytest.mark.slow
def test_analyze_report_renders(browser, tiny, tmp_path):
    from interp_toolkit.analyze import analyze

    rep = analyze(tiny, "the cat sat on the mat and ran", options={"n_players": 3}, progress=False,
                  errors="raise")
    n_widgets = len(rep["attention"].layers)
    found = render(browser, rep.to_html(), tmp_path)
    # s-Trace: subgraph, TV, composition; interactions: strength by order; attention: last token
    check(found, min_images=5, min_widgets=n_widgets)
    assert found["widgets"] == n_widgets


@pytest.mark.slow
def test_notebook_exported_with_nbconvert_renders(browser, tmp_path, monkeypatch):
    """notebooks/00_analyze.ipynb executed on a tiny model, exported by nbconvert
    (``core.notebook.notebook_html``): its figures and widgets render, nothing is fetched."""
    nbformat = pytest.importorskip("nbformat")
    from nbclient import NotebookClient

    from interp_toolkit.core.notebook import notebook_html

    path = Path(__file__).resolve().parents[1] / "notebooks" / "00_analyze.ipynb"
    nb = nbformat.read(path, as_version=4)
    monkeypatch.setenv("INTERP_TOOLKIT_NOTEBOOK_MODEL", "tiny-random-gpt2")
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    html = notebook_html(nb)
    found = render(browser, html, tmp_path)
    check(found, min_images=5, min_widgets=2)
    # nbconvert's own template would load require.js and MathJax from a CDN: the check sees that
    from nbconvert import HTMLExporter

    stock, _ = HTMLExporter().from_notebook_node(nb)
    with pytest.raises(AssertionError):
        check(render(browser, stock, tmp_path), min_images=5, min_widgets=2)
