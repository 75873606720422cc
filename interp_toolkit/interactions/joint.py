"""Joint AND-OR extraction over several models (generalizable interactions).

**Scale.** Log-odds scales differ between models, and the max term below would let the
larger-scale model decide the shared support. So each model's values are first divided by
its scale c_k = mean over the dataset of |v⁽ᵏ⁾(N) − v⁽ᵏ⁾(∅)| (``joint_scales``; one prompt
alone: its own |v(N) − v(∅)|), the joint problem is solved on v̂⁽ᵏ⁾ = v⁽ᵏ⁾ / c_k, and the
interactions, γ and q are returned in each model's own units (times c_k). Scaling one
model's values by any factor therefore leaves the joint decomposition's support unchanged.

**Problem** (on the normalised values). Each model k keeps its own noise q⁽ᵏ⁾,
|q⁽ᵏ⁾| ≤ q_rel·|v̂⁽ᵏ⁾(N) − v̂⁽ᵏ⁾(∅)| with q_rel = 0.02 (``JOINT_Q_REL``, the bound of the
reference's joint code; single-model extraction uses 0.04), and the AND/OR split is
γ⁽ᵏ⁾ = γ_shared + γ̂⁽ᵏ⁾ with |γ̂⁽ᵏ⁾| ≤ 0.5·|mean over the dataset of v̂⁽ᵏ⁾(N) − v̂⁽ᵏ⁾(∅)| — each
model its own bound, from its own data. The loss per subset S and side (AND, OR) is

    (1 − α) · max_k |I_k(S)| + α · Σ_k |I_k(S)|,     α = 0.1,

which pulls the models towards the same sparse support. ``"lp"`` solves it exactly (the LP of
``lp.py`` with an epigraph variable for the max; canonical form as in ``sparsify``: players in
canonical order, least order weight among near-optimal solutions, singletons merged),
``"adam"`` approximately.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from .lp import solve_and_or_lp
from .result import Sparsification
from .lp import TIEBREAK_TOL
from .sparsify import decompose, merge_singletons, noise_bound, torch_threads
from .transforms import and_interactions, canonical_player_order, n_players_of, or_interactions, permute_players

ALPHA = 0.1
GAMMA_HAT_REL = 0.5
#: the joint q bound of the reference's joint extraction (relative to |v(N) − v(∅)|)
JOINT_Q_REL = 0.02


def joint_scales(values, gamma_hat_rel: float = GAMMA_HAT_REL) -> tuple[np.ndarray, np.ndarray]:
    """Per-model scale and γ̂ bound from a dataset of values ``[P prompts, K models, 2^n]``
    (or a list of [K, 2^n]; n may differ between prompts — only v(N) and v(∅) are used).

    scale_k = mean_p |v_pk(N) − v_pk(∅)|;  γ̂ bound_k = gamma_hat_rel · |mean_p (v_pk(N) − v_pk(∅))| / scale_k
    (the bound in normalised units). Returns ``(scales [K], gamma_hat_bounds [K])``.
    """
    deltas = np.array([[float(v[-1] - v[0]) for v in np.atleast_2d(np.asarray(vk, dtype=np.float64))]
                       for vk in values])  # [P, K]
    scales = np.abs(deltas).mean(0)
    if (scales <= 0).any() or not np.isfinite(scales).all():
        raise ValueError(f"a model has v(N) = v(∅) on every prompt (scales {scales}); cannot normalise")
    return scales, gamma_hat_rel * np.abs(deltas.mean(0)) / scales


def joint_objective(i_and: np.ndarray, i_or: np.ndarray, alpha: float = ALPHA) -> float:
    """Σ_S (1−α)·max_k|I_k(S)| + α·Σ_k|I_k(S)| over AND and OR (arrays [K, 2^n])."""
    total = 0.0
    for arr in (np.abs(i_and), np.abs(i_or)):
        total += (1 - alpha) * arr.max(0).sum() + alpha * arr.sum()
    return float(total)


def joint_sparsify(V, *, method: str = "auto", alpha: float = ALPHA, q_rel: float = JOINT_Q_REL,
                   gamma_hat_rel: float = GAMMA_HAT_REL, scales=None, gamma_hat_bounds=None,
                   normalise: bool = True, canonical: bool = True, steps: int = 4000, lr: float = 0.02,
                   seed: int = 0) -> list[Sparsification]:
    """Joint sparse interactions for values ``V`` [K, 2^n] (same players and target word in K
    models). Returns one ``Sparsification`` per model (method ``"joint-lp"``/``"joint-adam"``),
    in each model's own units.

    Args:
        scales, gamma_hat_bounds: per-model scale c_k and γ̂ bound (normalised units) from the
            whole dataset (``joint_scales``); default: from ``V`` alone.
        normalise: False solves on the raw values (scale-dependent; for comparison only).
        canonical: canonical order, tie-break and merged singletons (``sparsify``).
    """
    V = np.asarray(V, dtype=np.float64)
    if V.ndim != 2 or V.shape[0] < 2:
        raise ValueError(f"joint extraction needs values [K ≥ 2, 2^n], got {V.shape}")
    n = n_players_of(V.shape[1])
    K = V.shape[0]
    if not 0 <= alpha <= 1:
        raise ValueError("alpha must lie in [0, 1]")
    if method == "auto":
        method = "lp" if n <= 10 else "adam"
    if not normalise:
        c = np.ones(K)
        hb = np.full(K, gamma_hat_rel * abs(float(np.mean(V[:, -1] - V[:, 0]))))
    else:
        own_c, own_hb = joint_scales([V], gamma_hat_rel)
        c = own_c if scales is None else np.broadcast_to(np.asarray(scales, dtype=np.float64), (K,))
        hb = own_hb if gamma_hat_bounds is None else np.broadcast_to(
            np.asarray(gamma_hat_bounds, dtype=np.float64), (K,))
        if (c <= 0).any():
            raise ValueError(f"scales must be positive, got {c}")
    Vn = V / c[:, None]
    qb = noise_bound(Vn, q_rel)
    t0 = time.perf_counter()
    perm = canonical_player_order(Vn) if canonical else np.arange(n)
    inv = np.argsort(perm)
    if method == "lp":
        gamma, q, _, info = solve_and_or_lp(permute_players(Vn, perm), qb, gamma_hat_bound=hb, alpha=alpha,
                                            tiebreak_tol=TIEBREAK_TOL if canonical else None)
        gamma, q = permute_players(gamma, inv), permute_players(q, inv)
    elif method == "adam":
        with torch_threads(1):
            gamma, q, info = _joint_adam(Vn, qb, hb, alpha=alpha, steps=steps, lr=lr, seed=seed)
    else:
        raise ValueError(f"joint method must be 'auto', 'lp' or 'adam', not {method!r}")
    if canonical:
        gamma = merge_singletons(Vn, gamma, q)
    seconds = time.perf_counter() - t0
    i_and, i_or = decompose(Vn, gamma, q)
    info = {**info, "alpha": alpha, "q_rel": q_rel, "gamma_hat_bound": hb.tolist(), "scales": c.tolist(),
            "normalised": normalise, "canonical": canonical,
            "joint_objective": joint_objective(i_and, i_or, alpha)}
    return [Sparsification(i_and=c[k] * i_and[k], i_or=c[k] * i_or[k], gamma=c[k] * gamma[k], q=c[k] * q[k],
                           l1=float(c[k] * (np.abs(i_and[k]).sum() + np.abs(i_or[k]).sum())),
                           method=f"joint-{method}", q_bound=float(c[k] * qb[k]), seconds=seconds, info=info)
            for k in range(K)]


def _joint_adam(V, qb, hb, *, alpha, steps, lr, seed, eps=(0.1, 1e-6)):
    torch.manual_seed(seed)
    v = torch.tensor(V, dtype=torch.float64)
    K, N = v.shape
    scale = float(np.abs(V).max()) + 1e-12
    g_sh = torch.zeros(N, dtype=torch.float64, requires_grad=True)
    w = torch.zeros_like(v, requires_grad=True)
    u = torch.zeros_like(v, requires_grad=True)
    qbt = torch.tensor(qb, dtype=torch.float64)[:, None]
    opt = torch.optim.Adam([g_sh, w, u], lr=lr)
    best = (np.inf, None, None)
    for k in range(steps):
        frac = k / max(1, steps - 1)
        for grp in opt.param_groups:
            grp["lr"] = lr * (1.0 - frac) + 1e-3 * lr
        gamma = scale * g_sh + torch.tensor(hb, dtype=torch.float64)[:, None] * torch.tanh(w)
        q = qbt * torch.tanh(u)
        half = 0.5 * (v + q)
        i_and, i_or = and_interactions(half + gamma), or_interactions(half - gamma)
        with torch.no_grad():
            obj = joint_objective(i_and.numpy(), i_or.numpy(), alpha)
            if obj < best[0]:
                best = (obj, gamma.detach().clone(), q.detach().clone())
        e = scale * eps[0] * (eps[1] / eps[0]) ** frac
        loss = 0.0
        for arr in (i_and, i_or):
            a = torch.sqrt(arr ** 2 + e ** 2) - e
            loss = loss + (1 - alpha) * a.max(0).values.sum() + alpha * a.sum()
        opt.zero_grad()
        (loss / scale).backward()
        opt.step()
    return best[1].numpy(), best[2].numpy(), {"solver": "adam", "steps": steps, "lr": lr, "seed": seed}
