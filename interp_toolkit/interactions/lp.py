"""Exact L1 sparsification of AND-OR interactions as a sparse linear program (HiGHS).

The interactions are the Möbius transforms of v_and = ½(v+q) + γ and of the complemented
v_or = ½(v+q) − γ. Writing a transform as a dense 2^n × 2^n matrix gives 3^n non-zeros per
transform and a slow LP; here each of the n butterfly passes of the fast transform is a block
of equality constraints with a new variable per changed entry (``x_i[S] = x_{i−1}[S] −
x_{i−1}[S∖{i}]`` for S ∋ i), so the LP has O(n·2^n) variables and non-zeros. The absolute
values are split as I = p − m with p, m ≥ 0.

One builder covers a single model and the joint extraction over K models
(γ⁽ᵏ⁾ = γ_shared + γ̂⁽ᵏ⁾ with |γ̂⁽ᵏ⁾| ≤ bound, loss per subset and side
(1−α)·max_k |I_k(S)| + α·Σ_k |I_k(S)|).
"""

from __future__ import annotations

import time

import numpy as np
import scipy.sparse as sp
from scipy.optimize import linprog

from .transforms import n_players_of


class LinearProgram:
    """Minimal incremental LP: variables with bounds and costs, equality and ≤ rows."""

    def __init__(self):
        self.n_vars = 0
        self._lb: list[np.ndarray] = []
        self._ub: list[np.ndarray] = []
        self._cost: list[np.ndarray] = []
        self._rows = {"eq": [[], [], [], [], 0], "ub": [[], [], [], [], 0]}  # r, c, val, rhs, count

    def variables(self, k: int, lb=-np.inf, ub=np.inf, cost=0.0) -> np.ndarray:
        idx = np.arange(self.n_vars, self.n_vars + k)
        self.n_vars += k
        self._lb.append(np.broadcast_to(np.asarray(lb, dtype=float), (k,)))
        self._ub.append(np.broadcast_to(np.asarray(ub, dtype=float), (k,)))
        self._cost.append(np.broadcast_to(np.asarray(cost, dtype=float), (k,)))
        return idx

    def _add(self, kind: str, terms, rhs) -> None:
        rhs = np.asarray(rhs, dtype=float)
        k = rhs.shape[0]
        store = self._rows[kind]
        r = np.arange(store[4], store[4] + k)
        for idx, coef in terms:
            idx = np.asarray(idx)
            store[0].append(r)
            store[1].append(idx)
            store[2].append(np.broadcast_to(np.asarray(coef, dtype=float), (k,)))
        store[3].append(rhs)
        store[4] += k

    def eq(self, terms, rhs) -> None:
        """Rows Σ coef·x[idx] = rhs (each term: index array of length k and a coefficient)."""
        self._add("eq", terms, rhs)

    def le(self, terms, rhs) -> None:
        """Rows Σ coef·x[idx] ≤ rhs."""
        self._add("ub", terms, rhs)

    def _matrix(self, kind: str):
        r, c, v, rhs, count = self._rows[kind]
        if not count:
            return None, None
        A = sp.csr_matrix((np.concatenate(v), (np.concatenate(r), np.concatenate(c))),
                          shape=(count, self.n_vars))
        return A, np.concatenate(rhs)

    def solve(self, method: str = "highs-ipm", time_limit: float | None = None):
        A_eq, b_eq = self._matrix("eq")
        A_ub, b_ub = self._matrix("ub")
        bounds = np.stack([np.concatenate(self._lb), np.concatenate(self._ub)], axis=1)
        options = {} if time_limit is None else {"time_limit": float(time_limit)}
        res = linprog(np.concatenate(self._cost), A_ub=A_ub, b_ub=b_ub, A_eq=A_eq, b_eq=b_eq,
                      bounds=bounds, method=method, options=options)
        if res.status != 0:
            raise RuntimeError(f"HiGHS did not solve the interaction LP: {res.message}")
        return res


def add_interactions(lp: LinearProgram, x: np.ndarray, side: str) -> tuple[np.ndarray, np.ndarray]:
    """Variables (and signs) equal to the AND or OR interactions of the set function whose
    value at S is variable ``x[S]``: I[S] = sign[S] · var[idx[S]]."""
    N = len(x)
    n = n_players_of(N)
    cur = np.array(x if side == "and" else x[::-1])  # OR: works on S ↦ v_or(N∖S)
    s = np.arange(N)
    for i in range(n):
        hi = s[(s >> i) & 1 == 1]
        new = lp.variables(len(hi))
        lp.eq([(new, 1.0), (cur[hi], -1.0), (cur[hi ^ (1 << i)], 1.0)], np.zeros(len(hi)))
        cur[hi] = new
    sign = np.ones(N)
    if side == "or":
        sign[:] = -1.0
        cur[0], sign[0] = x[0], 1.0  # I_or(∅) = v_or(∅)
    return cur, sign


def solve_and_or_lp(V: np.ndarray, q_bounds, *, gamma_hat_bound: float | None = None,
                    alpha: float = 0.1, method: str = "highs-ipm", time_limit: float | None = None):
    """Minimise the (joint) L1 of AND-OR interactions of ``V`` (``[2^n]`` or ``[K, 2^n]``).

    Returns ``(gamma [K, 2^n], q [K, 2^n], objective, info)`` where γ⁽ᵏ⁾ already includes the
    shared part. With one model the objective is ‖I_and‖₁ + ‖I_or‖₁.
    """
    V = np.atleast_2d(np.asarray(V, dtype=np.float64))
    K, N = V.shape
    q_bounds = np.broadcast_to(np.asarray(q_bounds, dtype=float), (K,))
    t0 = time.perf_counter()
    lp = LinearProgram()
    g_shared = lp.variables(N)
    joint = K > 1
    g_hat = []
    for k in range(K):
        g_hat.append(lp.variables(N, -gamma_hat_bound, gamma_hat_bound) if joint and gamma_hat_bound is not None
                     else (lp.variables(N) if joint else None))
    abs_cost = alpha if joint else 1.0
    pm: dict = {}
    for k in range(K):
        q = lp.variables(N, -q_bounds[k], q_bounds[k])
        for side, sg in (("and", 1.0), ("or", -1.0)):
            a = lp.variables(N)
            terms = [(a, 1.0), (q, -0.5), (g_shared, -sg)]
            if g_hat[k] is not None:
                terms.append((g_hat[k], -sg))
            lp.eq(terms, 0.5 * V[k])
            idx, sign = add_interactions(lp, a, side)
            p = lp.variables(N, 0.0, np.inf, abs_cost)
            m = lp.variables(N, 0.0, np.inf, abs_cost)
            lp.eq([(p, 1.0), (m, -1.0), (idx, -sign)], np.zeros(N))
            pm[(side, k)] = (p, m)
        pm[("q", k)] = q
    if joint and alpha < 1.0:
        for side in ("and", "or"):
            t = lp.variables(N, 0.0, np.inf, 1.0 - alpha)
            for k in range(K):
                p, m = pm[(side, k)]
                lp.le([(p, 1.0), (m, 1.0), (t, -1.0)], np.zeros(N))
    t_build = time.perf_counter() - t0
    res = lp.solve(method=method, time_limit=time_limit)
    x = res.x
    gamma = np.stack([x[g_shared] + (x[g_hat[k]] if g_hat[k] is not None else 0.0) for k in range(K)])
    q = np.stack([np.clip(x[pm[("q", k)]], -q_bounds[k], q_bounds[k]) for k in range(K)])
    info = {"solver": f"scipy.linprog/{method}", "n_vars": lp.n_vars, "build_s": t_build,
            "solve_s": time.perf_counter() - t0 - t_build, "objective": float(res.fun)}
    return gamma, q, float(res.fun), info
