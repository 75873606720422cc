"""Offline HTML reports (no scripts, no network: inline CSS and base64 PNG images).

``html_report(x)`` takes an ``InteractionResult`` or a ``Comparison`` and returns the page;
``write_report(x, path)`` writes it. For each model: the prompt with its players marked, the
top interactions (each drawn as the prompt with the words of S highlighted, blue for positive,
red for negative), and strength by order; for a comparison also the sharing figures and the
two-model plot.
"""

from __future__ import annotations

import html
from pathlib import Path

from ..html_figures import img_tag
from . import analysis
from .plots import plot_comparison, plot_strength_by_order
from .transforms import subset_of

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:24px;max-width:1100px;color:#222}
h1{font-size:20px} h2{font-size:17px;margin-top:28px} h3{font-size:15px}
table{border-collapse:collapse;font-size:13px;margin:8px 0}
td,th{border:1px solid #ddd;padding:3px 8px;text-align:left} th{background:#f4f4f4}
.w{padding:1px 2px;border-radius:3px} .pl{border-bottom:2px solid #888}
.pos{background:#9ecbff} .neg{background:#ffaaa5} .dim{color:#999}
.meta{color:#666;font-size:12px} img{max-width:100%}
"""


def _prompt_html(result, mask: int | None = None, sign: float = 1.0) -> str:
    """The prompt with players underlined; players of subset ``mask`` highlighted."""
    text = result.players.prompt
    members = set(subset_of(mask)) if mask is not None else set()

    def span(i: int, word: str) -> str:
        cls = "w pl" + ((" pos" if sign >= 0 else " neg") if i in members else "")
        return f'<span class="{cls}" title="player {i}">{html.escape(word)}</span>'

    if not text or result.players.words[0].start < 0:  # players given as token positions
        return " ".join(span(i, w.text) for i, w in enumerate(result.players.words))
    out, pos = [], 0
    for i, w in enumerate(result.players.words):
        out.append(html.escape(text[pos:w.start]))
        out.append(span(i, text[w.start:w.end]))
        pos = w.end
    out.append(html.escape(text[pos:]))
    return "".join(out)


def _result_section(result, k: int = 12) -> str:
    meta = result.model
    sp = result.sparsification
    rows = []
    for r in result.top(k):
        sign = 1.0 if r["value"] >= 0 else -1.0
        rows.append(f"<tr><td>{r['kind']}</td><td>{r['order']}</td><td>{r['value']:+.3f}</td>"
                    f"<td>{_prompt_html(result, r['mask'], sign)}</td></tr>")
    phi = result.shapley()
    shap = "".join(f"<tr><td>{html.escape(w.text)}</td><td>{p:+.3f}</td></tr>"
                   for w, p in zip(result.players.words, phi))
    img = img_tag(plot_strength_by_order(result), "strength by order")
    od = analysis.order_distribution(result)
    return f"""
<h2>{html.escape(str(meta.get('name', 'model')))}</h2>
<p>{_prompt_html(result)} → <b>{html.escape(repr(result.target))}</b></p>
<p class="meta">n = {result.n} players; v(N) − v(∅) = {result.v[-1] - result.v[0]:+.3f} (log-odds,
raw v(∅) = {result.v_empty:+.3f}); baseline {html.escape(result.baseline.kind)};
sparsification {html.escape(sp.method)}: L1 = {sp.l1:.3f}, |q| ≤ {sp.q_bound:.3f};
{sum(od['counts'])} salient interactions, mean order {od['mean_order']:.2f};
values {result.timings.get('values_s', float('nan')):.1f}s{html.escape(result.positions_note())}, sparsify {sp.seconds:.2f}s;
{html.escape(str(meta.get('dtype', '')))} model, {html.escape(result.dtype)} values</p>
<h3>Top interactions</h3>
<table><tr><th>kind</th><th>order</th><th>I(S)</th><th>S</th></tr>{''.join(rows)}</table>
<h3>Strength by order</h3>{img}
<h3>Shapley values (from the interactions)</h3><table><tr><th>word</th><th>φ</th></tr>{shap}</table>
"""


def _sharing_table(sharing: dict, title: str) -> str:
    rows = "".join(f"<tr><td>{html.escape(k)}</td><td>{v:.3f}</td></tr>" if isinstance(v, float)
                   else f"<tr><td>{html.escape(k)}</td><td>{v}</td></tr>" for k, v in sharing.items())
    return f"<h3>{html.escape(title)}</h3><table>{rows}</table>"


def html_report(x, title: str | None = None) -> str:
    """The report page for an ``InteractionResult`` or a ``Comparison``."""
    from .result import Comparison

    if isinstance(x, Comparison):
        results = x.results
        body = [_sharing_table(x.sharing, "Sharing (separate extraction)")]
        if x.joint_sharing is not None:
            body.append(_sharing_table(x.joint_sharing, "Sharing (joint extraction)"))
        body.append(img_tag(plot_comparison(x), "comparison"))
        body += [_result_section(r) for r in results]
        head = title or f"Shared interactions: {', '.join(r.model.get('name', '?') for r in results)}"
        prompt = results[0].players.prompt
    else:
        body = [_result_section(x)]
        head = title or f"AND-OR interactions: {x.model.get('name', '')}"
        prompt = x.players.prompt
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(head)}</title>"
            f"<style>{_CSS}</style></head><body><h1>{html.escape(head)}</h1>"
            f"<p class='meta'>{html.escape(prompt)}</p>{''.join(body)}</body></html>")


def write_report(x, path, title: str | None = None) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(html_report(x, title), encoding="utf-8")
    return path
