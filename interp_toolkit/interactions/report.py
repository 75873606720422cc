"""Interaction report pages, built from the shared report layer (``core.Page``: inline CSS,
figures as PNG data URIs, no scripts, no network).

``result_page(r)`` is what ``InteractionResult.report()`` returns and ``comparison_page(c)``
what ``Comparison.report()`` returns. For each model: the prompt with its players marked,
the top interactions (each drawn as the prompt with the words of S highlighted, blue for
positive, red for negative), strength by order and Shapley values; for a comparison also the
sharing tables and the two-model figure. Results are read duck-typed (this module sits below
``result``).
"""

from __future__ import annotations

import html

from ..core import Page, html_table, img_tag
from . import analysis
from .plots import plot_comparison, plot_strength_by_order
from .transforms import subset_of


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


def _result_section(page: Page, result, k: int = 12) -> None:
    meta = result.model
    sp = result.sparsification
    rows = [[r["kind"], r["order"], f"{r['value']:+.3f}", _prompt_html(result, r["mask"], 1.0 if r["value"] >= 0 else -1.0)]
            for r in result.top(k)]
    phi = result.shapley()
    od = analysis.order_distribution(result)
    page.section(str(meta.get("name", "model")),
                 f"<p>{_prompt_html(result)} → <b>{html.escape(repr(result.target))}</b></p>",
                 f"""<p class="meta">n = {result.n} players; v(N) − v(∅) = {result.v[-1] - result.v[0]:+.3f} (log-odds,
raw v(∅) = {result.v_empty:+.3f}); baseline {html.escape(result.baseline.kind)};
sparsification {html.escape(sp.method)}: L1 = {sp.l1:.3f}, |q| ≤ {sp.q_bound:.3f};
{sum(od['counts'])} salient interactions, mean order {od['mean_order']:.2f};
values {result.timings.get('values_s', float('nan')):.1f}s{html.escape(result.positions_note())}, sparsify {sp.seconds:.2f}s;
{html.escape(str(meta.get('dtype', '')))} model, {html.escape(result.dtype)} values</p>""")
    page.section("Top interactions", html_table(["kind", "order", "I(S)", "S"], rows, left=(0, 3), raw=(3,)), level=3)
    page.section("Strength by order", img_tag(plot_strength_by_order(result), "strength by order"), level=3)
    page.section("Shapley values (from the interactions)",
                 html_table(["word", "φ"], [[w.text, f"{p:+.3f}"] for w, p in zip(result.players.words, phi)],
                            left=(0,)), level=3)


def _sharing_table(sharing: dict) -> str:
    return html_table(["figure", "value"], list(sharing.items()), left=(0,))


def result_page(result, title: str | None = None) -> Page:
    """The report of one ``InteractionResult``."""
    page = Page(title or f"AND-OR interactions: {result.model.get('name', '')}")
    page.add(f"<p class='meta'>{html.escape(result.players.prompt)}</p>")
    _result_section(page, result)
    return page


def comparison_page(comparison, title: str | None = None) -> Page:
    """The report of a ``Comparison``: sharing tables, the two-model figure, each model."""
    results = comparison.results
    page = Page(title or f"Shared interactions: {', '.join(r.model.get('name', '?') for r in results)}")
    page.add(f"<p class='meta'>{html.escape(results[0].players.prompt)}</p>")
    page.section("Sharing (separate extraction)", _sharing_table(comparison.sharing), level=3)
    if comparison.joint_sharing is not None:
        page.section("Sharing (joint extraction)", _sharing_table(comparison.joint_sharing), level=3)
    page.add(img_tag(plot_comparison(comparison), "comparison"))
    for r in results:
        _result_section(page, r)
    return page
