"""Joint AND-OR extraction over several models (generalizable interactions).

Each model k keeps its own values v⁽ᵏ⁾ and noise q⁽ᵏ⁾ (|q⁽ᵏ⁾| ≤ 0.04·|v⁽ᵏ⁾(N) − v⁽ᵏ⁾(∅)|), and the
AND/OR split is γ⁽ᵏ⁾ = γ_shared + γ̂⁽ᵏ⁾ with |γ̂⁽ᵏ⁾| ≤ 0.5·|mean_k (v⁽ᵏ⁾(N) − v⁽ᵏ⁾(∅))|. The loss per
subset S and side (AND, OR) is

    (1 − α) · max_k |I_k(S)| + α · Σ_k |I_k(S)|,     α = 0.1,

which pulls the models towards the same sparse support. ``"lp"`` solves it exactly (the LP of
``lp.py`` with an epigraph variable for the max), ``"adam"`` approximately.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from .lp import solve_and_or_lp
from .result import Sparsification
from .sparsify import Q_REL, decompose, noise_bound, torch_threads
from .transforms import and_interactions, n_players_of, or_interactions

ALPHA = 0.1
GAMMA_HAT_REL = 0.5


def joint_objective(i_and: np.ndarray, i_or: np.ndarray, alpha: float = ALPHA) -> float:
    """Σ_S (1−α)·max_k|I_k(S)| + α·Σ_k|I_k(S)| over AND and OR (arrays [K, 2^n])."""
    total = 0.0
    for arr in (np.abs(i_and), np.abs(i_or)):
        total += (1 - alpha) * arr.max(0).sum() + alpha * arr.sum()
    return float(total)


def joint_sparsify(V, *, method: str = "auto", alpha: float = ALPHA, q_rel: float = Q_REL,
                   gamma_hat_rel: float = GAMMA_HAT_REL, steps: int = 4000, lr: float = 0.02,
                   seed: int = 0) -> list[Sparsification]:
    """Joint sparse interactions for values ``V`` [K, 2^n] (same players and target word in K
    models). Returns one ``Sparsification`` per model (method ``"joint-lp"``/``"joint-adam"``)."""
    V = np.asarray(V, dtype=np.float64)
    if V.ndim != 2 or V.shape[0] < 2:
        raise ValueError(f"joint extraction needs values [K ≥ 2, 2^n], got {V.shape}")
    n = n_players_of(V.shape[1])
    if not 0 <= alpha <= 1:
        raise ValueError("alpha must lie in [0, 1]")
    if method == "auto":
        method = "lp" if n <= 10 else "adam"
    qb = noise_bound(V, q_rel)
    hb = gamma_hat_rel * abs(float(np.mean(V[:, -1] - V[:, 0])))
    t0 = time.perf_counter()
    if method == "lp":
        gamma, q, _, info = solve_and_or_lp(V, qb, gamma_hat_bound=hb, alpha=alpha)
    elif method == "adam":
        with torch_threads(1):
            gamma, q, info = _joint_adam(V, qb, hb, alpha=alpha, steps=steps, lr=lr, seed=seed)
    else:
        raise ValueError(f"joint method must be 'auto', 'lp' or 'adam', not {method!r}")
    seconds = time.perf_counter() - t0
    i_and, i_or = decompose(V, gamma, q)
    info = {**info, "alpha": alpha, "gamma_hat_bound": hb,
            "joint_objective": joint_objective(i_and, i_or, alpha)}
    return [Sparsification(i_and=i_and[k], i_or=i_or[k], gamma=gamma[k], q=q[k],
                           l1=float(np.abs(i_and[k]).sum() + np.abs(i_or[k]).sum()),
                           method=f"joint-{method}", q_bound=float(qb[k]), seconds=seconds, info=info)
            for k in range(len(V))]


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
        gamma = scale * g_sh + hb * torch.tanh(w)
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
