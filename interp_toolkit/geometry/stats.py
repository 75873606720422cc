"""Small numeric tools of the analyses: a logistic-regression probe, silhouette scores and
the circularity of a 2-D curve (the helix test)."""

from __future__ import annotations

import numpy as np
from jaxtyping import Float, Int
from scipy.optimize import minimize


def logistic_fit(X: Float[np.ndarray, "n d"], y: Int[np.ndarray, "n"], l2: float = 1e-2):
    """L2-regularised logistic regression on standardised features (L-BFGS).

    Minimises ``mean(log(1 + exp(-s·(Xw + b)))) + l2/2 ‖w‖²`` with ``s = 2y - 1``.
    Returns ``predict(X) -> {0, 1}``."""
    X = np.asarray(X, dtype=np.float64)
    y = np.asarray(y)
    if set(np.unique(y)) - {0, 1} or len(np.unique(y)) < 2:
        raise ValueError("logistic_fit needs labels of both classes 0 and 1")
    mu, sd = X.mean(0), X.std(0) + 1e-12
    Z = (X - mu) / sd
    s = 2.0 * y - 1.0
    n, d = Z.shape

    def loss(theta):
        w, b = theta[:d], theta[d]
        m = s * (Z @ w + b)
        val = np.logaddexp(0, -m).mean() + 0.5 * l2 * w @ w
        g = -s / (1 + np.exp(np.clip(m, -50, 50))) / n
        return val, np.concatenate([Z.T @ g + l2 * w, [g.sum()]])

    theta = minimize(loss, np.zeros(d + 1), jac=True, method="L-BFGS-B", options={"maxiter": 500}).x

    def predict(Xn):
        return ((((np.asarray(Xn, dtype=np.float64) - mu) / sd) @ theta[:d] + theta[d]) > 0).astype(int)

    return predict


def probe_accuracy(X: Float[np.ndarray, "n d"], y: Int[np.ndarray, "n"], groups: Int[np.ndarray, "n"] | None = None,
                   test_fraction: float = 0.3, seed: int = 0) -> float:
    """Held-out accuracy of ``logistic_fit``. With ``groups`` (e.g. the sequence of each
    row) whole groups are held out, so test rows come from inputs never seen in training."""
    rng = np.random.default_rng(seed)
    n = len(y)
    if groups is not None and len(np.unique(groups)) >= 4:
        g = np.unique(groups)
        test_g = rng.choice(g, size=max(1, int(round(test_fraction * len(g)))), replace=False)
        test = np.isin(groups, test_g)
    else:
        test = np.zeros(n, bool)
        test[rng.choice(n, size=max(1, int(round(test_fraction * n))), replace=False)] = True
    if len(np.unique(y[~test])) < 2:
        raise ValueError("the training split holds one class only")
    predict = logistic_fit(X[~test], y[~test])
    return float((predict(X[test]) == y[test]).mean())


def silhouette(X: Float[np.ndarray, "n d"], y: Int[np.ndarray, "n"], max_points: int = 2000, seed: int = 0) -> float:
    """Mean silhouette ``(b - a) / max(a, b)`` with Euclidean distances (``a``: mean distance to
    the point's own cluster, ``b``: to the nearest other cluster); at most ``max_points``
    random rows are used."""
    X = np.asarray(X, dtype=np.float64)
    y = np.asarray(y)
    if len(X) > max_points:
        idx = np.random.default_rng(seed).choice(len(X), max_points, replace=False)
        X, y = X[idx], y[idx]
    labels = np.unique(y)
    if len(labels) < 2:
        raise ValueError("silhouette needs at least two clusters")
    sq = (X ** 2).sum(1)
    D = np.sqrt(np.maximum(sq[:, None] + sq[None] - 2 * X @ X.T, 0))
    a = np.zeros(len(X))
    b = np.full(len(X), np.inf)
    for c in labels:
        m = y == c
        sums = D[:, m].sum(1)
        own = y == c
        cnt = m.sum()
        a[own] = np.where(cnt > 1, sums[own] / max(cnt - 1, 1), 0)
        b[~own] = np.minimum(b[~own], sums[~own] / cnt)
    single = np.array([(y == c).sum() == 1 for c in y])
    s = np.where(np.maximum(a, b) > 0, (b - a) / np.maximum(np.maximum(a, b), 1e-300), 0)
    s[single] = 0
    return float(s.mean())


CIRCULAR = {"consistency": 0.9, "radius_cv": 0.35, "turns": 0.5}


def circularity(xy: Float[np.ndarray, "P 2"]) -> dict:
    """How much a curve of consecutive points (e.g. positions in a PC plane) goes round.

    With the points centred on their mean, ``r_p`` their radii and ``Δθ_p`` the angle
    steps (wrapped to (-π, π]):

    - ``consistency`` = |Σ Δθ| / Σ |Δθ| (1: always turning the same way),
    - ``radius_cv`` = std(r) / mean(r) (0: a circle),
    - ``turns`` = |Σ Δθ| / 2π,
    - ``score`` = consistency · max(0, 1 - radius_cv) when ``turns ≥ 0.5``, else 0.

    ``circular`` is true when consistency ≥ 0.9, radius_cv ≤ 0.35 and turns ≥ 0.5.
    A line gives radius_cv ≈ 0.58; noise gives low consistency."""
    xy = np.asarray(xy, dtype=np.float64)
    if xy.ndim != 2 or xy.shape[1] != 2 or len(xy) < 3:
        raise ValueError(f"need at least 3 points [P, 2], got shape {xy.shape}")
    c = xy - xy.mean(0)
    r = np.linalg.norm(c, axis=1)
    th = np.arctan2(c[:, 1], c[:, 0])
    dth = (np.diff(th) + np.pi) % (2 * np.pi) - np.pi
    total = abs(dth.sum())
    cons = float(total / max(np.abs(dth).sum(), 1e-300))
    cv = float(r.std() / max(r.mean(), 1e-300))
    turns = float(total / (2 * np.pi))
    score = cons * max(0.0, 1 - cv) if turns >= CIRCULAR["turns"] else 0.0
    circ = cons >= CIRCULAR["consistency"] and cv <= CIRCULAR["radius_cv"] and turns >= CIRCULAR["turns"]
    return {"consistency": cons, "radius_cv": cv, "turns": turns, "score": float(score), "circular": bool(circ)}


def same_group_neighbour_rate(X: Float[np.ndarray, "n d"], groups: Int[np.ndarray, "n"], k: int = 10,
                              max_points: int = 2000, seed: int = 0) -> tuple[float, float]:
    """``(rate, chance)``: the mean fraction of each row's ``k`` nearest neighbours (cosine
    distance, the row itself excluded) that share its group, and that fraction for random
    neighbours (``Σ_g n_g(n_g - 1) / (n(n - 1))``)."""
    X = np.asarray(X, dtype=np.float64)
    groups = np.asarray(groups)
    if len(X) > max_points:
        idx = np.random.default_rng(seed).choice(len(X), max_points, replace=False)
        X, groups = X[idx], groups[idx]
    n = len(X)
    if n <= k:
        raise ValueError(f"need more than k={k} rows, got {n}")
    U = X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-30)
    S = U @ U.T
    np.fill_diagonal(S, -np.inf)
    nn = np.argpartition(-S, k, axis=1)[:, :k]
    rate = float((groups[nn] == groups[:, None]).mean())
    _, counts = np.unique(groups, return_counts=True)
    return rate, float((counts * (counts - 1)).sum() / (n * (n - 1)))
