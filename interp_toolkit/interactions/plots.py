"""Matplotlib figures for interaction results (computation lives elsewhere)."""

from __future__ import annotations

import numpy as np

from ..core import new_figure
from . import analysis


def plot_strength_by_order(result, ax=None, salient_only: bool = True, title: str | None = None):
    """Positive (up) and negative (down) strength of AND and OR interactions per order."""
    if ax is None:
        fig, ax = new_figure(figsize=(6, 3.2))
    else:
        fig = ax.figure
    s = analysis.strength_by_order(result, salient_only=salient_only)
    n = len(s["AND"]["positive"]) - 1
    orders = np.arange(1, n + 1)
    w = 0.38
    for off, kind, color in ((-w / 2, "AND", "tab:blue"), (w / 2, "OR", "tab:orange")):
        pos = np.asarray(s[kind]["positive"])[1:]
        neg = np.asarray(s[kind]["negative"])[1:]
        ax.bar(orders + off, pos, w, color=color, label=f"{kind} +")
        ax.bar(orders + off, -neg, w, color=color, alpha=0.45, hatch="//", label=f"{kind} −")
    ax.axhline(0, color="k", lw=0.6)
    ax.set_xticks(orders)
    ax.set_xlabel("order |S|")
    ax.set_ylabel("strength (salient)" if salient_only else "strength")
    name = getattr(result, "model", {}).get("name", "") if hasattr(result, "model") else ""
    ax.set_title(title or (f"interaction strength by order — {name}" if name else "interaction strength by order"),
                 fontsize=10)
    ax.legend(fontsize=7, ncol=4)
    return fig


def plot_comparison(comparison, tau_rel: float = analysis.TAU_REL):
    """Two-model view: I₁(S) against I₂(S) over the union of salient sets, and the order
    histogram of shared vs non-shared salient interactions."""
    r1, r2 = comparison.results[0], comparison.results[1]
    f1, f2 = analysis.flat(r1), analysis.flat(r2)
    s1, s2 = analysis.salient(r1, tau_rel), analysis.salient(r2, tau_rel)
    sel = s1 | s2
    fig, axes = new_figure(1, 2, figsize=(10, 3.6))
    ax = axes[0]
    for kind, marker in (("AND", "o"), ("OR", "s")):
        m = sel & (f1["kinds"] == kind)
        ax.scatter(f1["values"][m], f2["values"][m], s=14, marker=marker, alpha=0.7, label=kind)
    lim = max(1e-9, np.abs(np.concatenate([f1["values"][sel], f2["values"][sel]])).max()) if sel.any() else 1
    ax.axhline(0, color="k", lw=0.5)
    ax.axvline(0, color="k", lw=0.5)
    ax.set_xlim(-1.05 * lim, 1.05 * lim)
    ax.set_ylim(-1.05 * lim, 1.05 * lim)
    ax.set_xlabel(f"I — {r1.model.get('name', 'model 1')}")
    ax.set_ylabel(f"I — {r2.model.get('name', 'model 2')}")
    ax.set_title("interactions salient in either model", fontsize=10)
    ax.legend(fontsize=8)
    ax = axes[1]
    n = r1.n
    orders = np.arange(1, n + 1)
    w = 0.2
    for k, (res, other, label) in enumerate(((r1, r2, r1.model.get("name", "1")), (r2, r1, r2.model.get("name", "2")))):
        split = analysis.shared_vs_nonshared(res, other, tau_rel)
        for j, g in enumerate(("shared", "non_shared")):
            counts = np.asarray(split[g]["orders"]["counts"])[1:]
            ax.bar(orders + (2 * k + j - 1.5) * w, counts, w, label=f"{label} {g.replace('_', '-')}",
                   color=("tab:blue", "tab:orange")[k], alpha=1.0 if g == "shared" else 0.4,
                   hatch=None if g == "shared" else "//")
    ax.set_xticks(orders)
    ax.set_xlabel("order |S|")
    ax.set_ylabel("# salient interactions")
    ax.set_title("shared vs non-shared by order", fontsize=10)
    ax.legend(fontsize=7)
    return fig


def plot_aggregate(agg: dict, title: str | None = None):
    """Pooled shared vs non-shared interactions over prompts (``analysis.aggregate``): the
    fraction of each group's salient interactions per order, and mean cancellation
    |Σ I| / Σ |I| per order (1 = all one sign, 0 = they cancel)."""
    fig, axes = new_figure(1, 2, figsize=(10, 3.4))
    pooled = agg["pooled"]
    n = len(pooled["shared"]["order_frac"]) - 1
    orders = np.arange(1, n + 1)
    w = 0.38
    for j, (g, color) in enumerate((("shared", "tab:green"), ("non_shared", "tab:gray"))):
        p = pooled[g]
        label = f"{g.replace('_', '-')} (n = {p['count']}, mean order {p['mean_order']:.2f})"
        axes[0].bar(orders + (j - 0.5) * w, np.asarray(p["order_frac"])[1:], w, color=color, label=label)
        canc = np.asarray(p["cancellation_per_order"], dtype=np.float64)[1:]
        axes[1].plot(orders, canc, "o-", color=color,
                     label=f"{g.replace('_', '-')} (overall {p['cancellation_overall']:.2f})")
    axes[0].set_ylabel("fraction of salient interactions")
    axes[1].set_ylabel("|ΣI| / Σ|I|  (1 = no cancellation)")
    axes[1].set_ylim(0, 1.05)
    for ax in axes:
        ax.set_xticks(orders)
        ax.set_xlabel("order |S|")
        ax.legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig
