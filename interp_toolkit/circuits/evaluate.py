"""Circuit selection and faithfulness as the MIB circuit track defines it.

A circuit ``C`` is a set of edges; every edge outside it is ablated (patched to its corrupt-
run value by default; zero or mean ablation as options) through the engine's edge sites.
With ``m`` the task metric averaged over the prompts (logit difference by default)::

    f(C) = (m(C) − m(∅)) / (m(M) − m(∅))

``m(M)``: the full model (every edge kept), ``m(∅)``: every edge ablated (with corrupt-run
patching this is the corrupt run). Circuits of ``SIZES`` (fractions of the edges: 0.1 % …
100 %) are chosen from edge scores by ``top_n`` (largest ``|score|``) or
``greedy_connected`` (grown from the logits: always the best-scoring edge whose receiver
belongs to a node already in the circuit). The areas::

    CPR = ∫ f dx,    CMD = ∫ |1 − f| dx

by the trapezoid rule over the sizes, with ``x`` the fraction of edges on a linear axis from
the smallest size to 1 (``log_x=True``: x = log10 of the fraction, rescaled to [0, 1]).
"""

from __future__ import annotations

import heapq

import numpy as np
import torch
from jaxtyping import Bool, Float
from torch import Tensor

from .graph import CircuitGraph
from .methods import Setting, evaluate_keeps

SIZES = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)
SELECTIONS = ("top_n", "greedy_connected")


def check_sizes(sizes) -> tuple[float, ...]:
    sizes = tuple(float(s) for s in sizes)
    if not sizes:
        raise ValueError("no circuit sizes given")
    bad = [s for s in sizes if not (0 < s <= 1) or np.isnan(s)]
    if bad:
        raise ValueError(f"circuit sizes are fractions of the edges in (0, 1]; got {bad}")
    if list(sizes) != sorted(sizes):
        raise ValueError(f"circuit sizes must be increasing, got {sizes}")
    return sizes


def n_edges_at(size: float, n_edges: int) -> int:
    """Edges in a circuit of ``size`` (fraction): ``max(1, round(size · E))``."""
    return max(1, min(n_edges, int(round(size * n_edges))))


def top_n(scores: np.ndarray, n: int) -> np.ndarray:
    """Boolean edge mask of the ``n`` largest ``|score|`` (ties: lower index first)."""
    order = np.argsort(-np.abs(scores), kind="stable")
    keep = np.zeros(len(scores), dtype=bool)
    keep[order[:n]] = True
    return keep


def greedy_connected(graph: CircuitGraph, scores: np.ndarray, n: int) -> np.ndarray:
    """Grow a circuit of ``n`` edges from the logits, best ``|score|`` first among the edges
    whose receiver belongs to a node in the circuit (a sender joins when one of its edges does)."""
    by_node: dict[int, list[int]] = {}
    for e, node in enumerate(graph.receiver_node_ids):
        by_node.setdefault(int(node), []).append(e)
    keep = np.zeros(graph.n_edges, dtype=bool)
    heap: list[tuple[float, int]] = []
    in_circuit: set[int] = set()

    def open_node(node):
        if node in in_circuit:
            return
        in_circuit.add(node)
        for e in by_node.get(node, []):
            heapq.heappush(heap, (-abs(float(scores[e])), e))

    open_node(-1)  # the logits
    count = 0
    while heap and count < n:
        _, e = heapq.heappop(heap)
        if keep[e]:
            continue
        keep[e] = True
        count += 1
        open_node(int(graph.sender[e]))
    if count < n:  # edges unreachable from the logits: fill by score
        rest = np.flatnonzero(~keep)
        keep[rest[np.argsort(-np.abs(scores[rest]), kind="stable")[:n - count]]] = True
    return keep


def circuits_for(graph: CircuitGraph, scores: np.ndarray, sizes, selection: str = "top_n"
                 ) -> Bool[Tensor, "size edge"]:
    """Edge keeps ``[len(sizes), E]`` of the circuits of each size."""
    sizes = check_sizes(sizes)
    if selection not in SELECTIONS:
        raise ValueError(f"unknown selection {selection!r}; choose from {SELECTIONS}")
    scores = np.asarray(scores, dtype=np.float64)
    if scores.shape != (graph.n_edges,) or not np.isfinite(scores).all():
        raise ValueError(f"scores must be {graph.n_edges} finite numbers, got shape {scores.shape}")
    rows = []
    for s in sizes:
        k = n_edges_at(s, graph.n_edges)
        rows.append(top_n(scores, k) if selection == "top_n" else greedy_connected(graph, scores, k))
    return torch.as_tensor(np.stack(rows))


def faithfulness(st: Setting, keeps: Bool[Tensor, "k edge"]) -> dict:
    """``m`` of the full model, of the empty circuit and of each circuit, and ``f`` per circuit
    (metric averaged over every prompt of the task)."""
    E = st.graph.n_edges
    rows = torch.cat([torch.ones(1, E, dtype=torch.bool), torch.zeros(1, E, dtype=torch.bool),
                      torch.as_tensor(keeps, dtype=torch.bool)])
    total = np.zeros(rows.shape[0])
    for batch in st.task.batches:
        total += evaluate_keeps(st, batch, rows).sum(1)
    m = total / st.task.n_prompts
    full, empty = float(m[0]), float(m[1])
    denom = full - empty
    if abs(denom) < 1e-9:
        raise ValueError("the full model and the empty circuit give the same metric: faithfulness is undefined "
                         "(the corruption does not change the task's output)")
    return {"m_full": full, "m_empty": empty, "m": m[2:].tolist(), "f": ((m[2:] - empty) / denom).tolist()}


def areas(sizes, f, log_x: bool = False) -> tuple[float, float]:
    """``(CPR, CMD)``: trapezoid areas under ``f`` and ``|1 − f|`` over the sizes (x-axis in the
    module docstring)."""
    x = np.asarray(check_sizes(sizes))
    f = np.asarray(f, dtype=np.float64)
    if log_x:
        x = np.log10(x)
        x = (x - x[0]) / (x[-1] - x[0]) if x[-1] > x[0] else np.zeros_like(x)
    return float(np.trapezoid(f, x)), float(np.trapezoid(np.abs(1 - f), x))


def faithfulness_curve(st: Setting, scores: np.ndarray, sizes=SIZES, selection: str = "top_n") -> dict:
    """Circuits at ``sizes`` from ``scores``, their ``f``, CPR and CMD."""
    sizes = check_sizes(sizes)
    res = faithfulness(st, circuits_for(st.graph, scores, sizes, selection))
    res["cpr"], res["cmd"] = areas(sizes, res["f"])
    res["n_edges"] = [n_edges_at(s, st.graph.n_edges) for s in sizes]
    return res


def faithfulness_curves(st: Setting, scores: dict[str, np.ndarray], sizes=SIZES, selection: str = "top_n"
                        ) -> dict[str, dict]:
    """``faithfulness_curve`` of several methods' scores, all circuits in one evaluation (the
    full model and the empty circuit are run once)."""
    sizes = check_sizes(sizes)
    names = list(scores)
    keeps = torch.cat([circuits_for(st.graph, scores[m], sizes, selection) for m in names])
    res = faithfulness(st, keeps)
    out, k = {}, len(sizes)
    for i, m in enumerate(names):
        f = res["f"][i * k:(i + 1) * k]
        cpr, cmd = areas(sizes, f)
        out[m] = {"f": f, "m": res["m"][i * k:(i + 1) * k], "m_full": res["m_full"], "m_empty": res["m_empty"],
                  "cpr": cpr, "cmd": cmd, "n_edges": [n_edges_at(s, st.graph.n_edges) for s in sizes]}
    return out
