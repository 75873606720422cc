"""Offline HTML reports: figures embedded as base64 PNG, no scripts, no external links."""

from __future__ import annotations

import html
import math
from pathlib import Path

from ..html_figures import img_tag
from . import plots

_STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2em auto;max-width:1100px;color:#222}
table{border-collapse:collapse;font-size:13px;margin:1em 0}
td,th{border:1px solid #ccc;padding:3px 7px;text-align:right}
th{background:#f3f3f3}
td.l,th.l{text-align:left}
img{max-width:100%;margin:0.5em 0}
code,pre{background:#f6f6f6;padding:2px 4px}
.small{color:#666;font-size:12px}
"""


def _fmt(v, digits=3) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    if isinstance(v, float):
        return f"{v:.{digits}g}" if abs(v) < 1e-2 and v != 0 else f"{v:.{digits}f}"
    return html.escape(str(v))


def _table(header, rows, left=()) -> str:
    th = "".join(f'<th class="{"l" if i in left else ""}">{html.escape(str(h))}</th>' for i, h in enumerate(header))
    body = "".join("<tr>" + "".join(f'<td class="{"l" if i in left else ""}">{_fmt(c)}</td>'
                                    for i, c in enumerate(r)) + "</tr>" for r in rows)
    return f"<table><tr>{th}</tr>{body}</table>"


def _page(title: str, body: str) -> str:
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{_STYLE}</style></head><body>{body}</body></html>")


def trace_report_html(result, subgraph_size: float | None = None) -> str:
    """HTML for one ``TraceResult``."""
    conds = result.conditions
    header = ["size", "edges"] + [f"TV {c}" for c in conds] + ["KL trace", "nucleus %", "attn", "mlp", "resid",
                                                              "unigram", "top-1"]
    rows = []
    for i, s in enumerate(result.sizes):
        comp = result.composition_type[i]
        rows.append([f"{s:g}", result.counts[i], *[result.tv[c][i] for c in conds], result.kl["trace"][i],
                     result.nucleus["trace"][i], *comp, result.unigram[i], repr(result.stratum_top[i])])
    top = ", ".join(f"{html.escape(repr(t))} ({p:.3f})" for _, t, p in result.full_top)
    req = _table(["nucleus target %", "required size"], [[k, v] for k, v in result.required_size.items()])
    timing = ", ".join(f"{k} {v:.2f} s" for k, v in result.timings.items() if not k.endswith("_cpu"))
    meta = ", ".join(f"{html.escape(str(k))}={html.escape(str(v))}" for k, v in result.meta.items())
    prompt = html.escape(result.prompt if result.prompt is not None else " ".join(result.str_tokens))
    figs = [img_tag(plots.plot_tv_curve(result), "TV vs size"), img_tag(plots.plot_composition(result), "composition")]
    if result.subgraphs:
        figs.append(img_tag(plots.plot_subgraph(result, subgraph_size), "subgraph"))
    body = (
        f"<h1>s-Trace</h1><p><b>Prompt</b> ({result.n_pos} tokens): <code>{prompt}</code></p>"
        f"<p>Graph: {result.n_edges} edges, {result.n_nodes} nodes ({result.n_layers} layers × {result.n_heads} heads); "
        f"importance <b>{html.escape(result.mode)}</b>; entropy of the full output {result.entropy:.3f} nats; "
        f"full model's top tokens: {top}.</p>"
        f"<p>AUC-TV: " + ", ".join(f"{c} {result.auc_tv[c]:.3f}" for c in conds) + "</p>"
        + "".join(figs)
        + _table(header, rows, left=(len(header) - 1,)) + req
        + f"<p class='small'>Timings: {timing}.<br>Model and settings: {meta}.</p>"
        + "<p class='small'>TV = ½Σ|p_full − p_stratum| of the next-token distribution at the last position. "
          "trace-only keeps only the stratum's edges (every other edge zero-ablated), inverse ablates only the "
          "stratum, random keeps a random connected subgraph with as many edges. Phase bands: construction "
          "1e-4…1e-2, refinement 1e-2…1; dotted line: minimal core 1e-3.</p>"
    )
    return _page("s-Trace report", body)


def write_trace_report(result, path, subgraph_size: float | None = None) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(trace_report_html(result, subgraph_size), encoding="utf-8")
    return path


def dataset_report_html(results, title: str = "s-Trace over a dataset", command: str | None = None) -> str:
    """HTML for one or two ``DatasetResult`` runs (two: with the cross-model comparison)."""
    from .dataset import cross_model_rho

    results = results if isinstance(results, (list, tuple)) else [results]
    parts = [f"<h1>{html.escape(title)}</h1>"]
    if command:
        parts.append(f"<pre>{html.escape(command)}</pre>")
    parts.append(img_tag(plots.plot_dataset_tv(list(results)), "TV vs size"))
    for res in results:
        name = html.escape(str(res.config.get("model", {}).get("name")))
        tv = res.tv_at((1e-3, 1e-2, 1e-1))
        rho = res.entropy_auc_spearman()
        early = res.early_share()
        parts.append(f"<h2>{name} (n = {res.n})</h2>")
        parts.append(_table(["size", "median TV", "q25", "q75"],
                            [[f"{s:g}", r["median"], r["q25"], r["q75"]] for s, r in tv.iterrows()]))
        parts.append(f"<p>Spearman ρ(entropy, AUC-TV) = {rho['rho']:.3f} (p = {rho['p']:.2g}); share of edges from "
                     f"the first quarter of the layers in the minimal core (s = {early['size']:g}): "
                     f"{early['first_quarter_mean']:.3f} (first half: {early['first_half_mean']:.3f}).</p>")
        parts.append(img_tag(plots.plot_composition(res), "composition"))
        parts.append(img_tag(plots.plot_entropy_auc(res), "entropy vs AUC"))
        parts.append(img_tag(plots.plot_unigram(res), "unigram encoding"))
    if len(results) == 2:
        r = cross_model_rho(*results)
        parts.append(f"<h2>Across models</h2><p>Spearman ρ of AUC-TV = {r['rho']:.3f} (p = {r['p']:.2g}, "
                     f"n = {r['n']} shared inputs).</p>")
        parts.append(img_tag(plots.plot_cross_model(*results), "cross-model AUC-TV"))
    return _page(title, "".join(parts))


def write_dataset_report(results, path, **kwargs) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(dataset_report_html(results, **kwargs), encoding="utf-8")
    return path
