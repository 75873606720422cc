"""Fast subset transforms against explicit matrices and closed forms."""

import numpy as np
import pytest
import torch

from interp_toolkit.interactions.transforms import (
    complement, dense_mobius, dense_or_interactions, dense_zeta, mask_of, mobius, n_players_of,
    or_interactions, or_synthesis, popcount, subset_of, zeta)


def _dense_mobius_by_definition(n):
    """M[S, T] = (−1)^{|S|−|T|} for T ⊆ S, by enumerating subsets (independent of the code)."""
    N = 2 ** n
    M = np.zeros((N, N))
    for S in range(N):
        for T in range(N):
            if T & S == T:
                M[S, T] = (-1) ** (bin(S).count("1") - bin(T).count("1"))
    return M


@pytest.mark.parametrize("n", [0, 1, 2, 5, 8])
@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_fast_transforms_equal_dense_matrices(n, backend):
    rng = np.random.default_rng(n)
    f = rng.normal(size=(3, 2 ** n))
    x = torch.tensor(f) if backend == "torch" else f
    M = _dense_mobius_by_definition(n)
    np.testing.assert_allclose(np.asarray(mobius(x)), f @ M.T, atol=1e-10)
    np.testing.assert_allclose(np.asarray(zeta(x)), f @ np.linalg.inv(M).T, atol=1e-9)
    np.testing.assert_allclose(np.asarray(or_interactions(x)), f @ dense_or_interactions(n).T, atol=1e-10)
    if n <= 5:
        np.testing.assert_array_equal(dense_mobius(n), M)
        np.testing.assert_array_equal(dense_zeta(n), np.abs(M))


@pytest.mark.parametrize("n", [1, 3, 7])
def test_inverse_pairs(n):
    f = np.random.default_rng(1).normal(size=2 ** n)
    np.testing.assert_allclose(zeta(mobius(f)), f, atol=1e-12)
    np.testing.assert_allclose(or_synthesis(or_interactions(f)), f, atol=1e-12)
    t = torch.tensor(f)
    np.testing.assert_allclose(or_synthesis(or_interactions(t)).numpy(), f, atol=1e-12)


def test_or_synthesis_is_any_of_semantics():
    n = 4
    I = np.zeros(2 ** n)
    I[0b0110] = 2.0  # OR over players {1, 2}
    v = or_synthesis(I)
    for S in range(2 ** n):
        assert v[S] == (2.0 if S & 0b0110 else 0.0)


def test_torch_transform_has_gradients():
    x = torch.randn(2, 2 ** 6, dtype=torch.float64, requires_grad=True)
    torch.autograd.gradcheck(lambda t: mobius(t), (x,))
    torch.autograd.gradcheck(lambda t: or_interactions(t), (x,))


def test_helpers():
    assert n_players_of(1024) == 10
    with pytest.raises(ValueError):
        n_players_of(12)
    assert subset_of(0b1011) == (0, 1, 3) and mask_of([0, 1, 3]) == 0b1011
    np.testing.assert_array_equal(popcount(3), [0, 1, 1, 2, 1, 2, 2, 3])
    np.testing.assert_array_equal(complement(np.arange(4)), [3, 2, 1, 0])
