"""Best-first stratification: nested subgraphs grown from the output node (DESIGN §3).

Starting from the output node, keep a max-heap of the incoming edges of every node reached
so far, keyed by weight (ties: lower edge index first). Pop the best edge and add it; if its
source node is new, its incoming edges join the heap. Stratum ``k`` is the first
``int(s_k · E)`` edges of this order, so strata are nested and every stratum is connected to
the output. Here each reached node keeps a pointer into its incoming edges sorted by key and
only that node's best remaining edge sits in the heap — the same order as pushing every edge,
with a heap the size of the frontier.

Two "random connected subgraph" controls grow from the output with as many edges:
``random_growth_nodes`` (method ``"random_nodes"``, the reference's control) picks a reached
node uniformly among those with incoming edges left and adds one of them — its residual and
MLP edges first (in random order), then its attention edges (in random order);
``random_growth`` (method ``"random"``, stricter) takes an edge uniformly among all frontier
edges.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass

import numpy as np
from jaxtyping import Int

from .graph import ATTN, ComputationGraph

#: stratification methods
METHODS = ("best_first", "random", "random_nodes")

#: the 26-size grid of the reference (the full graph, s = 1, is added as a 27th stratum)
SIZE_GRID: tuple[float, ...] = (
    1e-5, 2e-5, 4e-5, 8e-5, 1e-4, 2e-4, 4e-4, 8e-4, 1e-3, 1.2e-3, 1.4e-3, 2e-3, 3e-3, 4e-3,
    6e-3, 8e-3, 1e-2, 2e-2, 4e-2, 6e-2, 8e-2, 0.1, 0.2, 0.4, 0.6, 0.8,
)


def check_sizes(sizes) -> tuple[float, ...]:
    """Sorted unique sizes in (0, 1], with the full graph (1.0) appended if absent."""
    try:
        sizes = [float(s) for s in np.atleast_1d(np.asarray(sizes, dtype=float))]
    except (TypeError, ValueError) as exc:
        raise ValueError(f"sizes must be numbers in (0, 1], got {sizes!r}") from exc
    if not sizes:
        raise ValueError("sizes is empty")
    bad = [s for s in sizes if not (0.0 < s <= 1.0) or np.isnan(s)]
    if bad:
        raise ValueError(f"sizes must lie in (0, 1] (fractions of the graph's edges); got {bad}")
    sizes = sorted(set(sizes))
    if sizes[-1] != 1.0:
        sizes.append(1.0)
    return tuple(sizes)


def edge_count(size: float, n_edges: int) -> int:
    """Edges in the stratum of size ``size``: ``int(size · E)`` (the full graph for size 1)."""
    return n_edges if size >= 1.0 else int(size * n_edges)


@dataclass
class Strata:
    """Nested strata as prefixes of one edge order.

    Attributes:
        sizes: stratum sizes (fractions of E), increasing, last is 1.0.
        counts: edges per stratum, ``int(s · E)``.
        order: edge indices in the order they were added (at least ``counts[-1]`` long…
            for the full graph the rest of the edges follow in index order).
        n_edges: E.
    """

    sizes: tuple[float, ...]
    counts: tuple[int, ...]
    order: np.ndarray
    n_edges: int

    def rank(self) -> np.ndarray:
        """Position of every edge in ``order`` ([E], int64)."""
        r = np.empty(self.n_edges, dtype=np.int64)
        r[self.order] = np.arange(self.n_edges)
        return r

    def edges(self, k: int) -> np.ndarray:
        """Edge indices of stratum ``k``."""
        return self.order[: self.counts[k]]

    def mask(self, k: int) -> np.ndarray:
        m = np.zeros(self.n_edges, dtype=bool)
        m[self.edges(k)] = True
        return m

    def __len__(self) -> int:
        return len(self.sizes)


def _complete(order: list[int], n_edges: int) -> np.ndarray:
    """Append the edges not in ``order`` (index order) so that order is a permutation."""
    order = np.asarray(order, dtype=np.int64)
    seen = np.zeros(n_edges, dtype=bool)
    seen[order] = True
    return np.concatenate([order, np.flatnonzero(~seen)])


def _incoming(graph: ComputationGraph):
    """CSR of incoming edges per node, each node's edges sorted by (−weight, index)."""
    idx = np.lexsort((np.arange(graph.n_edges), -graph.weight, graph.dst))
    n_nodes = graph.n_slots * graph.n_pos
    indptr = np.zeros(n_nodes + 1, dtype=np.int64)
    np.cumsum(np.bincount(graph.dst, minlength=n_nodes), out=indptr[1:])
    return idx, indptr


def best_first_order(graph: ComputationGraph, n_max: int | None = None) -> Int[np.ndarray, "n"]:
    """Edge indices in best-first order (the first ``n_max`` edges; all by default)."""
    n_max = graph.n_edges if n_max is None else min(int(n_max), graph.n_edges)
    idx, indptr = _incoming(graph)
    weight, src = graph.weight, graph.src
    ptr = indptr[:-1].copy()
    end = indptr[1:]
    reached = np.zeros(graph.n_slots * graph.n_pos, dtype=bool)
    heap: list[tuple[float, int, int]] = []

    def open_node(node: int):
        reached[node] = True
        if ptr[node] < end[node]:
            e = int(idx[ptr[node]])
            heapq.heappush(heap, (-float(weight[e]), e, node))

    open_node(graph.output_node)
    order: list[int] = []
    while heap and len(order) < n_max:
        _, e, node = heapq.heappop(heap)
        order.append(e)
        ptr[node] += 1
        if ptr[node] < end[node]:
            nxt = int(idx[ptr[node]])
            heapq.heappush(heap, (-float(weight[nxt]), nxt, node))
        s = int(src[e])
        if not reached[s]:
            open_node(s)
    return np.asarray(order, dtype=np.int64)


def random_growth(graph: ComputationGraph, n_max: int | None = None, seed: int = 0) -> Int[np.ndarray, "n"]:
    """A random connected growth from the output: each step adds an edge drawn uniformly from
    the frontier (edges entering reached nodes, not yet added)."""
    n_max = graph.n_edges if n_max is None else min(int(n_max), graph.n_edges)
    rng = np.random.default_rng(seed)
    idx, indptr = _incoming(graph)
    reached = np.zeros(graph.n_slots * graph.n_pos, dtype=bool)
    frontier: list[int] = []

    def open_node(node: int):
        reached[node] = True
        frontier.extend(idx[indptr[node]:indptr[node + 1]].tolist())

    open_node(graph.output_node)
    order: list[int] = []
    draws = rng.random(n_max)
    while frontier and len(order) < n_max:
        i = int(draws[len(order)] * len(frontier))
        frontier[i], frontier[-1] = frontier[-1], frontier[i]
        e = frontier.pop()
        order.append(e)
        s = int(graph.src[e])
        if not reached[s]:
            open_node(s)
    return np.asarray(order, dtype=np.int64)


def random_growth_nodes(graph: ComputationGraph, n_max: int | None = None, seed: int = 0) -> np.ndarray:
    """The reference's random connected growth: each step draws a node uniformly among the
    reached nodes that still have incoming edges, and adds its next edge — residual and MLP
    edges first, then attention edges (each group in a random order fixed when the node is
    reached)."""
    n_max = graph.n_edges if n_max is None else min(int(n_max), graph.n_edges)
    rng = np.random.default_rng(seed)
    idx, indptr = _incoming(graph)
    reached = np.zeros(graph.n_slots * graph.n_pos, dtype=bool)
    queues: dict[int, list[int]] = {}
    active: list[int] = []

    def open_node(node: int):
        reached[node] = True
        edges = idx[indptr[node]:indptr[node + 1]]
        if len(edges):
            is_attn = graph.kind[edges] == ATTN
            # popped from the end: attention edges first in the list, residual/MLP at the end
            queues[node] = rng.permutation(edges[is_attn]).tolist() + rng.permutation(edges[~is_attn]).tolist()
            active.append(node)

    open_node(graph.output_node)
    order: list[int] = []
    while active and len(order) < n_max:
        i = int(rng.integers(len(active)))
        node = active[i]
        e = queues[node].pop()
        if not queues[node]:
            active[i] = active[-1]
            active.pop()
        order.append(e)
        s = int(graph.src[e])
        if not reached[s]:
            open_node(s)
    return np.asarray(order, dtype=np.int64)


def stratify(graph: ComputationGraph, sizes=SIZE_GRID, *, method: str = "best_first",
             seed: int = 0) -> Strata:
    """Nested strata of ``graph`` at ``sizes`` (the full graph is always the last stratum).

    ``method``: ``"best_first"`` (by importance), ``"random_nodes"`` (the reference's random
    connected growth) or ``"random"`` (edge-uniform random connected growth).
    """
    sizes = check_sizes(sizes)
    counts = tuple(edge_count(s, graph.n_edges) for s in sizes)
    n_max = max([c for s, c in zip(sizes, counts) if s < 1.0], default=0)
    if method == "best_first":
        order = best_first_order(graph, n_max)
    elif method == "random":
        order = random_growth(graph, n_max, seed=seed)
    elif method == "random_nodes":
        order = random_growth_nodes(graph, n_max, seed=seed)
    else:
        raise ValueError(f"unknown stratification method {method!r}; use one of {METHODS}")
    return Strata(sizes, counts, _complete(order, graph.n_edges), graph.n_edges)


def best_first_order_bruteforce(graph: ComputationGraph, n_max: int | None = None) -> Int[np.ndarray, "n"]:
    """Quadratic twin of ``best_first_order``: at every step scan all edges that enter a reached
    node and are not yet taken; take the heaviest (lowest index on ties)."""
    n_max = graph.n_edges if n_max is None else n_max
    reached = {graph.output_node}
    taken = np.zeros(graph.n_edges, dtype=bool)
    order = []
    while len(order) < n_max:
        best = None
        for e in range(graph.n_edges):
            if taken[e] or int(graph.dst[e]) not in reached:
                continue
            if best is None or graph.weight[e] > graph.weight[best]:
                best = e
        if best is None:
            break
        taken[best] = True
        order.append(best)
        reached.add(int(graph.src[best]))
    return np.asarray(order, dtype=np.int64)
