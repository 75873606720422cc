"""Guess-then-Refine metrics over many prompts (last position), as arrays and a result object.

Inputs per prompt ``n`` and decoded layer ``l`` (``L`` layers; the output is index ``L``):
``top1[n, l]`` the lens's top-1, ``final[n]`` the output's top-1, ``rank[n, l]`` the rank
(1 = top) of ``final[n]`` under the lens at layer ``l``, ``bucket[v]`` the frequency bucket
of token ``v``::

    share[l, b]      = mean_n [bucket(top1[n, l]) = b]                       (row L: the output)
    flip[l, b]       = mean_{n: bucket(top1[n,l]) = b} [top1[n, l] ≠ final[n]]  (NaN if none)
    first[n, k]      = min {l : rank[n, l] ≤ k}                               (L if none)
    persistent[n, k] = min {l : rank[n, l'] ≤ k for all l' ≥ l}               (L if none)

``k`` runs over ``K_GRID = unique(int(logspace(0, 4, 200)))`` (1 … 10⁴), as in the paper.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..core import Result, new_figure, register_result
from .frequency import BUCKETS, FrequencyTable

K_GRID = np.unique(np.logspace(0, 4, 200).astype(int))


def bucket_shares(top1_buckets: np.ndarray, n_buckets: int = 4) -> np.ndarray:
    """``[n, L]`` bucket ids → ``[L, n_buckets]`` share of prompts per bucket."""
    b = np.asarray(top1_buckets)
    return np.stack([(b == i).mean(0) for i in range(n_buckets)], -1)


def flip_rates(top1: np.ndarray, final: np.ndarray, top1_buckets: np.ndarray,
               n_buckets: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """(rate ``[L, B]``, count ``[L, B]``): share of layer-l guesses in bucket b that the output changes."""
    flipped = np.asarray(top1) != np.asarray(final)[:, None]
    rate = np.full((flipped.shape[1], n_buckets), np.nan)
    count = np.zeros((flipped.shape[1], n_buckets), np.int64)
    for b in range(n_buckets):
        m = np.asarray(top1_buckets) == b
        count[:, b] = m.sum(0)
        with np.errstate(invalid="ignore", divide="ignore"):
            rate[:, b] = np.where(count[:, b] > 0, (flipped & m).sum(0) / np.maximum(count[:, b], 1), np.nan)
    return rate, count


def decision_depths(rank: np.ndarray, ks: np.ndarray = K_GRID) -> tuple[np.ndarray, np.ndarray]:
    """(first ``[n, K]``, persistent ``[n, K]``) earliest layers with rank ≤ k (``L`` if never)."""
    rank = np.asarray(rank)
    n, L = rank.shape
    ok = rank[:, :, None] <= np.asarray(ks)[None, None, :]          # [n, L, K]
    first = np.where(ok.any(1), ok.argmax(1), L)
    # from layer l on always ok <=> no failure at any l' >= l: last failure + 1
    fail = ~ok
    any_fail = fail.any(1)
    last_fail = L - 1 - fail[:, ::-1, :].argmax(1)
    persistent = np.where(any_fail, last_fail + 1, 0)
    return first, persistent


@register_result
@dataclass
class DepthMetrics(Result):
    """Bucket shares, flip rates and earliest-decision depths of one lens over many prompts."""

    kind = "lens_depth"
    format_version = 1
    title = "Guess-then-Refine: how the layers use their depth"

    meta: dict
    lens: str
    layers: list
    n_layers: int
    frequency_source: str
    bucket_share: np.ndarray          # [L + 1, 4], last row = output
    flip_rate: np.ndarray             # [L, 4]
    flip_count: np.ndarray            # [L, 4]
    ks: np.ndarray                    # [K]
    first_depth: np.ndarray           # [n, K]
    persistent_depth: np.ndarray      # [n, K]
    groups: list | None = None        # one label per prompt (e.g. "function"/"content")
    extra: dict = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: dict) -> "DepthMetrics":
        from .results import json_array

        d = dict(d)
        for key in ("bucket_share", "flip_rate"):
            d[key] = json_array(d[key], np.float64)
        for key in ("flip_count", "ks", "first_depth", "persistent_depth"):
            d[key] = np.asarray(d[key], np.int64)
        return cls(**d)

    @classmethod
    def from_lens(cls, r, freq: FrequencyTable, groups=None) -> "DepthMetrics":
        """From a ``LensResult`` (last position of each prompt) and a frequency table."""
        last = [r.last_index(i) for i in range(r.n)]
        top1 = np.stack([r.top1[i, :, last[i]] for i in range(r.n)])
        final = np.array([r.out_top_ids[i, last[i], 0] for i in range(r.n)])
        rank = np.stack([r.out_rank[i, :, last[i]] for i in range(r.n)])
        buckets = freq.bucket(np.concatenate([top1, final[:, None]], 1))
        rate, count = flip_rates(top1, final, buckets[:, :-1])
        first, persistent = decision_depths(rank)
        if groups is not None and len(groups) != r.n:
            raise ValueError(f"{len(groups)} group labels for {r.n} prompts")
        return cls(meta=r.meta, lens=r.lens_name, layers=list(r.layers), n_layers=r.n_layers,
                   frequency_source=freq.source, bucket_share=bucket_shares(buckets), flip_rate=rate,
                   flip_count=count, ks=K_GRID.copy(), first_depth=first, persistent_depth=persistent,
                   groups=None if groups is None else list(groups))

    @property
    def n(self) -> int:
        return self.first_depth.shape[0]

    def depth_at(self, k: int, persistent: bool = False, group=None) -> float:
        """Mean earliest-decision depth at the largest grid ``k' ≤ k`` (``int(logspace)`` misses
        some round numbers, e.g. 100), as a fraction of the decoded layers."""
        if k < self.ks[0]:
            raise ValueError(f"k={k} is below the grid's smallest value {self.ks[0]}")
        j = int(np.searchsorted(self.ks, k, side="right")) - 1
        d = (self.persistent_depth if persistent else self.first_depth)[:, j]
        if group is not None:
            d = d[np.array(self.groups) == group]
        return float(d.mean() / len(self.layers))

    def early_flip_rate(self, quarter: float = 0.25) -> float:
        """Flip rate of Top 1-10 guesses pooled over the first ``quarter`` of the layers."""
        m = max(1, int(round(quarter * len(self.layers))))
        c = self.flip_count[:m, 0]
        r = np.nan_to_num(self.flip_rate[:m, 0])
        return float((r * c).sum() / c.sum()) if c.sum() else float("nan")

    def summary(self) -> str:
        q = max(1, len(self.layers) // 4)
        early = self.bucket_share[:q].mean(0)
        lines = [f"{self.lens} lens, {self.n} prompts, frequency: {self.frequency_source}",
                 "top-1 bucket shares, first quarter of layers: " + ", ".join(f"{b} {s:.0%}" for b, s in zip(BUCKETS, early)),
                 "top-1 bucket shares, output:                  " + ", ".join(
                     f"{b} {s:.0%}" for b, s in zip(BUCKETS, self.bucket_share[-1])),
                 f"flip rate of Top 1-10 guesses in the first quarter: {self.early_flip_rate():.0%}",
                 "mean earliest-decision depth (fraction of layers), k=1/10/100: "
                 + " / ".join(f"{self.depth_at(k):.2f}" for k in (1, 10, 100))]
        return "\n".join(lines)

    def _plots(self):
        return {"buckets": plot_buckets, "flips": plot_flips, "depth": plot_depth}


def plot_buckets(m: DepthMetrics):
    """Stacked bars: share of each layer's top-1 in each frequency bucket (last bar: output)."""
    share = m.bucket_share
    x = np.arange(share.shape[0])
    fig, ax = new_figure(figsize=(7, 3.4))
    bottom = np.zeros(len(x))
    for b, name in enumerate(BUCKETS):
        ax.bar(x, share[:, b], bottom=bottom, label=name, width=0.85)
        bottom += share[:, b]
    ax.set_xticks(x, [str(l) for l in m.layers] + ["out"], fontsize=6)
    ax.set_xlabel("layer")
    ax.set_ylabel("share of top-1 predictions")
    ax.set_title(f"{m.lens} lens: frequency bucket of the top-1 per layer", fontsize=9)
    ax.legend(fontsize=7, loc="lower right")
    return fig


def plot_flips(m: DepthMetrics):
    """Flip rate per layer, one line per bucket of the intermediate guess."""
    fig, ax = new_figure(figsize=(7, 3.2))
    for b, name in enumerate(BUCKETS):
        ax.plot(m.layers, m.flip_rate[:, b], marker="o", ms=2.5, label=name)
    ax.set_xlabel("layer")
    ax.set_ylabel("share changed by the output")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(f"{m.lens} lens: decision flips by bucket of the layer's guess", fontsize=9)
    ax.legend(fontsize=7)
    return fig


def depth_lines(ax, ks, first, persistent, groups=None, what: str = "final token") -> None:
    """Mean earliest layer vs k per group: first crossing (solid) and stays ≤ k (dashed)."""
    labels = np.array(["all"] * len(first) if groups is None else [str(g) for g in groups])
    for g in sorted(set(labels)):
        sel = labels == g
        line, = ax.plot(ks, first[sel].mean(0), label=f"{g} (first, n={sel.sum()})")
        ax.plot(ks, persistent[sel].mean(0), ls="--", color=line.get_color(), label=f"{g} (stays)")
    ax.set_xscale("log")
    ax.set_xlabel(f"k ({what} within the lens's top-k)")
    ax.set_ylabel("mean earliest layer")
    if len(labels):
        ax.legend(fontsize=7)
    else:
        ax.text(0.5, 0.5, "no prompts", ha="center", va="center", transform=ax.transAxes)


def plot_depth(m: DepthMetrics):
    """Mean earliest-decision layer vs k (log), first crossing (solid) and persistent (dashed)."""
    fig, ax = new_figure(figsize=(6, 3.4))
    depth_lines(ax, m.ks, m.first_depth, m.persistent_depth, m.groups)
    ax.set_title(f"{m.lens} lens: earliest-decision depth", fontsize=9)
    return fig
