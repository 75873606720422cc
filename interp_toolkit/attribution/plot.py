"""Plots of attribution results (kept apart from the computation)."""

from __future__ import annotations

from ..core import new_figure


def plot_attribution(result, site: str | None = None, ax=None):
    """Heatmap of ``result``'s scores at ``site`` (default: the first site).

    Head scores are drawn layer × head (summed over positions when split by position),
    edge scores (``pattern``) summed to layer × head, layer scores as layer × position (or a
    single column). Diverging colours centred on zero; returns the matplotlib Figure.
    """
    site = site or next(iter(result.scores))
    if site not in result.scores:
        raise KeyError(f"no scores for {site!r}; have {list(result.scores)}")
    scores = result.scores[site].detach().float().cpu()
    axes = result.axes[site]
    if site == "pattern":
        scores, xlabel = scores.sum((-1, -2)), "head"
    elif axes[1:] == ("pos", "head"):
        scores, xlabel = scores.sum(1), "head"
    elif axes[1:] == ("head",):
        xlabel = "head"
    elif axes[1:] == ("pos",):
        xlabel = "position"
    else:
        scores, xlabel = scores[:, None], ""
    if ax is None:
        fig, ax = new_figure(figsize=(1.2 + 0.35 * scores.shape[1], 1.2 + 0.25 * scores.shape[0]))
    else:
        fig = ax.figure
    lim = float(scores.abs().max()) or 1.0
    im = ax.imshow(scores.numpy(), cmap="RdBu", vmin=-lim, vmax=lim, aspect="auto")
    ax.set_yticks(range(len(result.layers)), [str(l) for l in result.layers])
    ax.set_ylabel("layer")
    ax.set_xlabel(xlabel)
    ax.set_title(f"{result.method} ({result.direction}) — {site}")
    fig.colorbar(im, ax=ax, shrink=0.8)
    return fig
