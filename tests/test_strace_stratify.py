"""Best-first stratification: nesting, connectivity, exact counts, brute-force twin."""

from __future__ import annotations

import numpy as np
import pytest

from interp_toolkit.strace.graph import ComputationGraph, edge_skeleton
from interp_toolkit.strace.importance import normalise_per_node
from interp_toolkit.strace.stratify import (SIZE_GRID, best_first_order, best_first_order_bruteforce, check_sizes,
                                            random_growth, random_growth_nodes, stratify)


def synthetic_graph(L, H, T, seed=0, ties=False):
    sk = edge_skeleton(L, H, T)
    rng = np.random.default_rng(seed)
    raw = rng.integers(1, 4, sk["src"].shape[0]).astype(float) if ties else rng.random(sk["src"].shape[0])
    w = normalise_per_node(raw, sk["dst"])
    return ComputationGraph(L, H, T, sk["src"], sk["dst"], sk["kind"], sk["layer"], sk["head"], w)


def connected_to_output(g, edges) -> bool:
    """Every edge's destination is the output or the source of another edge in the set."""
    reached = {g.output_node} | set(g.src[edges].tolist())
    return all(int(d) in reached for d in g.dst[edges])


def test_grid_has_26_sizes_plus_full():
    assert len(SIZE_GRID) == 26
    st = stratify(synthetic_graph(2, 2, 4))
    assert len(st) == 27 and st.sizes[-1] == 1.0


@pytest.mark.parametrize("seed", range(3))
def test_strata_nested_connected_exact_counts(seed):
    g = synthetic_graph(3, 3, 9, seed)
    sizes = (0.01, 0.05, 0.1, 0.3, 0.5, 0.77)
    st = stratify(g, sizes)
    assert st.counts == tuple(int(s * g.n_edges) for s in sizes) + (g.n_edges,)
    prev = np.zeros(g.n_edges, dtype=bool)
    for k in range(len(st)):
        m = st.mask(k)
        assert m.sum() == st.counts[k]
        assert np.all(m[prev]), "strata must be nested"
        assert connected_to_output(g, np.flatnonzero(m))
        prev = m
    assert sorted(st.order.tolist()) == list(range(g.n_edges))


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("ties", [False, True])
def test_heap_order_equals_brute_force(seed, ties):
    g = synthetic_graph(2, 2, 4, seed, ties=ties)
    np.testing.assert_array_equal(best_first_order(g), best_first_order_bruteforce(g))
    np.testing.assert_array_equal(best_first_order(g, 17), best_first_order_bruteforce(g, 17))


def test_best_first_takes_the_heaviest_frontier_edge():
    g = synthetic_graph(2, 3, 5, 4)
    order = best_first_order(g)
    reached = {g.output_node}
    taken = np.zeros(g.n_edges, dtype=bool)
    for e in order:
        frontier = np.flatnonzero(~taken & np.isin(g.dst, list(reached)))
        assert g.weight[e] == g.weight[frontier].max()
        taken[e] = True
        reached.add(int(g.src[e]))
    assert taken.all()


@pytest.mark.parametrize("method, grow", [("random", random_growth), ("random_nodes", random_growth_nodes)])
def test_random_growth_is_connected_and_seeded(method, grow):
    g = synthetic_graph(3, 2, 6)
    a = grow(g, seed=3)
    assert len(a) == g.n_edges and len(set(a.tolist())) == g.n_edges
    for n in (1, 5, 40, g.n_edges):
        assert connected_to_output(g, a[:n])
    np.testing.assert_array_equal(a, grow(g, seed=3))
    assert not np.array_equal(a, grow(g, seed=4))
    st = stratify(g, (0.1, 0.5), method=method, seed=3)
    np.testing.assert_array_equal(st.edges(1), a[: int(0.5 * g.n_edges)])


def test_rank_inverts_order():
    st = stratify(synthetic_graph(2, 2, 5), (0.2,))
    assert np.all(st.rank()[st.order] == np.arange(st.n_edges))


@pytest.mark.parametrize("bad", [0, -0.1, 1.5, [0.1, 2.0], float("nan"), [], "x"])
def test_bad_sizes(bad):
    with pytest.raises(ValueError, match="sizes"):
        check_sizes(bad)


def test_caller_size_and_full_appended():
    assert check_sizes(0.25) == (0.25, 1.0)
    assert check_sizes([0.5, 0.1, 0.5, 1.0]) == (0.1, 0.5, 1.0)
    with pytest.raises(ValueError, match="method"):
        stratify(synthetic_graph(1, 1, 2), method="greedy")
