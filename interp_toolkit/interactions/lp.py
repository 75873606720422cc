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

**Canonical tie-break.** The L1 optimum is not unique: c·AND{i,j} + c·OR{i,j} is the same
game as c·AND{i} + c·AND{j}, with the same L1. With ``tiebreak_tol`` set (default
``TIEBREAK_TOL`` = 1e-6) a second LP runs on the same constraints: it minimises the order
weight Σ_k Σ_S |S|·(|I_and,k(S)| + |I_or,k(S)|) subject to objective ≤ f*·(1 + tol) + 1e-9,
where f* is the first LP's optimum — among (near-)optimal decompositions the one with the
lowest strength-weighted order, so a linear v comes back as singletons. Both objectives are
symmetric in the players, so renumbering them renumbers the optimal face — but which vertex
of a face the solver returns depends on the numbering; ``sparsify`` and ``joint_sparsify``
therefore solve with the players in a canonical order (``transforms.canonical_player_order``).
"""

from __future__ import annotations

import time

import numpy as np
import scipy.sparse as sp
from scipy.optimize import linprog

from .transforms import n_players_of, popcount

#: relative slack on the L1 optimum allowed to the tie-breaking LP (solver precision ≈ 1e-8)
TIEBREAK_TOL = 1e-6


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

    def le_row(self, idx, coef, rhs: float) -> None:
        """One dense row Σ_j coef[j]·x[idx[j]] ≤ rhs."""
        idx = np.asarray(idx)
        store = self._rows["ub"]
        store[0].append(np.full(len(idx), store[4]))
        store[1].append(idx)
        store[2].append(np.broadcast_to(np.asarray(coef, dtype=float), idx.shape))
        store[3].append(np.array([float(rhs)]))
        store[4] += 1

    def _matrix(self, kind: str):
        r, c, v, rhs, count = self._rows[kind]
        if not count:
            return None, None
        A = sp.csr_matrix((np.concatenate(v), (np.concatenate(r), np.concatenate(c))),
                          shape=(count, self.n_vars))
        return A, np.concatenate(rhs)

    def cost(self) -> np.ndarray:
        """The objective vector [n_vars]."""
        return np.concatenate(self._cost)

    def solve(self, method: str = "highs-ipm", time_limit: float | None = None, cost=None):
        """Solve with the stored objective (or ``cost`` [n_vars] instead)."""
        A_eq, b_eq = self._matrix("eq")
        A_ub, b_ub = self._matrix("ub")
        bounds = np.stack([np.concatenate(self._lb), np.concatenate(self._ub)], axis=1)
        options = {} if time_limit is None else {"time_limit": float(time_limit)}
        res = linprog(self.cost() if cost is None else cost, A_ub=A_ub, b_ub=b_ub, A_eq=A_eq, b_eq=b_eq,
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


def solve_and_or_lp(V: np.ndarray, q_bounds, *, gamma_hat_bound=None,
                    alpha: float = 0.1, method: str = "highs-ipm", time_limit: float | None = None,
                    tiebreak_tol: float | None = TIEBREAK_TOL):
    """Minimise the (joint) L1 of AND-OR interactions of ``V`` (``[2^n]`` or ``[K, 2^n]``).

    ``q_bounds``: |q⁽ᵏ⁾| bound per model (scalar or [K]); ``gamma_hat_bound``: |γ̂⁽ᵏ⁾| bound
    (scalar or [K]; joint only). ``tiebreak_tol``: run the order-weight tie-break LP (module
    docstring) within this relative slack of the optimum; None skips it.
    Returns ``(gamma [K, 2^n], q [K, 2^n], objective, info)`` where γ⁽ᵏ⁾ already includes the
    shared part. With one model the objective is ‖I_and‖₁ + ‖I_or‖₁ (of the first LP).
    """
    V = np.atleast_2d(np.asarray(V, dtype=np.float64))
    K, N = V.shape
    q_bounds = np.broadcast_to(np.asarray(q_bounds, dtype=float), (K,))
    t0 = time.perf_counter()
    lp = LinearProgram()
    g_shared = lp.variables(N)
    joint = K > 1
    g_hat = []
    hb = None if gamma_hat_bound is None else np.broadcast_to(np.asarray(gamma_hat_bound, dtype=float), (K,))
    for k in range(K):
        g_hat.append(lp.variables(N, -hb[k], hb[k]) if joint and hb is not None
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
    x, fun = res.x, float(res.fun)
    info = {"solver": f"scipy.linprog/{method}", "n_vars": lp.n_vars, "build_s": t_build, "objective": fun}
    if tiebreak_tol is not None:
        # second LP: least order weight Σ|S|·|I| among decompositions within tol of the optimum
        first = lp.cost()
        used = np.flatnonzero(first)
        lp.le_row(used, first[used], fun * (1.0 + tiebreak_tol) + 1e-9)
        order = np.zeros(lp.n_vars)
        pc = popcount(n_players_of(N)).astype(float)
        for key, val in pm.items():
            if key[0] != "q":
                order[val[0]] = pc
                order[val[1]] = pc
        res2 = lp.solve(method=method, time_limit=time_limit, cost=order)
        x = res2.x
        info["tiebreak"] = {"rule": "min Σ|S|·|I(S)| s.t. objective ≤ f*(1+tol)", "tol": tiebreak_tol,
                            "order_weight": float(res2.fun), "objective": float(first @ x)}
    gamma = np.stack([x[g_shared] + (x[g_hat[k]] if g_hat[k] is not None else 0.0) for k in range(K)])
    q = np.stack([np.clip(x[pm[("q", k)]], -q_bounds[k], q_bounds[k]) for k in range(K)])
    info["solve_s"] = time.perf_counter() - t0 - t_build
    return gamma, q, fun, info
