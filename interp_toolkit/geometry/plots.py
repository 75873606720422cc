"""Static figures of ``GeometryResult`` (matplotlib, via ``core.new_figure``).

Colours: attention blue and MLP red, each shaded light → dark with depth; positions with
the viridis map."""

from __future__ import annotations

import numpy as np
from matplotlib import colormaps

from ..core import new_figure
from .colours import depth_colours
from .interactive import attn_mlp_figure, pc3d_figure

POINT_COLOURS = {"norm1": "#8c8c8c", "attn_out": "#1f5fbf", "resid_mid": "#6a3d9a", "norm2": "#b0b0b0",
                 "mlp_out": "#c0392b", "resid_post": "#111111", "embed": "#2ca02c", "final_norm": "#e67e22"}


def norms_by_layer(r, first_position: int = 1):
    fig, ax = new_figure(figsize=(6.5, 3.6))
    for p in r.points:
        if p in ("embed", "final_norm"):
            continue
        ax.plot(r.layers, r.norm_by_layer(p, first_position), marker=".", color=POINT_COLOURS[p], label=p)
    if r.seq_len > 1 and "resid_post" in r.points:
        ax.plot(r.layers, r.norms[r._rows("resid_post")][:, 0], ls="--", color="k", label="resid_post, position 0")
    ax.set(xlabel="layer", ylabel="mean L2 norm", yscale="log", title=f"Norm by layer (positions ≥ {first_position})")
    ax.legend(fontsize=7, ncol=2)
    return fig


def norms_by_position(r, point: str = "resid_post", n_layers: int = 6):
    fig, ax = new_figure(figsize=(6.5, 3.6))
    rows = r._rows(point)
    pick = np.unique(np.linspace(0, len(rows) - 1, min(n_layers, len(rows))).round().astype(int))
    cols = colormaps["viridis"](np.linspace(0, 0.9, len(pick)))
    for c, k in zip(cols, pick):
        label = f"layer {r.layers[k]}" if len(rows) > 1 else point
        ax.plot(np.arange(r.seq_len), r.norms[rows[k]], color=c, label=label)
    ax.set(xlabel="position", ylabel="mean L2 norm", yscale="log", title=f"{point} norm by position")
    ax.legend(fontsize=7)
    return fig


def separability(r):
    s = r.separability
    fig, ax = new_figure(figsize=(6.5, 3.4))
    ax.plot(s["layers"], s["probe_accuracy"], marker="o", color="k", label="probe accuracy (held out)")
    ax.plot(s["layers"], s["silhouette"], marker="s", color="#1f5fbf", label="silhouette (cosine)")
    ax.plot(s["layers"], s["silhouette_pca2"], marker="^", color="#c0392b", label="silhouette (2 PCs)")
    ax.axhline(0.5, color="grey", lw=0.6, ls=":")
    ax.set(xlabel="layer", ylim=(-0.2, 1.02), title="Attention vs MLP outputs: separability")
    ax.legend(fontsize=7)
    return fig


def sequence(r):
    q = r.sequence
    fig, ax = new_figure(figsize=(6.5, 3.2))
    ax.plot(q["layers"], q["rate"], marker="o", color="k", label=f"same-sequence share of {q['k']} nearest neighbours")
    ax.plot(q["layers"], q["chance"], ls=":", color="grey", label="chance")
    ax.set(xlabel="layer", ylim=(0, 1.02), title=f"Sequence-wise grouping of {q['point']}")
    ax.legend(fontsize=7)
    return fig


def attn_mlp(r, s: float = 5.0, interactive: bool = False):
    """Attention vs MLP outputs in the joint 2-D PCA (``interactive``: a plotly figure)."""
    if interactive:
        return attn_mlp_figure(r)
    v = r.view
    fig, ax = new_figure(figsize=(5.6, 4.6))
    layers = list(v["layers"])
    for is_mlp, kind, name in ((0, "attn", "attention"), (1, "mlp", "MLP")):
        cols = depth_colours(kind, len(layers))
        for c, l in zip(cols, layers):
            m = (v["is_mlp"] == is_mlp) & (v["layer"] == l)
            ax.scatter(v["coords"][m, 0], v["coords"][m, 1], s=s, color=c, alpha=0.6, lw=0,
                       label=f"{name} (light → dark: layer {layers[0]} → {layers[-1]})" if l == layers[-1] else None)
    ev = v["explained_ratio"]
    ax.set(xlabel=f"PC1 ({ev[0]:.0%})", ylabel=f"PC2 ({ev[1]:.0%})", title="Attention (blue) vs MLP (red) outputs")
    ax.legend(fontsize=7, markerscale=3)
    return fig


def pc_pairs(r, interactive: bool = False):
    """The 15 pairs of the first 6 PCs by position (``interactive``: a 3-D plotly curve of PC1–3)."""
    if interactive:
        return pc3d_figure(r)
    g = r.grid
    pairs = g["pairs"]
    ncols = 5
    nrows = int(np.ceil(len(pairs) / ncols))
    fig, axes = new_figure(nrows, ncols, figsize=(2.3 * ncols, 2.2 * nrows))
    axes = np.atleast_1d(axes).ravel()
    pos = np.asarray(g["positions"])
    for ax, p in zip(axes, pairs):
        x, y = g["coords"][:, p["i"]], g["coords"][:, p["j"]]
        ax.plot(x, y, color="#bbbbbb", lw=0.5, zorder=0)
        sc = ax.scatter(x, y, c=pos, cmap="viridis", s=6)
        ax.set_title(f"PC{p['i'] + 1}–PC{p['j'] + 1}  circ {p['score']:.2f}", fontsize=8)
        ax.set_xticks([]), ax.set_yticks([])
    for ax in axes[len(pairs):]:
        ax.set_axis_off()
    fig.colorbar(sc, ax=list(axes), label="position", shrink=0.6)
    fig.suptitle(f"Position-averaged {g['point']}: pairs of the first {g['coords'].shape[1]} PCs", fontsize=10)
    return fig


def token_norms(r, top: int = 12):
    t = r.token_norms
    norms = np.asarray(t["norms"])
    fig, (a1, a2) = new_figure(1, 2, figsize=(9, 3.4))
    last = norms[:, -1]
    a1.hist(last, bins=60, color="#444444")
    a1.set(xlabel=f"‖{t['point']}‖ (last layer captured)", ylabel="tokens", yscale="log", title="Per-token norms")
    cols = colormaps["viridis"](np.linspace(0, 0.9, norms.shape[1]))
    order = np.argsort(-last)[:top]
    for k in range(norms.shape[1]):
        a2.plot(np.arange(len(order)), norms[order, k], color=cols[k], lw=0.8)
    labels = [r.str_tokens[i] if r.str_tokens else str(int(t["tokens"][i])) for i in order]
    a2.set_xticks(np.arange(len(order)), [repr(s)[1:-1][:10] for s in labels], rotation=70, fontsize=7)
    a2.set(ylabel="norm (one line per layer)", title=f"Top {len(order)} tokens by norm")
    return fig
