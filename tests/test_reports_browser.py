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

# After the load event: how many <img> decoded *completely* (drawn on a canvas with no
# transparent pixel: the figures are opaque, and Chromium shows a truncated PNG as far as it
# goes, leaving the rest transparent), and every resource the page fetched that is neither
# the page itself nor a data: URI, written into the DOM that --dump-dom prints.
PROBE = """<script>
addEventListener('load', () => {  // images have loaded by now; no await (--dump-dom would not wait)
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
  const fetched = performance.getEntriesByType('resource').map(e => e.name)
      .filter(n => !n.startsWith('data:') && n !== location.href);
  const out = document.createElement('pre');
  out.id = 'probe';
  out.textContent = JSON.stringify({images: imgs.length, decoded: ok, fetched: fetched});
  document.body.appendChild(out);
});
</script>"""


@pytest.fixture(scope="module")
def browser():
    if BROWSER is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed: run `make setup-browser`")
        pytest.skip("chromium is not installed (make setup-browser)")
    return BROWSER


def render(browser, html: str, tmp_path) -> dict:
    """Load ``html`` from a file in headless Chromium; the probe's findings."""
    assert "</body>" in html
    page = tmp_path / "report.html"
    page.write_text(html.replace("</body>", PROBE + "</body>"), encoding="utf-8")
    cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
           "--disable-dev-shm-usage", f"--user-data-dir={tmp_path / 'profile'}",
           "--virtual-time-budget=10000", "--dump-dom", page.as_uri()]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    m = re.search(r'<pre id="probe">(.*?)</pre>', out.stdout, re.S)
    assert m, f"the page did not finish loading (exit {out.returncode}): {out.stderr[-2000:]}"
    return json.loads(m.group(1).replace("&quot;", '"'))


def check(found: dict, min_images: int) -> None:
    assert found["images"] >= min_images, found
    assert found["decoded"] == found["images"], f"{found['images'] - found['decoded']} figure(s) did not decode"
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
