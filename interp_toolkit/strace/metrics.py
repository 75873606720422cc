"""Metrics on next-token distributions at the last position (DESIGN §3).

All functions take probabilities (float64 numpy or torch) with the vocabulary as the last
axis; ``p`` is the full model's distribution, ``q`` a stratum's (``[rows, vocab]``).
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
from jaxtyping import Float, Int

from ..engine.metrics import kl_divergence as _kl

#: probabilities come as a NumPy array or a torch tensor (vocabulary last)
Array = np.ndarray | torch.Tensor

#: shared-nucleus levels (percent of probability mass), highest first
NUCLEUS_LEVELS: tuple[int, ...] = (99, 90, 80, 70, 60, 50, 40, 30, 20, 10, 5, 1)
#: targets for the required stratum size
NUCLEUS_TARGETS: tuple[int, ...] = (1, 5, 10, 20, 40, 60, 80, 90)
#: phase bands (stratum sizes) of the reference
PHASES = {"construction": (1e-4, 1e-2), "refinement": (1e-2, 1.0)}
MINIMAL_CORE = 1e-3


def _t(x) -> torch.Tensor:
    return torch.as_tensor(x, dtype=torch.float64)


def total_variation(p: Float[Array, "vocab"], q: Float[Array, "*rows vocab"]) -> Float[np.ndarray, "*rows"]:
    """TV = ½ Σ |p − q| per row of ``q``."""
    p, q = _t(p), _t(q)
    return (0.5 * (q - p).abs().sum(-1)).numpy()


def entropy(p: Float[Array, "vocab"]) -> float:
    """Shannon entropy in nats."""
    p = _t(p)
    nz = p[p > 0]
    return float(-(nz * nz.log()).sum())


def kl_divergence(p: Float[Array, "vocab"], q: Float[Array, "*rows vocab"],
                  eps: float = 1e-30) -> Float[np.ndarray, "*rows"]:
    """KL(p ‖ q) in nats per row of ``q`` (probabilities; ``q`` clamped at ``eps``), through
    ``engine.metrics.kl_divergence``."""
    p, q = _t(p), _t(q)
    log_p = torch.where(p > 0, p.clamp_min(eps).log(), torch.full((), -math.inf, dtype=p.dtype))
    return _kl(log_p, q.clamp_min(eps).log()).numpy()


def nucleus_sizes(p: Float[Array, "vocab"], levels=NUCLEUS_LEVELS) -> dict[int, int]:
    """Number of top tokens whose mass first reaches each level (smallest top-prefix with mass
    ≥ level %)."""
    p = _t(p)
    cum = torch.sort(p, descending=True).values.cumsum(0)
    out = {}
    for lev in levels:
        n = int(torch.searchsorted(cum, torch.tensor(lev / 100.0 - 1e-12, dtype=torch.float64)).item()) + 1
        out[lev] = min(n, p.shape[-1])
    return out


def shared_nucleus(p: Float[Array, "vocab"], q: Float[Array, "*rows vocab"],
                   levels=NUCLEUS_LEVELS) -> Float[np.ndarray, "rows"]:
    """Per row of ``q``: the largest level (in %) at which the nuclei of ``p`` and ``q`` (the
    smallest top-probability prefixes with mass ≥ level) are identical token by token, in
    order; 0 if they differ at every level."""
    p, q = _t(p), _t(q)
    q = q.reshape(-1, q.shape[-1])
    sizes = nucleus_sizes(p, levels)
    k = min(max(sizes.values()) + 1, p.shape[-1])
    top_p = torch.topk(p, k).indices
    top_q = torch.topk(q, k, dim=-1)
    cum_q = top_q.values.cumsum(-1)
    scores = np.zeros(q.shape[0])
    for r in range(q.shape[0]):
        for lev in sorted(levels, reverse=True):
            n = sizes[lev]
            if not torch.equal(top_q.indices[r, :n], top_p[:n]):
                continue
            target = lev / 100.0 - 1e-12
            reached = cum_q[r, n - 1] >= target
            not_before = n == 1 or cum_q[r, n - 2] < target
            if reached and not_before:
                scores[r] = lev
                break
    return scores


def required_sizes(sizes: Sequence[float], nucleus_scores: Sequence[float],
                   targets=NUCLEUS_TARGETS) -> dict[int, float]:
    """Smallest stratum size whose shared nucleus reaches each target (NaN if none does)."""
    sizes = np.asarray(sizes, dtype=float)
    scores = np.asarray(nucleus_scores, dtype=float)
    out = {}
    for k in targets:
        hit = np.flatnonzero(scores >= k)
        out[int(k)] = float(sizes[hit[0]]) if hit.size else math.nan
    return out


def auc_tv(sizes: Sequence[float], tv: Sequence[float]) -> float:
    """Computation per input: ∫ TV d log10(s) over the strata (trapezoid rule). On the
    reference grid (1e-5 … 1) it lies in [0, 5]; larger means more of the graph is needed."""
    x = np.log10(np.asarray(sizes, dtype=float))
    y = np.asarray(tv, dtype=float)
    return float(np.sum(0.5 * (y[1:] + y[:-1]) * np.diff(x)))


def composition(edge_class: Int[np.ndarray, "edge"], order: Int[np.ndarray, "n"], counts: Sequence[int],
                n_classes: int) -> Float[np.ndarray, "stratum n_classes"]:
    """Share of each class among the edges of every stratum: ``[n_strata, n_classes]`` (NaN
    rows for empty strata). ``order`` is the stratification order, ``counts`` the stratum
    sizes in edges."""
    cls = edge_class[order]
    cum = np.zeros((len(order) + 1, n_classes))
    cum[1:] = np.cumsum(np.eye(n_classes)[cls], axis=0)
    out = np.full((len(counts), n_classes), np.nan)
    for i, c in enumerate(counts):
        if c > 0:
            out[i] = cum[c] / c
    return out


def _ranks(x: torch.Tensor) -> torch.Tensor:
    """Ranks along the last axis (ties broken by position; fine for continuous values)."""
    r = torch.empty_like(x)
    idx = torch.argsort(x, dim=-1)
    ar = torch.arange(x.shape[-1], dtype=x.dtype).expand_as(x)
    r.scatter_(-1, idx, ar)
    return r


def spearman_rows(x: Float[Array, "*rows n"], y: Float[np.ndarray, "n"]) -> Float[np.ndarray, "rows"]:
    """Spearman correlation of each row of ``x`` with the vector ``y``."""
    x = _t(x).reshape(-1, _t(x).shape[-1])
    from scipy.stats import rankdata

    ry = _t(rankdata(np.asarray(y, dtype=float)))
    rx = _ranks(x)
    rx = rx - rx.mean(-1, keepdim=True)
    ry = ry - ry.mean()
    return ((rx * ry).sum(-1) / (rx.norm(dim=-1) * ry.norm()).clamp_min(1e-300)).numpy()


def unigram_encoding(q: Float[Array, "*rows vocab"],
                     token_freq: Float[np.ndarray, "vocab"] | None) -> Float[np.ndarray, "rows"]:
    """Unigram-frequency encoding of each distribution in ``q``.

    Defined as the Spearman rank correlation, over the vocabulary tokens with a known
    corpus frequency (``token_freq > 0``, see ``frequency.token_frequencies``), between the
    distribution's probabilities and the tokens' unigram frequencies. 1 means the prediction
    ranks tokens exactly by how common they are in English text, 0 means no relation. The
    reference claim to test: sparse strata score higher than the full model (they predict
    frequent tokens, not context-specific ones). NaN when no frequencies are available
    (e.g. models without a tokenizer).
    """
    q = _t(q).reshape(-1, _t(q).shape[-1])
    if token_freq is None:
        return np.full(q.shape[0], np.nan)
    known = torch.as_tensor(np.flatnonzero(np.asarray(token_freq)[: q.shape[-1]] > 0))
    if known.numel() < 3:
        return np.full(q.shape[0], np.nan)
    return spearman_rows(q[:, known], np.asarray(token_freq)[known.numpy()])


def spearman(x: Float[Array, "n"], y: Float[Array, "n"]) -> dict:
    """Spearman ρ of two equally long samples (pairs with a NaN left out), with its p-value
    and the number of pairs: ``{"rho", "p", "n"}``; NaN below 3 pairs."""
    from scipy.stats import spearmanr

    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    ok = ~(np.isnan(x) | np.isnan(y))
    if ok.sum() < 3:
        return {"rho": math.nan, "p": math.nan, "n": int(ok.sum())}
    res = spearmanr(x[ok], y[ok])
    return {"rho": float(res.statistic), "p": float(res.pvalue), "n": int(ok.sum())}


def shared_inputs(a, b, column: str):
    """The per-input tables ``a`` and ``b`` (with ``text_hash``) joined on the inputs they
    share: ``column`` of each as ``{column}_a`` and ``{column}_b``."""
    return a[["text_hash", column]].merge(b[["text_hash", column]], on="text_hash", suffixes=("_a", "_b"))


def cross_model_rho(a, b, condition: str = "trace") -> dict:
    """Spearman ρ of AUC-TV between two runs' per-input tables on the inputs they share
    (matched by text)."""
    col = f"auc_tv_{condition}"
    m = shared_inputs(a, b, col)
    if len(m) < 3:
        raise ValueError(f"only {len(m)} shared inputs; need at least 3")
    return spearman(m[f"{col}_a"], m[f"{col}_b"])
