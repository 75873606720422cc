"""Figures of lens results (each takes the result and returns a matplotlib Figure)."""

from __future__ import annotations

import numpy as np

from ..core import new_figure


def _short(text: str, n: int = 8) -> str:
    text = text.replace("\n", "\\n")
    return text if len(text) <= n else text[: n - 1] + "…"


def heatmap(r, prompt: int = 0, max_positions: int = 24):
    """Layers (rows, output last) × positions: top-1 token text, coloured by its probability."""
    if r.positions == "last":
        P = 1
        cols = [r.str_tokens[prompt][-1] if r.str_tokens else "last"]
    else:
        P = len(r.tokens[prompt])
        cols = r.str_tokens[prompt] if r.str_tokens else [str(i) for i in range(P)]
    first = max(0, P - max_positions)
    pos = list(range(first, P))
    ids = np.concatenate([r.top_ids[prompt, :, pos, 0].T, r.out_top_ids[prompt, pos, 0][None]], 0)
    probs = np.concatenate([r.top_probs[prompt, :, pos, 0].T, r.out_top_probs[prompt, pos, 0][None]], 0)
    rows = r.layer_labels + ["output"]
    fig, ax = new_figure(figsize=(1.0 + 0.75 * len(pos), 0.8 + 0.26 * len(rows)))
    im = ax.imshow(probs, aspect="auto", cmap="Blues", vmin=0, vmax=1, origin="lower")
    for i in range(ids.shape[0]):
        for j in range(ids.shape[1]):
            ax.text(j, i, _short(r.text(ids[i, j])), ha="center", va="center", fontsize=6,
                    color="white" if probs[i, j] > 0.6 else "black")
    ax.set_yticks(range(len(rows)), rows, fontsize=6)
    ax.set_xticks(range(len(pos)), [_short(cols[p], 10) for p in pos], rotation=60, fontsize=6)
    ax.set_xlabel("input position (its token)")
    ax.set_title(f"{r.lens_name} lens: top-1 next token per layer", fontsize=9)
    fig.colorbar(im, ax=ax, label="probability", shrink=0.6)
    return fig


def rank_curve(r, prompt: int | None = None):
    """Rank (log scale) of the target (or of the output's top-1) per layer: median and quartiles over prompts."""
    if r.targets:
        ranks = r.target_rank[:, :-1].astype(float)
        label = "target"
    else:
        last = [r.last_index(i) for i in range(r.n)]
        ranks = np.stack([r.out_rank[i, :, last[i]] for i in range(r.n)]).astype(float)
        label = "output top-1"
    if prompt is not None:
        ranks = ranks[prompt:prompt + 1]
    x = np.arange(len(r.layers))
    fig, ax = new_figure(figsize=(6, 3.4))
    med = np.median(ranks, 0)
    ax.plot(x, med, marker="o", ms=3, label=f"median rank of {label}")
    if ranks.shape[0] > 1:
        ax.fill_between(x, np.percentile(ranks, 25, 0), np.percentile(ranks, 75, 0), alpha=0.25, label="quartiles")
    ax.set_yscale("log")
    ax.set_xticks(x, [str(l) for l in r.layers], fontsize=7)
    ax.set_xlabel(f"layer ({r.site})")
    ax.set_ylabel("rank (1 = top)")
    ax.set_title(f"{r.lens_name} lens, last position ({r.n} prompt(s))", fontsize=9)
    ax.legend(fontsize=7)
    return fig


def kl_curve(r):
    """Mean KL(output ‖ lens) per layer over prompts and positions."""
    kl = np.nanmean(r.kl, axis=(0, 2))
    fig, ax = new_figure(figsize=(6, 3.0))
    ax.plot(r.layers, kl, marker="o", ms=3)
    ax.set_xlabel(f"layer ({r.site})")
    ax.set_ylabel("KL(output ‖ lens), nats")
    ax.set_title(f"{r.lens_name} lens", fontsize=9)
    return fig
