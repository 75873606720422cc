"""Matplotlib figures without pyplot's global state (safe in scripts, servers and notebooks)."""

from __future__ import annotations

import io

from matplotlib.figure import Figure


def new_figure(nrows: int = 1, ncols: int = 1, figsize: tuple[float, float] = (6.0, 3.6), **subplot_kw):
    """A ``Figure`` with a constrained layout and its axes: ``(fig, ax)`` for one panel,
    ``(fig, axes)`` (array) for several. The figure is not registered with pyplot, so it is
    garbage-collected like any object; Jupyter still displays it when returned from a cell."""
    fig = Figure(figsize=figsize, layout="constrained")
    return fig, fig.subplots(nrows, ncols, squeeze=True, **subplot_kw)


def figure_bytes(fig: Figure, fmt: str = "png", dpi: int = 110) -> bytes:
    """The figure rendered as ``png`` or ``svg`` bytes."""
    buf = io.BytesIO()
    fig.savefig(buf, format=fmt, dpi=dpi)
    return buf.getvalue()
