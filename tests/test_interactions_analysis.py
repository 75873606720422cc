"""Salient sets, orders, cancellation, Shapley values and sharing metrics."""

import numpy as np
import pytest

from interp_toolkit.interactions import analysis
from interp_toolkit.interactions.sparsify import sparsify


def _pair(n, entries_and=(), entries_or=()):
    a, o = np.zeros(2 ** n), np.zeros(2 ** n)
    for m, v in entries_and:
        a[m] = v
    for m, v in entries_or:
        o[m] = v
    return a, o


def test_salient_threshold_is_relative_to_max():
    x = _pair(3, [(0b011, 10.0), (0b001, 0.4), (0b111, -0.6)], [(0b110, 0.5)])
    s = analysis.salient(x)  # τ = 0.5: strictly greater
    f = analysis.flat(x)
    chosen = {(k, m) for k, m, keep in zip(f["kinds"], f["masks"], s) if keep}
    assert chosen == {("AND", 0b011), ("AND", 0b111)}
    od = analysis.order_distribution(x)
    assert od["counts"] == [0, 0, 1, 1]
    assert od["positive"][2] == 10.0 and od["negative"][3] == 0.6


def test_empty_set_is_not_an_interaction():
    x = _pair(2, [(0, 100.0), (0b01, 1.0)])
    assert analysis.salient(x).sum() == 1


def test_cancellation():
    c = analysis.cancellation([1.0, -1.0, 2.0, 3.0], [1, 1, 2, 2], n=2)
    assert c["per_order"][1] == 0.0 and c["per_order"][2] == 1.0
    assert np.isnan(c["per_order"][0])
    assert c["overall"] == pytest.approx(5.0 / 7.0)


def test_shapley_from_interactions_matches_direct_formula_and_is_efficient():
    rng = np.random.default_rng(0)
    v = rng.normal(size=2 ** 6)
    r = sparsify(v - v[0], method="lp")
    u = (v - v[0]) + r.q
    phi = analysis.shapley_from_interactions(r.i_and, r.i_or)
    np.testing.assert_allclose(phi, analysis.shapley_direct(u), atol=1e-9)
    assert phi.sum() == pytest.approx(u[-1] - u[0], abs=1e-9)


def test_sharing_identical_opposite_and_scaled():
    rng = np.random.default_rng(1)
    a = rng.normal(size=(2, 2 ** 4))
    x = (a[0], a[1])
    same = analysis.sharing(x, x)
    assert same["overlap"] == pytest.approx(1.0) and same["transfer_1to2"] == 1.0
    assert same["shared_strength_1"] == pytest.approx(1.0)
    flipped = analysis.sharing(x, (-a[0], -a[1]))
    assert flipped["overlap"] == 0.0 and flipped["shared_strength_1"] == 0.0
    assert flipped["transfer_1to2"] == 1.0  # same sets, opposite signs: transferability ignores sign
    scaled = analysis.sharing(x, (3 * a[0], 3 * a[1]))
    assert scaled["overlap"] == pytest.approx(1.0) and scaled["overlap_raw"] == pytest.approx(1 / 3)


def test_sharing_counts_by_hand():
    x1 = _pair(2, [(0b01, 1.0), (0b11, 1.0)], [(0b10, -1.0)])
    x2 = _pair(2, [(0b01, 2.0)], [(0b10, 1.0), (0b11, 1.0)])
    s = analysis.sharing(x1, x2)
    assert s["n_salient_1"] == 3 and s["n_salient_2"] == 3
    assert s["transfer_1to2"] == pytest.approx(2 / 3)  # AND{0} and OR{1} are in both
    assert s["n_shared"] == 1  # only AND{0} has the same sign
    assert s["shared_strength_1"] == pytest.approx(1 / 3)
    split = analysis.shared_vs_nonshared(x1, x2)
    assert split["shared"]["order_list"] == [1]
    assert sorted(split["non_shared"]["order_list"]) == [1, 2]


def _similar_pairs(seed, prompts, noise):
    """Per prompt: model 2's AND part is model 1's plus Gaussian noise, same OR part (n = 4)."""
    rng = np.random.default_rng(seed)
    pairs = []
    for _ in range(prompts):
        a = rng.normal(size=(2, 2 ** 4))
        pairs.append(((a[0], a[1]), (a[0] + noise * rng.normal(size=16), a[1])))
    return pairs


def test_aggregate_pools_prompts():
    agg = analysis.aggregate(_similar_pairs(2, 3, 0.1))
    assert agg["n_prompts"] == 3
    assert agg["mean"]["overlap"] > 0.8
    total = agg["pooled"]["shared"]["count"] + agg["pooled"]["non_shared"]["count"]
    assert total == sum(m["n_salient_1"] + m["n_salient_2"] for m in agg["per_prompt"])


def test_plot_aggregate_draws_the_pooled_fractions():
    from interp_toolkit.interactions.plots import plot_aggregate

    agg = analysis.aggregate(_similar_pairs(3, 2, 0.5))
    fig = plot_aggregate(agg, title="t")
    bars_ax, canc_ax = fig.axes
    heights = {g: [] for g in ("shared", "non_shared")}
    for container, g in zip(bars_ax.containers, heights):
        heights[g] = [b.get_height() for b in container]
    for g in heights:  # bar heights are the order fractions of orders 1..n
        assert heights[g] == pytest.approx(agg["pooled"][g]["order_frac"][1:])
    line = canc_ax.get_lines()[0].get_ydata()
    np.testing.assert_allclose(line, np.asarray(agg["pooled"]["shared"]["cancellation_per_order"][1:], dtype=float))


# ---------------------------------------------------------------------- controls
def test_subsample_cancellation_closed_forms_and_brute_force():
    from itertools import combinations
    # one sign: every subset has ratio 1; {+1, −1}: subsets of 1 → 1, the pair → 0
    assert analysis.subsample_cancellation([1.0, 2.0, 3.0], [2, 2, 3], 2) == pytest.approx(1.0)
    assert analysis.subsample_cancellation([1.0, -1.0], [2, 2], 1) == pytest.approx(1.0)
    assert analysis.subsample_cancellation([1.0, -1.0], [2, 2], 2) == pytest.approx(0.0)
    rng = np.random.default_rng(0)
    vals, ords = rng.normal(size=9), rng.integers(1, 4, size=9)

    def ratio(idx):
        v, o = vals[list(idx)], ords[list(idx)]
        return sum(abs(v[o == k].sum()) for k in set(o)) / np.abs(v).sum()

    exact = np.mean([ratio(c) for c in combinations(range(9), 4)])  # 126 subsets
    assert analysis.subsample_cancellation(vals, ords, 4, draws=200) == pytest.approx(exact, abs=1e-12)
    mc = analysis.subsample_cancellation(vals, ords, 4, draws=100, seed=1)  # Monte-Carlo branch
    assert mc != exact and mc == pytest.approx(exact, abs=0.08)


def _cell(shared_vals, other_vals, order_shared, order_other, n=4):
    """A (model 1, model 2) pair whose model-1 salient set splits as given (model 2 holds the
    shared sets with the same sign and nothing else)."""
    a1, o1, a2, o2 = (np.zeros(2 ** n) for _ in range(4))
    masks = [m for m in range(1, 2 ** n)]
    by_order = {k: [m for m in masks if bin(m).count("1") == k] for k in range(1, n + 1)}
    used = {k: 0 for k in by_order}

    def take(k):
        m = by_order[k][used[k]]
        used[k] += 1
        return m

    for v, k in zip(shared_vals, order_shared):
        m = take(k)
        a1[m] = v
        a2[m] = v
    for v, k in zip(other_vals, order_other):
        a1[take(k)] = v
    return (a1, o1), (a2, o2)


def test_sharing_controls_permutation_p_value_matches_brute_force():
    from itertools import combinations
    x1, x2 = _cell([5.0, 4.0], [3.0, -3.0, 2.5], [1, 2], [2, 3, 3])
    res = analysis.sharing_controls([(x1, x2)], draws=400, seed=0)
    # model 2 has only the two shared sets, all of them shared: only model 1's cell counts
    assert res["cells"] == 1
    vals = np.array([5.0, 4.0, 3.0, -3.0, 2.5])
    ords = np.array([1, 2, 2, 3, 3])

    def canc(idx):
        v, o = vals[list(idx)], ords[list(idx)]
        return sum(abs(v[o == k].sum()) for k in set(o)) / np.abs(v).sum()

    obs = canc([0, 1]) - canc([2, 3, 4])
    assert res["observed"]["delta_cancellation"] == pytest.approx(obs)
    assert res["observed"]["delta_order"] == pytest.approx(8 / 3 - 1.5)
    # exact permutation distribution over the C(5, 2) = 10 relabelings
    null = [canc(c) - canc([i for i in range(5) if i not in c]) for c in combinations(range(5), 2)]
    p_exact = np.mean([d >= obs - 1e-12 for d in null])
    assert res["permutation"]["p_delta_cancellation"] == pytest.approx(p_exact, abs=0.06)
    assert res["permutation"]["delta_cancellation_null_mean"] == pytest.approx(np.mean(null), abs=0.05)
    # size-matched: non-shared subsampled to 2 (exact over its 3 pairs); shared unchanged
    pairs = [canc(c) for c in combinations([2, 3, 4], 2)]
    assert res["size_matched"]["cancellation_non_shared"] == pytest.approx(np.mean(pairs))
    assert res["size_matched"]["cancellation_shared"] == pytest.approx(canc([0, 1]))
