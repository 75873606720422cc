"""s-Trace report pages, built from the shared report layer (``core.Page``): figures as PNG
data URIs, no scripts, no external links.

``trace_page(result)`` is what ``TraceResult.report()`` returns; ``dataset_page(runs)`` what
``DatasetResult.report()`` returns, and with two runs it adds the cross-model comparison.
Both only read results (duck-typed), so this module sits below ``results`` and ``dataset``.
"""

from __future__ import annotations

import html
from typing import Sequence

from ..core import Page, html_table, img_tag
from ..core.report import meta_line
from . import plots
from .metrics import cross_model_rho

CONDITIONS_NOTE = ("TV = ½Σ|p_full − p_stratum| of the next-token distribution at the last position. "
                   "trace-only keeps only the stratum's edges (every other edge zero-ablated), inverse ablates "
                   "only the stratum, random keeps a random connected subgraph with as many edges. Phase bands: "
                   "construction 1e-4…1e-2, refinement 1e-2…1; dotted line: minimal core 1e-3.")


def trace_page(result, subgraph_size: float | None = None) -> Page:
    """The report of one ``TraceResult``: summary, TV / composition / subgraph figures, the
    per-stratum table and the required sizes."""
    conds = result.conditions
    header = ["size", "edges"] + [f"TV {c}" for c in conds] + ["KL trace", "nucleus %", "attn", "mlp", "resid",
                                                              "unigram", "top-1"]
    rows = []
    for i, s in enumerate(result.sizes):
        rows.append([f"{s:g}", result.counts[i], *[result.tv[c][i] for c in conds], result.kl["trace"][i],
                     result.nucleus["trace"][i], *result.composition_type[i], result.unigram[i],
                     repr(result.stratum_top[i])])
    top = ", ".join(f"{html.escape(repr(t))} ({p:.3f})" for _, t, p in result.full_top)
    timing = ", ".join(f"{k} {v:.2f} s" for k, v in result.timings.items() if not k.endswith("_cpu"))
    prompt = html.escape(result.prompt if result.prompt is not None else " ".join(result.str_tokens))
    figs = [img_tag(plots.plot_tv_curve(result), "TV vs size"), img_tag(plots.plot_composition(result), "composition")]
    if result.subgraphs:
        figs.append(img_tag(plots.plot_subgraph(result, subgraph_size), "subgraph"))
    page = Page("s-Trace report")
    page.add(f"<p><b>Prompt</b> ({result.n_pos} tokens): <code>{prompt}</code></p>",
             f"<p>Graph: {result.n_edges} edges, {result.n_nodes} nodes ({result.n_layers} layers × "
             f"{result.n_heads} heads); importance <b>{html.escape(result.mode)}</b>; entropy of the full output "
             f"{result.entropy:.3f} nats; full model's top tokens: {top}.</p>",
             "<p>AUC-TV: " + ", ".join(f"{c} {result.auc_tv[c]:.3f}" for c in conds) + "</p>")
    page.section("Fidelity by stratum size", *figs, guide=CONDITIONS_NOTE)
    page.section("Strata", html_table(header, rows, left=(len(header) - 1,)),
                 html_table(["nucleus target %", "required size"], [[k, v] for k, v in result.required_size.items()]))
    page.add(f"<p class='small'>Timings: {html.escape(timing)}.</p>", meta_line(result.meta))
    return page


def dataset_page(runs: Sequence, title: str = "s-Trace over a dataset", command: str | None = None) -> Page:
    """The report of one or two ``DatasetResult`` runs (two: with the cross-model comparison)."""
    runs = list(runs)
    page = Page(title)
    if command:
        page.add(f"<pre>{html.escape(command)}</pre>")
    page.add(img_tag(plots.plot_dataset_tv(runs), "TV vs size"))
    for res in runs:
        name = str(res.config.get("model", {}).get("name"))
        tv = res.tv_at((1e-3, 1e-2, 1e-1))
        rho = res.entropy_auc_spearman()
        early = res.early_share()
        page.section(f"{name} (n = {res.n})",
                     html_table(["size", "median TV", "q25", "q75"],
                                [[f"{s:g}", r["median"], r["q25"], r["q75"]] for s, r in tv.iterrows()]),
                     f"<p>Spearman ρ(entropy, AUC-TV) = {rho['rho']:.3f} (p = {rho['p']:.2g}); share of edges from "
                     f"the first quarter of the layers in the minimal core (s = {early['size']:g}): "
                     f"{early['first_quarter_mean']:.3f} (first half: {early['first_half_mean']:.3f}).</p>",
                     img_tag(plots.plot_composition(res), "composition"),
                     img_tag(plots.plot_entropy_auc(res), "entropy vs AUC"),
                     img_tag(plots.plot_unigram(res), "unigram encoding"))
    if len(runs) == 2:
        r = cross_model_rho(runs[0].ok, runs[1].ok)
        page.section("Across models", f"<p>Spearman ρ of AUC-TV = {r['rho']:.3f} (p = {r['p']:.2g}, "
                                      f"n = {r['n']} shared inputs).</p>",
                     img_tag(plots.plot_cross_model(*runs), "cross-model AUC-TV"))
    return page
