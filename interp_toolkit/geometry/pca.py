"""Principal components: exact, randomized (low rank) and streaming (incremental covariance).

For rows ``X`` ``[n, d]`` with mean ``μ``, the components are the top eigenvectors ``v_k``
of the covariance ``C = (X - μ)ᵀ(X - μ) / (n - 1)``; ``explained_variance[k]`` is the
eigenvalue. Every fit is centred; ``transform`` projects with or without centring
(``X Vᵀ`` — the reference's default — or ``(X - μ) Vᵀ``). Signs are fixed so that each
component's largest-magnitude loading is positive, so the three methods agree exactly.

- ``exact``: SVD of the centred data (``n × d`` in RAM).
- ``randomized``: Halko–Martinsson–Tropp range finder with power iterations (``n × d`` in
  RAM, cost ``O(n d k)``).
- ``streaming``: ``Σ x`` and ``Σ x xᵀ`` accumulated block by block in float64, then an
  eigendecomposition of the ``d × d`` covariance; RAM ``O(d²)`` whatever ``n``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import numpy as np
from jaxtyping import Float

from ..core import Result, new_figure, register_result

METHODS = ("auto", "exact", "randomized", "streaming")


@register_result
@dataclass
class PCAFit(Result):
    """A fitted PCA: ``components`` ``[k, d]`` (rows orthonormal), ``mean`` ``[d]``."""

    kind = "geometry_pca"
    format_version = 1
    title = "PCA"

    components: np.ndarray
    mean: np.ndarray
    explained_variance: np.ndarray
    total_variance: float
    n_samples: int
    method: str

    def __post_init__(self):
        self.components = np.asarray(self.components, dtype=np.float64)
        self.mean = np.asarray(self.mean, dtype=np.float64)
        self.explained_variance = np.asarray(self.explained_variance, dtype=np.float64)

    @property
    def n_components(self) -> int:
        return self.components.shape[0]

    @property
    def explained_variance_ratio(self) -> np.ndarray:
        return self.explained_variance / self.total_variance if self.total_variance > 0 else self.explained_variance * 0

    def transform(self, X: Float[np.ndarray, "n d"], center: bool = False) -> Float[np.ndarray, "n k"]:
        """Coordinates ``X Vᵀ`` (default, as the reference) or ``(X - μ) Vᵀ``."""
        X = np.asarray(X, dtype=np.float64)
        if X.shape[-1] != self.components.shape[1]:
            raise ValueError(f"rows have {X.shape[-1]} dims, the PCA was fitted on {self.components.shape[1]}")
        return (X - self.mean if center else X) @ self.components.T

    def _plots(self):
        return {"explained": plot_explained}

    def summary(self) -> str:
        r = self.explained_variance_ratio
        return (f"PCA ({self.method}) of {self.n_samples} rows × {self.components.shape[1]} dims: "
                f"{self.n_components} components explain {r.sum():.1%} (first: {', '.join(f'{x:.1%}' for x in r[:6])})")


def plot_explained(fit: PCAFit):
    """Explained-variance ratio per component (bars) and its cumulative sum (line)."""
    r = fit.explained_variance_ratio
    k = np.arange(1, len(r) + 1)
    fig, ax = new_figure(figsize=(5.5, 3.2))
    ax.bar(k, r, color="#4a78b5", label="per component")
    ax.plot(k, np.cumsum(r), color="k", marker=".", label="cumulative")
    ax.set(xlabel="component", ylabel="share of variance", ylim=(0, 1.02), title=f"PCA ({fit.method})")
    ax.legend(fontsize=7)
    return fig


def _fix_signs(V: np.ndarray) -> np.ndarray:
    idx = np.abs(V).argmax(axis=1)
    s = np.sign(V[np.arange(len(V)), idx])
    s[s == 0] = 1
    return V * s[:, None]


def _check_k(k: int, n: int, d: int) -> None:
    if not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"n_components must be a positive integer, got {k!r}")
    if n < 2:
        raise ValueError(f"PCA needs at least 2 points, got {n}")
    if k > min(n, d):
        raise ValueError(f"asked for {k} components but the data has {n} points in {d} dimensions "
                         f"(at most {min(n, d)} components)")


def pca_exact(X: Float[np.ndarray, "n d"], n_components: int) -> PCAFit:
    X = np.asarray(X, dtype=np.float64)
    n, d = X.shape
    _check_k(n_components, n, d)
    mu = X.mean(0)
    _, S, Vt = np.linalg.svd(X - mu, full_matrices=False)
    var = S ** 2 / (n - 1)
    return PCAFit(_fix_signs(Vt[:n_components]), mu, var[:n_components], float(var.sum()), n, "exact")


def pca_randomized(X: Float[np.ndarray, "n d"], n_components: int, oversample: int = 10,
                   n_iter: int = 6, seed: int = 0) -> PCAFit:
    X = np.asarray(X, dtype=np.float64)
    n, d = X.shape
    _check_k(n_components, n, d)
    mu = X.mean(0)
    Xc = X - mu
    rank = min(n_components + oversample, n, d)
    rng = np.random.default_rng(seed)
    Q, _ = np.linalg.qr(Xc @ rng.standard_normal((d, rank)))
    for _ in range(n_iter):  # power iterations sharpen the spectrum
        Q, _ = np.linalg.qr(Xc.T @ Q)
        Q, _ = np.linalg.qr(Xc @ Q)
    _, S, Vt = np.linalg.svd(Q.T @ Xc, full_matrices=False)
    var = S ** 2 / (n - 1)
    total = float((Xc ** 2).sum() / (n - 1))
    return PCAFit(_fix_signs(Vt[:n_components]), mu, var[:n_components], total, n, "randomized")


class CovarianceAccumulator:
    """``Σ x`` and ``Σ x xᵀ`` over row blocks (float64; shifted by the first block's mean
    for numerical stability)."""

    def __init__(self):
        self.n, self.shift, self.s, self.ss = 0, None, None, None

    def add(self, X: Float[np.ndarray, "m d"]) -> None:
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or not len(X):
            return
        if self.shift is None:
            self.shift = X.mean(0)
            self.s = np.zeros(X.shape[1])
            self.ss = np.zeros((X.shape[1], X.shape[1]))
        elif X.shape[1] != len(self.shift):
            raise ValueError(f"row block has {X.shape[1]} dims, earlier ones {len(self.shift)}")
        Y = X - self.shift
        self.n += len(Y)
        self.s += Y.sum(0)
        self.ss += Y.T @ Y

    def fit(self, n_components: int) -> PCAFit:
        if self.shift is None:
            raise ValueError("PCA needs at least 2 points, got 0")
        d = len(self.shift)
        _check_k(n_components, self.n, d)
        m = self.s / self.n
        cov = (self.ss - self.n * np.outer(m, m)) / (self.n - 1)
        w, V = np.linalg.eigh(cov)
        order = np.argsort(w)[::-1][:n_components]
        var = np.clip(w[order], 0, None)
        return PCAFit(_fix_signs(V[:, order].T), self.shift + m, var, float(np.trace(cov)), self.n, "streaming")


def pca_streaming(blocks: Iterable[Float[np.ndarray, "m d"]], n_components: int) -> PCAFit:
    acc = CovarianceAccumulator()
    for X in blocks:
        acc.add(X)
    return acc.fit(n_components)


def fit_pca(data, n_components: int, method: str = "auto", seed: int = 0) -> PCAFit:
    """PCA of an array ``[n, d]`` or of an iterable of row blocks (streamed).

    ``auto``: an iterable streams; an array is decomposed exactly when ``min(n, d) ≤ 1000``
    or many components are asked, else by the randomized method."""
    if method not in METHODS:
        raise ValueError(f"unknown PCA method {method!r}; choose from {METHODS}")
    if not isinstance(data, np.ndarray) and not hasattr(data, "__array__"):
        if method not in ("auto", "streaming"):
            data = np.concatenate(list(data))
        else:
            return pca_streaming(data, n_components)
    X = np.asarray(data, dtype=np.float64)
    if X.ndim != 2:
        raise ValueError(f"PCA needs rows [n, d], got shape {X.shape}")
    if method == "auto":
        method = "exact" if min(X.shape) <= 1000 or n_components > min(X.shape) // 4 else "randomized"
    if method == "exact":
        return pca_exact(X, n_components)
    if method == "randomized":
        return pca_randomized(X, n_components, seed=seed)
    return pca_streaming([X], n_components)
