"""Sparsification: universal matching, efficiency, closed forms, optimality against an
independent LP, and the first-order methods against the exact optimum."""

import numpy as np
import pytest
import scipy.sparse as sp
from scipy.optimize import linprog

from interp_toolkit.interactions.joint import joint_objective, joint_sparsify
from interp_toolkit.interactions.sparsify import decompose, noise_bound, sparsify, sparsify_batch
from interp_toolkit.interactions.transforms import or_synthesis, popcount, zeta


def bits(n):
    s = np.arange(2 ** n)
    return [(s >> i) & 1 for i in range(n)]


def planted(n=6):
    b = bits(n)
    return (3 * (b[0] & b[1]) + 2 * (b[2] | b[3]) - (b[1] & b[4])).astype(np.float64)


def structured(n, seed):
    """A smooth log-odds-like set function with main effects and pairwise terms."""
    rng = np.random.default_rng(seed)
    X = np.stack(bits(n), 1).astype(float)
    w, W = rng.normal(size=n) * 2, rng.normal(size=(n, n)) * 0.5
    v = np.log1p(np.exp(X @ w + np.einsum("si,ij,sj->s", X, W, X)))
    return v - v[0]


def reconstruct(i_and, i_or):
    """v + q from interactions, by the explicit sums (no transform code)."""
    n = int(np.log2(len(i_and)))
    out = np.zeros(2 ** n)
    for S in range(2 ** n):
        out[S] = sum(i_and[T] for T in range(2 ** n) if T & S == T)
        out[S] += i_or[0] + sum(i_or[T] for T in range(1, 2 ** n) if T & S)
    return out


def dense_lp_optimum(v, c):
    """Independent oracle: min ‖x‖₁ + ‖y‖₁ s.t. Z x + Z_or y − q = v, |q| ≤ c (dense)."""
    N = len(v)
    n = int(np.log2(N))
    Z = zeta(np.eye(N)).T  # column T = indicator of S ⊇ T
    Zo = or_synthesis(np.eye(N)).T
    I = np.eye(N)
    A = np.hstack([Z, -Z, Zo, -Zo, -I])
    cost = np.r_[np.ones(4 * N), np.zeros(N)]
    bounds = [(0, None)] * (4 * N) + [(-c, c)] * N
    res = linprog(cost, A_eq=sp.csr_matrix(A), b_eq=v, bounds=bounds, method="highs")
    assert res.status == 0
    return res.fun


# ---------------------------------------------------------------------- matching, efficiency
@pytest.mark.parametrize("method", ["lp", "pdhg", "adam", "sgd"])
def test_universal_matching_and_efficiency(method):
    v = structured(5, 0)
    opts = {"iters": 300} if method in ("pdhg", "sgd") else ({"steps": 300} if method == "adam" else {})
    r = sparsify(v, method=method, **opts)
    # AND part + OR part reproduce v(S) + q(S) on every subset, in float64
    assert np.abs(reconstruct(r.i_and, r.i_or) - (v + r.q)).max() <= 1e-9
    assert np.abs(r.q).max() <= r.q_bound + 1e-12
    assert r.q_bound == pytest.approx(0.04 * abs(v[-1] - v[0]))
    # efficiency: all interactions sum to v(N) (+ q(N))
    assert abs(r.i_and.sum() + r.i_or.sum() - (v[-1] + r.q[-1])) <= 1e-9


def test_universal_matching_for_any_gamma_and_q():
    rng = np.random.default_rng(3)
    v, g, q = rng.normal(size=(3, 2 ** 6))
    i_and, i_or = decompose(v, g, q)
    assert np.abs(reconstruct(i_and, i_or) - (v + q)).max() <= 1e-9


# ---------------------------------------------------------------------- closed forms
def test_product_is_one_and_at_N():
    n = 4
    v = np.prod(np.stack(bits(n)), axis=0).astype(float)  # 1 iff every player present
    r = sparsify(v, method="lp", q_bound=0.0)
    assert r.i_and[-1] == pytest.approx(1.0, abs=1e-8)
    others = np.r_[r.i_and[:-1], r.i_or]
    assert np.abs(others).max() <= 1e-8
    assert r.l1 == pytest.approx(1.0, abs=1e-8)


def test_or_of_two_is_one_or():
    n = 4
    b = bits(n)
    v = (b[0] | b[1]).astype(float)
    r = sparsify(v, method="lp", q_bound=0.0)
    assert r.i_or[0b11] == pytest.approx(1.0, abs=1e-8)
    mask = np.ones(2 ** n, bool)
    mask[0b11] = False
    assert np.abs(r.i_or[mask]).max() <= 1e-8 and np.abs(r.i_and).max() <= 1e-8


def test_linear_has_order_at_most_one():
    n = 5
    w = np.array([1.5, -2.0, 0.5, 3.0, -0.7])
    v = (np.stack(bits(n), 1) * w).sum(1)
    high = popcount(n) >= 2
    # the Harsanyi decomposition (γ = q = 0) of a linear function has order ≤ 1 only
    i_and, i_or = decompose(v, np.zeros_like(v), np.zeros_like(v))
    assert np.abs(i_and[high]).max() <= 1e-12 and np.abs(i_or[high]).max() <= 1e-12
    np.testing.assert_allclose(i_and[[1, 2, 4, 8, 16]] + i_or[[1, 2, 4, 8, 16]], w, atol=1e-12)
    # and no decomposition is sparser: the L1 optimum is Σ|w| (ties such as
    # c·AND{i,j} + c·OR{i,j} = c·x_i + c·x_j make the optimal support non-unique)
    r = sparsify(v, method="lp", q_bound=0.0)
    assert r.l1 == pytest.approx(np.abs(w).sum(), abs=1e-8)


def test_planted_function_recovered_exactly_by_lp():
    v = planted(6)
    r = sparsify(v, method="lp", q_bound=0.0)
    expected_and = np.zeros(64)
    expected_and[0b00011] = 3.0
    expected_and[0b10010] = -1.0
    expected_or = np.zeros(64)
    expected_or[0b01100] = 2.0
    np.testing.assert_allclose(r.i_and, expected_and, atol=1e-8)
    np.testing.assert_allclose(r.i_or, expected_or, atol=1e-8)
    assert r.l1 == pytest.approx(6.0, abs=1e-8)
    # with q free the optimum may go lower, never higher
    assert sparsify(v, method="lp").l1 <= 6.0 + 1e-8


def test_dummy_and_symmetry_of_the_decomposition():
    n = 5
    b = bits(n)
    # player 4 is a dummy; players 0 and 1 are symmetric
    v = (2.0 * (b[0] & b[2]) + 2.0 * (b[1] & b[2]) + 1.0 * (b[0] | b[1]) - 0.5 * b[3]).astype(float)
    r = sparsify(v, method="lp", q_bound=0.0)
    dummy = (np.arange(2 ** n) >> 4) & 1 == 1
    assert np.abs(r.i_and[dummy]).max() <= 1e-8 and np.abs(r.i_or[dummy]).max() <= 1e-8
    phi = r.i_and, r.i_or
    from interp_toolkit.interactions.analysis import shapley_from_interactions
    s = shapley_from_interactions(*phi)
    assert abs(s[4]) <= 1e-8
    assert s[0] == pytest.approx(s[1], abs=1e-8)
    # the plain Harsanyi transform (γ = q = 0) also gives zero on every set containing the dummy
    i_and, i_or = decompose(v, np.zeros_like(v), np.zeros_like(v))
    assert np.abs(i_and[dummy]).max() <= 1e-12 and np.abs(i_or[dummy]).max() <= 1e-12
    # and swapping the symmetric players permutes the interactions accordingly
    swap = np.array([(s_ & ~3) | ((s_ & 1) << 1) | ((s_ >> 1) & 1) for s_ in range(2 ** n)])
    np.testing.assert_allclose(i_and[swap], i_and, atol=1e-12)


# ---------------------------------------------------------------------- optimality
@pytest.mark.parametrize("seed", [0, 1])
def test_lp_matches_independent_dense_lp(seed):
    v = structured(5, seed)
    rv = np.random.default_rng(seed).normal(size=32)
    rv -= rv[0]
    for x in (v, rv):
        opt = dense_lp_optimum(x, float(noise_bound(x)))
        assert sparsify(x, method="lp", canonical=False).l1 == pytest.approx(opt, rel=1e-7, abs=1e-7)
        # the canonical tie-break stays within its stated slack of the optimum
        r = sparsify(x, method="lp")
        assert r.info["objective"] == pytest.approx(opt, rel=1e-7, abs=1e-7)
        assert opt - 1e-7 <= r.l1 <= opt * (1 + r.info["tiebreak"]["tol"]) + 1e-7


@pytest.mark.parametrize("n", [6, 8])
def test_adam_within_two_percent_of_lp_on_random_functions(n):
    rng = np.random.default_rng(n)
    V = rng.normal(size=(3, 2 ** n))
    V -= V[:, :1]
    opt = np.array([sparsify(v, method="lp").l1 for v in V])
    adam = np.array([r.l1 for r in sparsify_batch(V, method="adam")])
    assert (adam >= opt - 1e-7).all()
    assert (adam / opt).max() <= 1.02, adam / opt


def test_pdhg_within_two_percent_of_lp():
    rng = np.random.default_rng(7)
    V = np.r_[rng.normal(size=(2, 2 ** 7)), [structured(7, 1)]]
    V -= V[:, :1]
    opt = np.array([sparsify(v, method="lp").l1 for v in V])
    pd = np.array([r.l1 for r in sparsify_batch(V, method="pdhg")])
    assert (pd >= opt - 1e-7).all() and (pd / opt).max() <= 1.02, pd / opt


def test_reference_sgd_is_not_better_than_lp():
    v = structured(5, 2)
    assert sparsify(v, method="sgd", iters=500).l1 >= sparsify(v, method="lp").l1 - 1e-7


# ---------------------------------------------------------------------- joint
def test_joint_identical_models_share_everything():
    v = planted(5)
    j = joint_sparsify(np.stack([v, v]), method="lp")
    np.testing.assert_allclose(j[0].i_and, j[1].i_and, atol=1e-7)
    from interp_toolkit.interactions.analysis import sharing
    assert sharing(j[0], j[1])["overlap"] == pytest.approx(1.0, abs=1e-6)


def test_joint_lp_is_optimal_for_its_loss():
    V = np.stack([structured(5, 0), structured(5, 0) + 0.3 * structured(5, 4)])
    j = joint_sparsify(V, method="lp")
    obj = j[0].info["joint_objective"]  # in normalised units
    c = np.abs(V[:, -1] - V[:, 0])
    np.testing.assert_allclose(j[0].info["scales"], c)
    Vn = V / c[:, None]
    # separate optima with the joint q bound are feasible for the joint problem when their γ
    # differ by at most the two γ̂ bounds; then the joint optimum is at most as large
    sep = [sparsify(v, method="lp", q_bound=0.02 * abs(v[-1] - v[0])) for v in Vn]
    i_and = np.stack([s.i_and for s in sep])
    i_or = np.stack([s.i_or for s in sep])
    hb = np.asarray(j[0].info["gamma_hat_bound"])
    if np.abs(sep[0].gamma - sep[1].gamma).max() <= hb.sum():
        assert obj <= joint_objective(i_and, i_or) * (1 + 1e-6) + 1e-7
    # Adam gets close to it
    ja = joint_sparsify(V, method="adam", steps=1500)
    assert ja[0].info["joint_objective"] <= 1.05 * obj
    for k in range(2):
        assert np.abs(reconstruct(j[k].i_and, j[k].i_or) - (V[k] + j[k].q)).max() <= 1e-9
        assert np.abs(j[k].q).max() <= 0.02 * c[k] + 1e-12


def _shared_set(j):
    from interp_toolkit.interactions.analysis import flat, shared_mask
    f = flat(j[0])
    m = shared_mask(j[0], j[1])
    return set(zip(f["kinds"][m], f["masks"][m].tolist()))


def test_joint_shared_set_does_not_depend_on_a_models_scale():
    V = np.stack([structured(6, 0), structured(6, 0) + 0.5 * structured(6, 3)])
    j = joint_sparsify(V, method="lp")
    V4 = V.copy()
    V4[1] *= 4.0
    j4 = joint_sparsify(V4, method="lp")
    assert _shared_set(j4) == _shared_set(j) and len(_shared_set(j)) > 0
    np.testing.assert_allclose(j4[1].i_and, 4 * j[1].i_and, atol=1e-7 * j4[1].l1)
    np.testing.assert_allclose(j4[0].i_or, j[0].i_or, atol=1e-7 * j[0].l1)
    # without normalisation the larger model pulls the support its way
    raw, raw4 = (joint_sparsify(x, method="lp", normalise=False) for x in (V, V4))
    assert _shared_set(raw) != _shared_set(raw4)


def test_joint_scales_over_a_dataset():
    from interp_toolkit.interactions.joint import joint_scales
    data = [np.array([[0.0, 1.0, 2.0, 3.0], [0.0, 0.0, 0.0, -8.0]]),
            np.array([[1.0, 0.0, 0.0, 0.0], [0.0, 5.0, 5.0, 4.0]])]
    scales, hb = joint_scales(data)
    np.testing.assert_allclose(scales, [(3 + 1) / 2, (8 + 4) / 2])
    np.testing.assert_allclose(hb, [0.5 * abs((3 - 1) / 2) / 2, 0.5 * abs((-8 + 4) / 2) / 6])
    with pytest.raises(ValueError, match="normalise"):
        joint_scales([np.zeros((2, 4))])


def test_bad_inputs():
    with pytest.raises(ValueError, match="2\\^n"):
        sparsify(np.zeros(12))
    with pytest.raises(ValueError, match="NaN"):
        sparsify(np.full(8, np.nan))
    with pytest.raises(ValueError, match="method"):
        sparsify(np.zeros(8), method="magic")


def test_reference_sgd_follows_the_recipe_momentum_and_log_linear_decay():
    """Twin in plain NumPy with dense matrices: momentum 0.9, lr from 1e-2 to 1e-3 log-linearly."""
    from interp_toolkit.interactions.sparsify import reference_sgd
    from interp_toolkit.interactions.transforms import dense_mobius, dense_or_interactions
    n, iters, lr = 3, 40, 1e-2
    v = structured(n, 5)
    qb = 0.04 * abs(v[-1] - v[0])
    M, A = dense_mobius(n), dense_or_interactions(n)
    g, q = np.zeros(2 ** n), np.zeros(2 ** n)
    bg, bq = np.zeros(2 ** n), np.zeros(2 ** n)
    for k in range(iters):
        step = lr * 10.0 ** (-k / (iters - 1))
        sa, so = np.sign(M @ (0.5 * (v + q) + g)), np.sign(A @ (0.5 * (v + q) - g))
        dg, dq = M.T @ sa - A.T @ so, 0.5 * (M.T @ sa + A.T @ so)
        bg, bq = 0.9 * bg + dg, 0.9 * bq + dq
        g, q = g - step * bg, np.clip(q - step * bq, -qb, qb)
    g2, q2, info = reference_sgd(v[None], np.array([qb]), iters=iters, lr=lr)
    np.testing.assert_allclose(g2[0], g, atol=1e-10)
    np.testing.assert_allclose(q2[0], q, atol=1e-10)
    assert info["momentum"] == 0.9 and info["lr_end"] == pytest.approx(lr / 10)
