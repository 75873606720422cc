"""Figures for s-Trace results (matplotlib, no pyplot state; every function returns a
``Figure`` and only reads results — the numbers are computed elsewhere)."""

from __future__ import annotations

import math

import numpy as np
from matplotlib.collections import LineCollection
from matplotlib.colors import to_rgba

from ..core import new_figure
from .graph import EDGE_KINDS, EDGE_TYPES
from .metrics import MINIMAL_CORE, PHASES, cross_model_rho, shared_inputs

CONDITION_STYLE = {"trace": ("C0", "trace-only"), "inverse": ("C3", "inverse"), "random": ("C7", "random connected")}
TYPE_COLORS = {"attention": "C0", "mlp": "C2", "residual": "C7"}
DEPTH_COLORS = ("#c6dbef", "#6baed6", "#2171b5", "#08306b")
KIND_COLORS = {"resid_attn": "0.35", "attn": "C0", "resid_mlp": "0.35", "mlp": "C2"}
# horizontal offset of each edge kind, so that the residual and MLP edges between the same
# two nodes do not hide each other
KIND_OFFSET = {"resid_attn": 0.0, "attn": 0.0, "resid_mlp": 0.0, "mlp": 0.22}


def _axes(ax, figsize=(6, 3.6)):
    if ax is not None:
        return ax.figure, ax
    return new_figure(figsize=figsize)


def phase_bands(ax, label: bool = True):
    """Shade the construction (1e-4..1e-2) and refinement (1e-2..1) bands; mark the
    minimal core (1e-3)."""
    colors = {"construction": "#fde0c5", "refinement": "#d9f0d3"}
    for name, (lo, hi) in PHASES.items():
        ax.axvspan(lo, hi, color=colors[name], alpha=0.5, lw=0, zorder=0)
        if label:
            ax.text(math.sqrt(lo * hi), 1.0, name, transform=ax.get_xaxis_transform(), ha="center", va="bottom",
                    fontsize=7, color="0.35")
    ax.axvline(MINIMAL_CORE, color="0.4", lw=0.8, ls=":", zorder=1)


def plot_tv_curve(result, ax=None, conditions=None):
    """TV to the full model's next-token distribution vs stratum size, one line per
    condition, over the phase bands."""
    fig, ax = _axes(ax)
    for c in conditions or result.conditions:
        color, label = CONDITION_STYLE[c]
        ax.plot(result.sizes, result.tv[c], marker="o", ms=3, color=color, label=f"{label} (AUC {result.auc_tv[c]:.2f})")
    phase_bands(ax)
    ax.set(xscale="log", ylim=(-0.02, 1.02), xlabel="stratum size s (fraction of edges)", ylabel="TV")
    ax.legend(fontsize=7, loc="lower left")
    return fig


def plot_dataset_tv(results, ax=None, condition: str = "trace", labels=None):
    """Median TV per size with the inter-quartile band, for one or several dataset runs."""
    results = results if isinstance(results, (list, tuple)) else [results]
    fig, ax = _axes(ax)
    for i, res in enumerate(results):
        s = res.tv_summary(condition)
        label = labels[i] if labels else f"{res.config.get('model', {}).get('name', '')} (n={res.n})"
        ax.plot(s.index, s["median"], color=f"C{i}", marker="o", ms=3, label=label)
        ax.fill_between(s.index, s["q25"], s["q75"], color=f"C{i}", alpha=0.2, lw=0)
    phase_bands(ax)
    ax.set(xscale="log", ylim=(-0.02, 1.02), xlabel="stratum size s", ylabel=f"TV ({condition}), median & IQR")
    ax.legend(fontsize=7, loc="lower left")
    return fig


def _composition_arrays(result):
    """(sizes, type shares [K,3], depth shares [K,4]) from a TraceResult or DatasetResult."""
    if hasattr(result, "composition_curves"):
        comp = result.composition_curves()
        sizes = np.asarray(comp.index, dtype=float)
        types = comp[[f"type_{t}" for t in EDGE_TYPES]].to_numpy()
        depth = comp[["depth_q1", "depth_q2", "depth_q3", "depth_q4"]].to_numpy()
        return sizes, types, depth
    return np.asarray(result.sizes), np.asarray(result.composition_type, float), np.asarray(result.composition_depth, float)


def plot_composition(result, axes=None):
    """Stacked areas: share of edges by type and by depth quartile, per stratum size."""
    sizes, types, depth = _composition_arrays(result)
    ok = ~np.isnan(types).any(1)
    if axes is None:
        fig, axes = new_figure(1, 2, figsize=(9, 3.4), sharey=True)
    fig = axes[0].figure
    axes[0].stackplot(sizes[ok], types[ok].T, labels=EDGE_TYPES, colors=[TYPE_COLORS[t] for t in EDGE_TYPES], alpha=0.85)
    axes[1].stackplot(sizes[ok], depth[ok].T, labels=["layers Q1 (early)", "Q2", "Q3", "Q4 (late)"],
                      colors=DEPTH_COLORS, alpha=0.9)
    for ax, title in zip(axes, ("edge type", "depth quartile")):
        phase_bands(ax, label=False)
        ax.set(xscale="log", ylim=(0, 1), xlabel="stratum size s", title=f"composition by {title}")
        ax.legend(fontsize=7, loc="lower left")
    axes[0].set_ylabel("share of the stratum's edges")
    return fig


def plot_subgraph(result, size: float | None = None, ax=None, max_edges: int = 4000):
    """A stored stratum drawn over positions (x) and residual slots (y): grey residual
    edges, blue attention edges (darker = heavier), green MLP edges."""
    if not result.subgraphs:
        raise ValueError("this result stores no subgraph; trace with keep_subgraphs=(size, ...)")
    if size is None:
        size = min(result.subgraphs)
    key = min(result.subgraphs, key=lambda s: abs(math.log10(s) - math.log10(size)))
    sub = result.subgraphs[key]
    T, L = result.n_pos, result.n_layers
    fig, ax = _axes(ax, figsize=(max(6, 0.28 * T + 2), max(4, 0.12 * (2 * L + 1) + 2)))
    src, dst = np.asarray(sub["src"]), np.asarray(sub["dst"])
    kind, w = np.asarray(sub["kind"]), np.asarray(sub["weight"], float)
    if len(w) > max_edges:  # keep the heaviest
        keep = np.argsort(-w)[:max_edges]
        src, dst, kind, w = src[keep], dst[keep], kind[keep], w[keep]
    for k, name in enumerate(EDGE_KINDS):
        sel = kind == k
        if not sel.any():
            continue
        dx = KIND_OFFSET[name]
        segs = np.stack([np.stack([src[sel] % T + dx, src[sel] // T], 1),
                         np.stack([dst[sel] % T + dx, dst[sel] // T], 1)], 1).astype(float)
        alpha = np.clip(0.25 + 0.75 * w[sel] / max(w.max(), 1e-12), 0, 1)
        colors = np.array([_rgba(KIND_COLORS[name], a) for a in alpha])
        ax.add_collection(LineCollection(segs, colors=colors, linewidths=1.4, label=name))
    nodes = np.unique(np.concatenate([src, dst]))
    ax.scatter(nodes % T, nodes // T, s=5, color="k", zorder=3)
    ax.set_xlim(-0.5, T - 0.5)
    ax.set_ylim(-0.5, 2 * L + 0.5)
    ax.set_xticks(range(T))
    ax.set_xticklabels([t.replace("\n", "\\n") for t in result.str_tokens], rotation=90, fontsize=6)
    yt = list(range(0, 2 * L + 1, max(1, (2 * L) // 10)))
    ax.set_yticks(yt)
    ax.set_yticklabels([("emb" if s == 0 else f"L{(s - 1) // 2}{'a' if s % 2 else 'm'}") for s in yt], fontsize=7)
    ax.set_title(f"stratum s={key:g}: {len(w)} edges", fontsize=9)
    ax.legend(fontsize=7, loc="upper left")
    return fig


def _rgba(color, alpha):
    r, g, b, _ = to_rgba(color)
    return (r, g, b, alpha)


def plot_entropy_auc(result, ax=None, condition: str = "trace"):
    """Entropy of the full output vs AUC-TV, one point per input, with Spearman ρ."""
    fig, ax = _axes(ax, figsize=(4.5, 3.6))
    t = result.ok
    rho = result.entropy_auc_spearman(condition)
    ax.scatter(t["entropy"], t[f"auc_tv_{condition}"], s=10, alpha=0.7)
    ax.set(xlabel="entropy of p_full (nats)", ylabel=f"AUC-TV ({condition})",
           title=f"Spearman ρ = {rho['rho']:.2f} (p = {rho['p']:.1g}, n = {rho['n']})")
    return fig


def plot_cross_model(a, b, ax=None, condition: str = "trace"):
    """AUC-TV of the same inputs under two models."""
    fig, ax = _axes(ax, figsize=(4.5, 3.6))
    col = f"auc_tv_{condition}"
    m = shared_inputs(a.ok, b.ok, col)
    r = cross_model_rho(a.ok, b.ok, condition)
    ax.scatter(m[f"{col}_a"], m[f"{col}_b"], s=10, alpha=0.7)
    ax.set(xlabel=f"AUC-TV, {a.config['model'].get('name')}", ylabel=f"AUC-TV, {b.config['model'].get('name')}",
           title=f"Spearman ρ = {r['rho']:.2f} (p = {r['p']:.1g}, n = {r['n']})")
    return fig


def plot_unigram(result, ax=None):
    """Unigram-frequency encoding of the strata's predictions vs size (dashed: full model)."""
    fig, ax = _axes(ax)
    if hasattr(result, "unigram_curve"):
        c = result.unigram_curve()
        sizes, vals, full = c.index, c["mean"], c["full_model"].iloc[0]
    else:
        sizes, vals, full = result.sizes, result.unigram, result.unigram_full
    ax.plot(sizes, vals, marker="o", ms=3)
    ax.axhline(full, color="k", ls="--", lw=0.8, label="full model")
    phase_bands(ax)
    ax.set(xscale="log", xlabel="stratum size s", ylabel="Spearman(p_stratum, unigram freq.)")
    ax.legend(fontsize=7)
    return fig


def plot_greedy(greedy, comparison=None, ax=None):
    """Objective vs number of kept components for the greedy oracle; with ``comparison``
    (``greedy.compare_with_strata`` rows), the norm-based strata at the same sizes."""
    fig, ax = _axes(ax)
    n = len(greedy.nodes)
    steps = np.arange(len(greedy.values))
    sizes = steps if greedy.direction == "forward" else n - steps
    ax.plot(sizes, greedy.values, marker=".", label=f"greedy ({greedy.direction})")
    if comparison:
        ax.scatter([r["components"] for r in comparison], [r["strata"] for r in comparison], color="C3", s=14,
                   label="norm-based strata", zorder=3)
    ax.set(xlabel="components kept (heads + MLPs)", ylabel=greedy.objective.upper(), yscale="symlog")
    ax.legend(fontsize=7)
    return fig
