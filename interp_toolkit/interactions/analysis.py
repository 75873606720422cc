"""Analyses of AND-OR interactions: salient sets, orders, cancellation, Shapley values, sharing.

Interactions are passed as ``(i_and, i_or)`` float64 arrays ``[2^n]`` indexed by subset bit
mask. The empty set carries v(∅)-level terms, not interactions between words, so it is left
out of salient sets and sharing by default.

Definitions (DESIGN §4):

- salient set Ω = {(kind, S) : S ≠ ∅, |I(S)| > τ}, τ = 0.05·max |I| over both kinds;
- order = |S|;
- cancellation of a group per order k: |Σ I| / Σ |I| over its interactions of order k
  (1 = all one sign, 0 = full cancellation); overall: Σ_k |Σ_{|S|=k} I| / Σ |I|;
- Shapley values from Harsanyi interactions: φ_i = Σ_{S∋i} (I_and(S) + I_or(S)) / |S|;
- sharing between models 1 and 2 (same players and target word):
  (a) sign-aware overlap Σ[min(I₁⁺,I₂⁺) + min(I₁⁻,I₂⁻)] / Σ[max(I₁⁺,I₂⁺) + max(I₁⁻,I₂⁻)]
      (``overlap``: each model's interactions first divided by their L1 norm, since log-odds
      scales differ between models; ``overlap_raw`` without that),
  (b) transferability |Ω₁ ∩ Ω₂| / |Ω₁|,
  (c) shared-strength ratio Σ_{Ω₁} |I₁|·1[S ∈ Ω₂, same sign] / Σ_{Ω₁} |I₁|;
  an interaction of model 1 is *shared* when it is in Ω₂ with the same sign.
"""

from __future__ import annotations

import math
import warnings

import numpy as np

from .transforms import n_players_of, popcount

TAU_REL = 0.05


def _pair(x):
    """(i_and, i_or) from an InteractionResult, a Sparsification or a tuple."""
    if hasattr(x, "i_and") and hasattr(x, "i_or"):
        return np.asarray(x.i_and, dtype=np.float64), np.asarray(x.i_or, dtype=np.float64)
    a, o = x
    return np.asarray(a, dtype=np.float64), np.asarray(o, dtype=np.float64)


def flat(x, include_empty: bool = False) -> dict:
    """Both kinds as one table: values, orders, kinds ('AND'/'OR') and masks (AND first)."""
    i_and, i_or = _pair(x)
    n = n_players_of(len(i_and))
    start = 0 if include_empty else 1
    masks = np.arange(start, 2 ** n)
    pc = popcount(n)[masks]
    return {"values": np.concatenate([i_and[start:], i_or[start:]]),
            "orders": np.concatenate([pc, pc]),
            "kinds": np.array(["AND"] * len(masks) + ["OR"] * len(masks)),
            "masks": np.concatenate([masks, masks]), "n": n}


def salient(x, tau_rel: float = TAU_REL) -> np.ndarray:
    """Boolean over ``flat(x)`` rows: |I| > τ = tau_rel · max|I| (non-empty sets)."""
    vals = flat(x)["values"]
    top = np.abs(vals).max() if len(vals) else 0.0
    if top == 0:
        return np.zeros(len(vals), dtype=bool)
    return np.abs(vals) > tau_rel * top


def order_distribution(x, tau_rel: float = TAU_REL, select: np.ndarray | None = None) -> dict:
    """Counts and strengths per order (0..n) of the salient interactions (or of ``select``)."""
    f = flat(x)
    sel = salient(x, tau_rel) if select is None else np.asarray(select, dtype=bool)
    n = f["n"]
    counts = np.bincount(f["orders"][sel], minlength=n + 1)
    vals = f["values"][sel]
    ords = f["orders"][sel]
    pos, neg = _signed_strength(vals, ords, n)
    return {"counts": counts.tolist(), "positive": pos.tolist(), "negative": neg.tolist(),
            "mean_order": float(ords.mean()) if len(ords) else float("nan"),
            "strength_weighted_order": _strength_weighted_order(vals, ords)}


def _signed_strength(values, orders, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Σ max(I, 0) and Σ max(−I, 0) per order 0..n."""
    return (np.bincount(orders, weights=np.clip(values, 0, None), minlength=n + 1),
            np.bincount(orders, weights=np.clip(-values, 0, None), minlength=n + 1))


def _strength_weighted_order(values, orders) -> float:
    """Σ |S|·|I(S)| / Σ |I(S)| (NaN when there is no strength)."""
    w = np.abs(values)
    return float((orders * w).sum() / w.sum()) if len(w) and w.sum() > 0 else float("nan")


def strength_by_order(x, salient_only: bool = True, tau_rel: float = TAU_REL) -> dict:
    """Positive and negative strength per order, separately for AND and OR."""
    f = flat(x)
    sel = salient(x, tau_rel) if salient_only else np.ones(len(f["values"]), dtype=bool)
    n = f["n"]
    out = {}
    for kind in ("AND", "OR"):
        m = sel & (f["kinds"] == kind)
        pos, neg = _signed_strength(f["values"][m], f["orders"][m], n)
        out[kind] = {"positive": pos.tolist(), "negative": neg.tolist()}
    return out


def cancellation(values, orders, n: int | None = None) -> dict:
    """Per-order |ΣI|/Σ|I| (NaN where a group has no interaction of that order) and overall
    Σ_k |Σ_k I| / Σ|I|."""
    values = np.asarray(values, dtype=np.float64)
    orders = np.asarray(orders, dtype=np.int64)
    n = int(orders.max()) if n is None and len(orders) else (n or 0)
    net = np.bincount(orders, weights=values, minlength=n + 1)
    mag = np.bincount(orders, weights=np.abs(values), minlength=n + 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        per = np.where(mag > 0, np.abs(net) / mag, np.nan)
    overall = float(np.abs(net).sum() / mag.sum()) if mag.sum() > 0 else float("nan")
    return {"per_order": per.tolist(), "overall": overall, "net": net.tolist(), "magnitude": mag.tolist()}


# ---------------------------------------------------------------------- Shapley
def shapley_from_interactions(i_and, i_or) -> np.ndarray:
    """φ_i = Σ_{S∋i} (I_and(S) + I_or(S)) / |S| — the Shapley values of v + q (AND terms are
    unanimity games, OR terms 'any of S present' games; both split equally within S)."""
    i_and = np.asarray(i_and, dtype=np.float64)
    i_or = np.asarray(i_or, dtype=np.float64)
    n = n_players_of(len(i_and))
    pc = popcount(n)
    share = np.zeros(2 ** n)
    share[1:] = (i_and[1:] + i_or[1:]) / pc[1:]
    s = np.arange(2 ** n)
    return np.array([share[(s >> i) & 1 == 1].sum() for i in range(n)])


def shapley_direct(u) -> np.ndarray:
    """Shapley values of the set function u by the subset formula (for checks; O(n·2^n))."""
    u = np.asarray(u, dtype=np.float64)
    n = n_players_of(len(u))
    pc = popcount(n)
    w = np.array([math.factorial(k) * math.factorial(n - k - 1) / math.factorial(n) if k < n else 0.0
                  for k in range(n + 1)])
    s = np.arange(2 ** n)
    phi = np.zeros(n)
    for i in range(n):
        without = s[(s >> i) & 1 == 0]
        phi[i] = (w[pc[without]] * (u[without | (1 << i)] - u[without])).sum()
    return phi


# ---------------------------------------------------------------------- sharing
def shared_mask(x1, x2, tau_rel: float = TAU_REL) -> np.ndarray:
    """Over ``flat(x1)`` rows: salient in model 1 and in model 2 with the same sign."""
    v1, v2 = flat(x1)["values"], flat(x2)["values"]
    if len(v1) != len(v2):
        raise ValueError("the two results have different numbers of players")
    return salient(x1, tau_rel) & salient(x2, tau_rel) & (np.sign(v1) == np.sign(v2))


def sharing(x1, x2, tau_rel: float = TAU_REL) -> dict:
    """Sharing metrics between two models' interactions (see module docstring)."""
    f1, f2 = flat(x1), flat(x2)
    a, b = f1["values"], f2["values"]
    if len(a) != len(b):
        raise ValueError(f"cannot compare {f1['n']} players with {f2['n']}")
    s1, s2 = salient(x1, tau_rel), salient(x2, tau_rel)
    same = np.sign(a) == np.sign(b)

    def overlap(p, q):
        pp, pn, qp, qn = np.clip(p, 0, None), np.clip(-p, 0, None), np.clip(q, 0, None), np.clip(-q, 0, None)
        den = (np.maximum(pp, qp) + np.maximum(pn, qn)).sum()
        return float((np.minimum(pp, qp) + np.minimum(pn, qn)).sum() / den) if den > 0 else float("nan")

    def ratio(num, den):
        return float(num / den) if den > 0 else float("nan")

    na, nb = np.abs(a).sum(), np.abs(b).sum()
    return {
        "overlap": overlap(a / na if na else a, b / nb if nb else b),
        "overlap_raw": overlap(a, b),
        "transfer_1to2": ratio((s1 & s2).sum(), s1.sum()),
        "transfer_2to1": ratio((s1 & s2).sum(), s2.sum()),
        "shared_strength_1": ratio(np.abs(a)[s1 & s2 & same].sum(), np.abs(a)[s1].sum()),
        "shared_strength_2": ratio(np.abs(b)[s1 & s2 & same].sum(), np.abs(b)[s2].sum()),
        "n_salient_1": int(s1.sum()), "n_salient_2": int(s2.sum()),
        "n_shared": int((s1 & s2 & same).sum()), "tau_rel": tau_rel,
    }


def shared_vs_nonshared(x, other, tau_rel: float = TAU_REL) -> dict:
    """For model ``x``: order distribution and cancellation of its salient interactions that
    are shared with ``other`` and of those that are not."""
    f = flat(x)
    sal = salient(x, tau_rel)
    sh = shared_mask(x, other, tau_rel)
    out = {}
    for name, sel in (("shared", sh), ("non_shared", sal & ~sh)):
        out[name] = {"orders": order_distribution(x, select=sel),
                     "cancellation": cancellation(f["values"][sel], f["orders"][sel], f["n"]),
                     "values": f["values"][sel].tolist(), "order_list": f["orders"][sel].tolist()}
    return out


def aggregate(pairs: list[tuple], tau_rel: float = TAU_REL) -> dict:
    """Pool the sharing figures over prompts: ``pairs`` is a list of (x1, x2) per prompt.

    Returns mean/median sharing metrics, and for shared vs non-shared interactions (both
    models' salient sets pooled; values in units of each prompt's salient L1): order
    histograms, mean order, strength by order, and cancellation (computed per prompt and
    model, then averaged — sums never mix prompts).
    """
    metrics = [sharing(a, b, tau_rel) for a, b in pairs]
    keys = ["overlap", "overlap_raw", "transfer_1to2", "transfer_2to1", "shared_strength_1",
            "shared_strength_2", "n_salient_1", "n_salient_2", "n_shared"]
    mean = {k: float(np.nanmean([m[k] for m in metrics])) for k in keys}
    median = {k: float(np.nanmedian([m[k] for m in metrics])) for k in keys}
    groups = ("shared", "non_shared")
    pooled = {g: ([], [], []) for g in groups}  # values, orders, per-prompt cancellation
    per_model = {who: {g: ([], [], []) for g in groups} for who in (1, 2)}
    n = 0
    for a, b in pairs:
        for who, (x, y) in ((1, (a, b)), (2, (b, a))):
            split = shared_vs_nonshared(x, y, tau_rel)
            f = flat(x)
            n = max(n, f["n"])
            # each prompt's values in units of its salient L1, so prompts weigh equally
            tot = np.abs(f["values"][salient(x, tau_rel)]).sum()
            for g in groups:
                vals = np.asarray(split[g]["values"]) / (tot if tot > 0 else 1.0)
                for store in (pooled[g], per_model[who][g]):
                    store[0].extend(vals.tolist())
                    store[1].extend(split[g]["order_list"])
                    store[2].append(split[g]["cancellation"])

    def summary(vals, ords, canc):
        vals, ords = np.asarray(vals), np.asarray(ords, dtype=np.int64)
        hist = np.bincount(ords, minlength=n + 1) if len(ords) else np.zeros(n + 1, dtype=int)
        per_order = np.array([c["per_order"] + [np.nan] * (n + 1 - len(c["per_order"])) for c in canc],
                             dtype=np.float64) if canc else np.full((1, n + 1), np.nan)
        with warnings.catch_warnings():  # all-NaN columns (no interaction of that order) stay NaN
            warnings.simplefilter("ignore", RuntimeWarning)
            mean_per_order = np.nanmean(per_order, axis=0)
            overall = np.nanmean([c["overall"] for c in canc]) if canc else np.nan
        return {"count": int(len(vals)), "order_hist": hist.tolist(),
                "order_frac": (hist / max(1, hist.sum())).tolist(),
                "mean_order": float(ords.mean()) if len(ords) else float("nan"),
                "strength_weighted_order": _strength_weighted_order(vals, ords),
                "strength_frac_by_order": (np.bincount(ords, weights=np.abs(vals), minlength=n + 1)
                                           / max(1e-300, np.abs(vals).sum())).tolist() if len(vals) else [],
                "cancellation_per_order": mean_per_order.tolist(),
                "cancellation_overall": float(overall)}

    return {"n_prompts": len(pairs), "mean": mean, "median": median,
            "pooled": {g: summary(*pooled[g]) for g in groups},
            "per_model": {who: {g: summary(*per_model[who][g]) for g in groups} for who in per_model},
            "per_prompt": metrics}


# ---------------------------------------------------------------------- controls
def _subsets(N: int, k: int, draws: int, rng: np.random.Generator) -> tuple[np.ndarray, bool]:
    """Index sets of size k out of N: all of them when there are at most ``draws`` (exact),
    else ``draws`` uniform random ones. Returns ``([m, k] int array, exact)``."""
    if math.comb(N, k) <= draws:
        from itertools import combinations

        return np.array(list(combinations(range(N), k)), dtype=np.int64).reshape(-1, k), True
    return np.stack([rng.choice(N, size=k, replace=False) for _ in range(draws)]), False


def subsample_cancellation(values, orders, size: int, *, draws: int = 200, seed: int = 0) -> float:
    """Expected overall cancellation Σ_k|Σ_k I|/Σ|I| of a uniformly random subset of ``size``
    of a group's interactions (exact average over all subsets when there are at most
    ``draws`` of them, else a Monte-Carlo mean over ``draws``). Makes groups of different
    sizes comparable: the ratio of a larger group is lower by chance alone."""
    values = np.asarray(values, dtype=np.float64)
    orders = np.asarray(orders, dtype=np.int64)
    if not 0 < size <= len(values):
        raise ValueError(f"size must lie in [1, {len(values)}], got {size}")
    idx, _ = _subsets(len(values), size, draws, np.random.default_rng(seed))
    return float(np.nanmean([cancellation(values[i], orders[i])["overall"] for i in idx]))


def _group_stats(values, orders, shared) -> tuple[float, float]:
    """(cancellation shared − non-shared, mean order non-shared − shared); NaN if a group is empty."""
    if shared.all() or not shared.any():
        return float("nan"), float("nan")
    cs = cancellation(values[shared], orders[shared])["overall"]
    cn = cancellation(values[~shared], orders[~shared])["overall"]
    return cs - cn, float(orders[~shared].mean() - orders[shared].mean())


def sharing_controls(pairs: list[tuple], tau_rel: float = TAU_REL, *, draws: int = 200, seed: int = 0) -> dict:
    """Controls for "shared interactions are lower-order and cancel less", per prompt and model.

    For every prompt and model (x, other) the salient interactions of x split into shared
    (salient in ``other`` with the same sign) and non-shared. Reported, averaged over the
    (prompt, model) cells where both groups are non-empty:

    - ``observed``: cancellation of each group, and the statistics
      Δc = cancellation(shared) − cancellation(non-shared), Δo = mean order(non-shared) − mean order(shared);
    - ``size_matched``: each group's cancellation at the size of the smaller group of its cell
      (``subsample_cancellation``: the larger group subsampled, exact or ``draws`` draws);
    - ``permutation``: the null of Δc and Δo when the shared labels are permuted at random within
      each cell (group sizes kept; draw d uses one permutation per cell and averages over cells),
      with one-sided p-values (1 + #{null ≥ observed}) / (1 + draws).
    """
    rng = np.random.default_rng(seed)
    cells = []
    for a, b in pairs:
        for x, y in ((a, b), (b, a)):
            f = flat(x)
            sal = salient(x, tau_rel)
            sh = shared_mask(x, y, tau_rel)[sal]
            if sh.any() and not sh.all():
                cells.append((f["values"][sal], f["orders"][sal], sh))
    if not cells:
        return {"cells": 0}
    obs = np.array([_group_stats(v, o, s) for v, o, s in cells])
    canc = np.array([[cancellation(v[s], o[s])["overall"], cancellation(v[~s], o[~s])["overall"]]
                     for v, o, s in cells])
    matched = []
    for v, o, s in cells:
        k = int(min(s.sum(), (~s).sum()))
        matched.append([subsample_cancellation(v[s], o[s], k, draws=draws, seed=seed),
                        subsample_cancellation(v[~s], o[~s], k, draws=draws, seed=seed)])
    matched = np.array(matched)
    null = np.zeros((draws, 2))
    for d in range(draws):
        null[d] = np.nanmean([_group_stats(v, o, rng.permutation(s)) for v, o, s in cells], axis=0)
    observed = np.nanmean(obs, axis=0)
    p = (1 + (null >= observed[None]).sum(0)) / (1 + draws)
    return {"cells": len(cells), "draws": draws, "seed": seed,
            "observed": {"cancellation_shared": float(canc[:, 0].mean()),
                         "cancellation_non_shared": float(canc[:, 1].mean()),
                         "delta_cancellation": float(observed[0]), "delta_order": float(observed[1])},
            "size_matched": {"cancellation_shared": float(np.nanmean(matched[:, 0])),
                             "cancellation_non_shared": float(np.nanmean(matched[:, 1])),
                             "delta_cancellation": float(np.nanmean(matched[:, 0] - matched[:, 1]))},
            "permutation": {"delta_cancellation_null_mean": float(null[:, 0].mean()),
                            "delta_cancellation_null_q95": float(np.quantile(null[:, 0], 0.95)),
                            "delta_order_null_mean": float(null[:, 1].mean()),
                            "delta_order_null_q95": float(np.quantile(null[:, 1], 0.95)),
                            "p_delta_cancellation": float(p[0]), "p_delta_order": float(p[1])}}
