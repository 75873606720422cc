"""Interactive offline figures (plotly from the ``geometry`` extra): plotly.js is inlined
once per page (``Page.once``), never fetched from a CDN."""

from __future__ import annotations

import importlib.util

import numpy as np

from .colours import depth_colours


def plotly_available() -> bool:
    return importlib.util.find_spec("plotly") is not None


def _rgb(c) -> str:
    return "rgb({},{},{})".format(*(int(255 * x) for x in c[:3]))


def attn_mlp_figure(r):
    """Depth-shaded plotly scatter of the attention/MLP PCA view (hover: layer)."""
    import plotly.graph_objects as go

    v = r.view
    fig = go.Figure()
    layers = list(v["layers"])
    for is_mlp, kind in ((0, "attn"), (1, "mlp")):
        for c, l in zip(depth_colours(kind, len(layers)), layers):
            m = (np.asarray(v["is_mlp"]) == is_mlp) & (np.asarray(v["layer"]) == l)
            fig.add_trace(go.Scatter(x=v["coords"][m, 0], y=v["coords"][m, 1], mode="markers",
                                     marker={"size": 4, "color": _rgb(c)}, name=f"{kind} L{l}"))
    fig.update_layout(width=760, height=560, xaxis_title="PC1", yaxis_title="PC2", template="simple_white",
                      title="Attention (blue) and MLP (red) outputs, darker = deeper")
    return fig


def pc3d_figure(r):
    """Plotly 3-D curve of the first three PCs of the position-averaged states, coloured by
    position (where a helix shows as a coil)."""
    import plotly.graph_objects as go

    g = r.grid
    c = np.asarray(g["coords"])
    pos = np.asarray(g["positions"])
    z = c[:, 2] if c.shape[1] > 2 else np.zeros(len(c))
    fig = go.Figure(go.Scatter3d(x=c[:, 0], y=c[:, 1], z=z, mode="lines+markers", text=[f"position {p}" for p in pos],
                                 marker={"size": 3, "color": pos, "colorscale": "Viridis", "showscale": True},
                                 line={"color": "#bbbbbb", "width": 2}))
    fig.update_layout(width=760, height=600, title=f"Position-averaged {g['point']}: PC1–PC3",
                      scene={"xaxis_title": "PC1", "yaxis_title": "PC2", "zaxis_title": "PC3"})
    return fig
