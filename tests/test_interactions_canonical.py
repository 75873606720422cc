"""Canonical AND-OR decompositions: AND/OR singletons merged, L1 ties broken by least order
weight — a linear v gives singletons only, and renumbering the players renumbers the
salient set (random values and tiny-model values)."""

import numpy as np
import pytest
import torch

from interp_toolkit.interactions import analysis
from interp_toolkit.interactions.players import PlayerTokens
from interp_toolkit.interactions.sparsify import decompose, merge_singletons, sparsify
from interp_toolkit.interactions.transforms import canonical_player_order, popcount, relabel_masks
from interp_toolkit.interactions.values import subset_values
from interp_toolkit.models import tiny_model


def relabel(n, perm):
    """mask_new[s] = image of subset s under player i ↦ perm[i] (plain loop, the slow twin
    of transforms.relabel_masks)."""
    out = np.zeros(2 ** n, dtype=np.int64)
    for s in range(2 ** n):
        for i in range(n):
            if (s >> i) & 1:
                out[s] |= 1 << int(perm[i])
    return out


def permuted_values(v, perm):
    """v'(S') = v(S) where S' is S renumbered by perm."""
    n = int(np.log2(len(v)))
    out = np.empty_like(v)
    out[relabel(n, perm)] = v
    return out


def salient_set(r, relabel_to=None):
    f = analysis.flat(r)
    sel = analysis.salient(r)
    masks = f["masks"][sel] if relabel_to is None else relabel_to[f["masks"][sel]]
    return {(k, int(m), float(np.sign(v))) for k, m, v in zip(f["kinds"][sel], masks, f["values"][sel])}


def test_relabel_masks_and_canonical_order():
    rng = np.random.default_rng(4)
    perm = rng.permutation(7)
    np.testing.assert_array_equal(relabel_masks(7, perm), relabel(7, perm))
    v = rng.normal(size=2 ** 7)
    # the canonical numbering of a renumbered v is the same numbering of the same players
    c = canonical_player_order(v)
    cp = canonical_player_order(permuted_values(v, perm))
    np.testing.assert_array_equal(cp[perm], c)


def linear(n, w):
    s = np.arange(2 ** n)
    return sum(w[i] * ((s >> i) & 1) for i in range(n)).astype(np.float64)


@pytest.mark.parametrize("q_bound", [0.0, None])
def test_linear_values_give_only_singletons(q_bound):
    n = 6
    w = np.array([1.5, -2.0, 0.5, 3.0, -0.7, 1.1])
    v = linear(n, w)
    r = sparsify(v, method="lp", q_bound=q_bound)
    high = popcount(n) >= 2
    assert np.abs(r.i_and[high]).max() <= 1e-7 and np.abs(r.i_or[high]).max() <= 1e-7
    # singletons merged into AND: OR carries nothing at ∅ or singletons
    assert np.abs(r.i_or).max() <= 1e-7
    if q_bound == 0.0:
        np.testing.assert_allclose(r.i_and[[1 << i for i in range(n)]], w, atol=1e-7)
    # the raw vertex of the same LP is allowed to differ — but never in L1
    raw = sparsify(v, method="lp", q_bound=q_bound, canonical=False)
    assert raw.l1 == pytest.approx(r.l1, rel=1e-5)


def test_merge_singletons_changes_only_order_le_one_split():
    rng = np.random.default_rng(0)
    v, g, q = rng.normal(size=(3, 2 ** 5))
    a0, o0 = decompose(v, g, q)
    a1, o1 = decompose(v, merge_singletons(v, g, q), q)
    low = popcount(5) <= 1
    np.testing.assert_allclose(a1[~low], a0[~low], atol=1e-12)
    np.testing.assert_allclose(o1[~low], o0[~low], atol=1e-12)
    np.testing.assert_allclose(a1[low], a0[low] + o0[low], atol=1e-12)
    assert np.abs(o1[low]).max() <= 1e-12


def _renumbering_check(v, seed):
    n = int(np.log2(len(v)))
    perm = np.random.default_rng(seed).permutation(n)
    r = sparsify(v, method="lp")
    rp = sparsify(permuted_values(v, perm), method="lp")
    assert rp.l1 == pytest.approx(r.l1, rel=1e-6)
    # same salient set up to the renumbering, and the same values on it
    assert salient_set(r, relabel(n, perm)) == salient_set(rp)
    m = relabel(n, perm)
    big = np.abs(r.i_and) > 0.05 * np.abs(r.i_and).max()
    np.testing.assert_allclose(rp.i_and[m][big], r.i_and[big], rtol=1e-3, atol=1e-4 * r.l1)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_renumbering_players_renumbers_the_salient_set_random(seed):
    rng = np.random.default_rng(seed)
    v = rng.normal(size=2 ** 6)
    v[np.abs(rng.normal(size=2 ** 6)) < 1.0] = 0.0  # sparse-ish values with many ties
    v -= v[0]
    _renumbering_check(v, seed)


def test_renumbering_players_renumbers_the_salient_set_linear_plus_pairs():
    n = 6
    s = np.arange(2 ** n)
    b = [(s >> i) & 1 for i in range(n)]
    v = linear(n, np.ones(n)) + 2.0 * (b[0] & b[1]) - 1.0 * (b[2] | b[5])
    _renumbering_check(v.astype(np.float64), 7)


def test_renumbering_players_renumbers_the_salient_set_tiny_model():
    model = tiny_model("llama", init_std=0.3, dtype=torch.float64, seed=3)
    players = [[1], [2, 3], [5], [7], [9, 10]]
    toks = PlayerTokens.from_positions(list(range(5, 17)), players)
    v = subset_values(model, toks, target=7, baseline=torch.zeros(model.cfg.d_model, dtype=torch.float64))
    assert np.ptp(v) > 1e-3
    _renumbering_check(v - v[0], 11)
    # the same players listed in another order through the model give the same values, permuted
    perm = np.array([3, 0, 4, 1, 2])
    order = np.argsort(perm)  # new player j is old player order[j]
    toks_p = PlayerTokens.from_positions(list(range(5, 17)), [players[i] for i in order])
    vp = subset_values(model, toks_p, target=7, baseline=torch.zeros(model.cfg.d_model, dtype=torch.float64))
    np.testing.assert_allclose(vp, permuted_values(v, perm), atol=1e-9)
