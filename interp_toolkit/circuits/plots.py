"""Figures of a ``CircuitResult`` (each takes the result, returns a matplotlib Figure)."""

from __future__ import annotations

import numpy as np

from ..core import new_figure


def faithfulness(res, **_):
    """f against circuit size (fraction of edges, log axis), one line per method."""
    fig, ax = new_figure(figsize=(6.4, 3.8))
    for m in res.methods:
        c = res.curves[m]
        ax.plot(np.asarray(res.sizes) * 100, c["f"], marker="o", ms=3,
                label=f"{m} (CPR {c['cpr']:.2f}, CMD {c['cmd']:.2f})")
    ax.axhline(1, color="#999", lw=0.8, ls="--")
    ax.axhline(0, color="#999", lw=0.8)
    ax.set_xscale("log")
    ax.set_xlabel("circuit size (% of edges)")
    ax.set_ylabel("faithfulness f")
    ax.set_title(f"{res.task}: faithfulness of the circuits")
    ax.legend(fontsize=7)
    return fig


def areas(res, **_):
    """CPR and CMD per method (bars)."""
    fig, ax = new_figure(figsize=(6.4, 3.0))
    x = np.arange(len(res.methods))
    ax.bar(x - 0.2, [res.curves[m]["cpr"] for m in res.methods], 0.4, label="CPR (higher better)")
    ax.bar(x + 0.2, [res.curves[m]["cmd"] for m in res.methods], 0.4, label="CMD (lower better)")
    ax.set_xticks(x, res.methods, rotation=20, fontsize=8)
    ax.legend(fontsize=7)
    return fig


def circuit(res, method: str | None = None, size: float = 0.01, max_edges: int = 80, **_):
    """The circuit drawn over layers: input at the bottom, each layer's heads then its MLP on a
    row, logits on top; edge width proportional to |score|."""
    method = method or res.best_method
    g = res.graph
    keep = res.circuit(method, size)
    s = np.abs(res.score_array(method))
    edges = np.flatnonzero(keep)
    edges = edges[np.argsort(-s[edges])][:max_edges]
    L, H = res.n_layers, res.n_heads

    def pos(sender):  # (x, y) of a sender node
        if sender == 0:
            return (H / 2, -1.0)
        l, j = divmod(sender - 1, H + 1)
        return (j + (0.5 if j == H else 0), l + (0.45 if j == H else 0))

    def rpos(e):
        node = g.receiver_node_ids[e]
        return (H / 2, L + 0.2) if node < 0 else pos(int(node))

    fig, ax = new_figure(figsize=(6.4, max(3.5, 0.28 * L + 2)))
    wmax = s[edges].max() if len(edges) else 1.0
    used = set()
    for e in edges:
        (x0, y0), (x1, y1) = pos(int(g.sender[e])), rpos(e)
        ax.plot([x0, x1], [y0, y1], color="#3a6fb0", alpha=0.6, lw=0.4 + 3.5 * s[e] / (wmax or 1))
        used |= {int(g.sender[e]), int(g.receiver_node_ids[e])}
    for sender in range(g.n_senders):
        x, y = pos(sender)
        on = sender in used
        ax.scatter([x], [y], s=14 if on else 4, color="#c0392b" if on else "#bbb", zorder=3,
                   marker="s" if (sender > 0 and (sender - 1) % (H + 1) == H) else "o")
        if on:
            ax.annotate(g.sender_names[sender], (x, y), fontsize=6, xytext=(2, 2), textcoords="offset points")
    ax.scatter([H / 2], [L + 0.2], s=20, color="k", zorder=3)
    ax.annotate("logits", (H / 2, L + 0.2), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.set_ylabel("layer")
    ax.set_xlabel("head (square: MLP)")
    ax.set_title(f"{res.task}: {method} circuit, {len(edges)} of {int(keep.sum())} edges shown")
    return fig
