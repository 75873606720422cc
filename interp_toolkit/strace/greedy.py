"""Exact greedy node selection — the oracle that the norm-based strata approximate.

Nodes are components: every attention head (l, h) and every MLP block l, each kept or
zero-ablated as a whole (all positions); the residual stream is always kept. The objective
is KL(p_full ‖ p_kept) (or TV) of the next-token distribution at the last position.

* ``direction="forward"``: start from no components; at each step try adding every
  remaining candidate — all of them in batched masked forwards — and keep the one that
  lowers the objective most.
* ``direction="backward"``: start from all components; at each step remove the one whose
  removal raises the objective least.

Prefix reuse: a candidate row differs from the current set only at its own layer, so it
goes through ``masked_forward`` with the current set as the ``shared_prefix``: the engine
sorts the rows by the candidate's layer and starts each chunk at its lowest layer, from the
residual of the current set entering it (computed once per step and layer, incrementally).
"""

from __future__ import annotations

import itertools
import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from jaxtyping import Bool, Float, Int

from ..adapter import ModelAdapter, as_adapter
from ..core import Result, register_result
from ..engine import MaskSpec, masked_forward
from ..engine.metrics import kl_divergence
from .graph import ATTN, MLP, build_graph, check_prompt
from .plots import plot_greedy
from .stratify import SIZE_GRID, stratify

OBJECTIVES = ("kl", "tv")


def node_names(n_layers: int, n_heads: int) -> list[str]:
    """``L{l}H{h}`` for heads (index l·H + h), then ``MLP{l}`` (index L·H + l)."""
    return [f"L{l}H{h}" for l in range(n_layers) for h in range(n_heads)] + [f"MLP{l}" for l in range(n_layers)]


def node_layer(n_layers: int, n_heads: int) -> Int[np.ndarray, "node"]:
    return np.concatenate([np.repeat(np.arange(n_layers), n_heads), np.arange(n_layers)])


def node_spec(keep: Bool[np.ndarray, "row node"], n_layers: int, n_heads: int, min_layer: int = 0) -> MaskSpec:
    """``MaskSpec`` from ``keep[row, node]`` (whole heads on ``pattern``, whole MLPs on
    ``mlp_out``); layers below ``min_layer`` are left out (rows start above them)."""
    keep = torch.as_tensor(np.asarray(keep, dtype=bool))
    R = keep.shape[0]
    spec = MaskSpec(R)
    LH = n_layers * n_heads
    for l in range(min_layer, n_layers):
        heads = keep[:, l * n_heads:(l + 1) * n_heads]
        if not bool(heads.all()):
            spec.set("pattern", l, heads[:, :, None, None])
        mlp = keep[:, LH + l]
        if not bool(mlp.all()):
            spec.set("mlp_out", l, mlp[:, None])
    return spec


def _objective(p: torch.Tensor, logits: torch.Tensor, objective: str) -> torch.Tensor:
    q = logits.double().log_softmax(-1)
    if objective == "kl":
        return kl_divergence(p.log(), q)
    return 0.5 * (p - q.exp()).abs().sum(-1)


@torch.no_grad()
def evaluate_node_sets(model, tokens: Int[torch.Tensor, "1 pos"], keep: Bool[np.ndarray, "row node"],
                       p_full: Float[torch.Tensor, "vocab"], objective: str = "kl",
                       max_batch_tokens: int | None = None) -> Float[np.ndarray, "row"]:
    """Objective of every row of ``keep[row, node]``, one batched engine call."""
    adapter = as_adapter(model)
    L, H = adapter.n_layers, adapter.n_heads
    spec = node_spec(keep, L, H)
    if not spec.entries:
        spec = MaskSpec.full(len(keep))
    out = masked_forward(adapter, tokens, spec, output=lambda lg: _objective(p_full, lg, objective),
                         max_batch_tokens=max_batch_tokens, progress=False)
    return out.cpu().numpy()


@torch.no_grad()
def evaluate_candidates(adapter: ModelAdapter, tokens: Int[torch.Tensor, "1 pos"], base: Bool[np.ndarray, "node"],
                        candidates: Int[np.ndarray, "cand"], p_full: Float[torch.Tensor, "vocab"],
                        objective: str = "kl", max_batch_tokens: int | None = None,
                        prefix_reuse: bool = True) -> Float[np.ndarray, "cand"]:
    """Objective when each candidate node's keep is flipped in ``base`` (one row each)."""
    L, H = adapter.n_layers, adapter.n_heads
    keep = np.repeat(base[None], len(candidates), axis=0)
    keep[np.arange(len(candidates)), candidates] = ~base[candidates]
    if not prefix_reuse:
        return evaluate_node_sets(adapter, tokens, keep, p_full, objective, max_batch_tokens)
    spec = node_spec(keep, L, H)
    if not spec.entries:
        spec = MaskSpec.full(len(keep))
    # about 8 chunks (each starts at its lowest layer), but never below ~512 tokens per
    # forward: tiny batches lose more to per-forward overhead than they save in layers
    rows_each = max(math.ceil(len(candidates) / 8), math.ceil(512 / tokens.shape[1]))
    out = masked_forward(adapter, tokens, spec, output=lambda lg: _objective(p_full, lg, objective),
                         max_batch_tokens=max_batch_tokens, shared_prefix=node_spec(base[None], L, H),
                         chunk_rows=rows_each, progress=False)
    return out.cpu().numpy()


@register_result
@dataclass
class GreedyResult(Result):
    """Steps of a greedy selection.

    Attributes:
        direction, objective: as requested.
        nodes: node names (``node_names``).
        order: node indices in the order they were added (forward) / removed (backward).
        values: objective of the kept set after each step; ``values[0]`` is the start
            (no components for forward, all for backward).
        candidates_evaluated: rows evaluated in total.
        seconds: wall time.
        meta: model metadata, prompt, settings.
    """

    direction: str
    objective: str
    nodes: list[str]
    order: list[int]
    values: list[float]
    candidates_evaluated: int = 0
    seconds: float = 0.0
    meta: dict = field(default_factory=dict)

    kind = "strace-greedy"
    format_version = 1
    title = "Greedy node selection"

    def kept(self, step: int) -> np.ndarray:
        """Boolean keep over nodes after ``step`` steps."""
        keep = np.zeros(len(self.nodes), dtype=bool) if self.direction == "forward" else np.ones(len(self.nodes), bool)
        keep[self.order[:step]] = self.direction == "forward"
        return keep

    def value_at_size(self, n_kept: int) -> float:
        """Objective of the greedy set with ``n_kept`` components (NaN if not reached)."""
        step = n_kept if self.direction == "forward" else len(self.nodes) - n_kept
        return self.values[step] if 0 <= step < len(self.values) else math.nan

    def summary(self) -> str:
        steps = len(self.values) - 1
        names = ", ".join(self.nodes[i] for i in self.order[:10]) + (" …" if steps > 10 else "")
        return (f"{self.direction} greedy on {self.objective.upper()}: {steps} steps, "
                f"{self.objective} {self.values[0]:.4g} → {self.values[-1]:.4g}; "
                f"{self.candidates_evaluated} rows in {self.seconds:.1f} s; order: {names}")

    def _plots(self):
        return {"greedy": plot_greedy}


def _prepare(model, prompt, objective):
    adapter = as_adapter(model)
    if objective not in OBJECTIVES:
        raise ValueError(f"unknown objective {objective!r}; choose from {OBJECTIVES}")
    tokens = check_prompt(adapter, prompt)
    with torch.no_grad():
        logits = adapter.forward(tokens)[0, -1]
    return adapter, tokens, logits.double().softmax(-1)


def greedy_nodes(model, prompt, *, direction: str = "forward", objective: str = "kl",
                 max_steps: int | None = None, max_batch_tokens: int | None = None,
                 prefix_reuse: bool = True) -> GreedyResult:
    """Exact greedy selection of heads and MLP blocks (see module docstring).

    Each step evaluates all remaining candidates in batched forwards; ties go to the lower
    node index. ``max_steps`` limits the steps (default: until every node is used)."""
    if direction not in ("forward", "backward"):
        raise ValueError(f"direction must be 'forward' or 'backward', got {direction!r}")
    adapter, tokens, p = _prepare(model, prompt, objective)
    L, H = adapter.n_layers, adapter.n_heads
    names = node_names(L, H)
    n = len(names)
    keep = np.zeros(n, dtype=bool) if direction == "forward" else np.ones(n, dtype=bool)
    t0 = time.perf_counter()
    values = [float(evaluate_node_sets(adapter, tokens, keep[None], p, objective, max_batch_tokens)[0])]
    order: list[int] = []
    evaluated = 1
    steps = n if max_steps is None else min(int(max_steps), n)
    for _ in range(steps):
        candidates = np.flatnonzero(~keep if direction == "forward" else keep)
        vals = evaluate_candidates(adapter, tokens, keep, candidates, p, objective, max_batch_tokens, prefix_reuse)
        evaluated += len(candidates)
        best = int(np.argmin(vals))  # first minimum: lowest node index on ties
        node = int(candidates[best])
        keep[node] = direction == "forward"
        order.append(node)
        values.append(float(vals[best]))
    meta = {**adapter.meta, "prompt": prompt if isinstance(prompt, str) else None, "tokens": tokens[0].tolist(),
            "prefix_reuse": prefix_reuse, "max_batch_tokens": max_batch_tokens}
    return GreedyResult(direction, objective, names, order, values, evaluated, time.perf_counter() - t0, meta)


def exhaustive_best(model, prompt, k: int, *, objective: str = "kl", max_batch_tokens: int | None = None):
    """The best set of exactly ``k`` nodes by exhaustive search (small models only):
    ``(value, node indices)``."""
    adapter, tokens, p = _prepare(model, prompt, objective)
    n = len(node_names(adapter.n_layers, adapter.n_heads))
    combos = list(itertools.combinations(range(n), k))
    if len(combos) > 5000:
        raise ValueError(f"{len(combos)} subsets of size {k}: too many for exhaustive search")
    keep = np.zeros((len(combos), n), dtype=bool)
    for i, c in enumerate(combos):
        keep[i, list(c)] = True
    vals = evaluate_node_sets(adapter, tokens, keep, p, objective, max_batch_tokens)
    best = int(np.argmin(vals))
    return float(vals[best]), list(combos[best])


def strata_node_sets(graph, strata) -> Bool[np.ndarray, "stratum node"]:
    """``keep[stratum, node]``: a head is in a stratum's node set if any of its attention
    edges is; an MLP block if any of its MLP edges is."""
    L, H = graph.n_layers, graph.n_heads
    keep = np.zeros((len(strata), L * H + L), dtype=bool)
    rank = strata.rank()
    for k, c in enumerate(strata.counts):
        inside = rank < c
        a = inside & (graph.kind == ATTN)
        keep[k, graph.layer[a].astype(int) * H + graph.head[a].astype(int)] = True
        m = inside & (graph.kind == MLP)
        keep[k, L * H + graph.layer[m].astype(int)] = True
    return keep


def compare_with_strata(model, prompt, greedy: GreedyResult, *, sizes=None, mode: str = "l1",
                        max_batch_tokens: int | None = None) -> list[dict]:
    """How close the norm-based strata come to the greedy oracle at equal size.

    For each stratum, its node set (``strata_node_sets``) is evaluated like the greedy sets
    (whole components kept, everything else zeroed, residual kept); the row reports the
    stratum's objective next to the greedy set's with as many components (forward greedy:
    only sizes the greedy run reached)."""
    adapter, tokens, p = _prepare(model, prompt, greedy.objective)
    graph = build_graph(adapter, tokens, mode=mode)
    st = stratify(graph, SIZE_GRID if sizes is None else sizes)
    keep = strata_node_sets(graph, st)
    vals = evaluate_node_sets(adapter, tokens, keep, p, greedy.objective, max_batch_tokens)
    rows = []
    for k, s in enumerate(st.sizes):
        n_kept = int(keep[k].sum())
        rows.append({"size": s, "edges": st.counts[k], "components": n_kept, "strata": float(vals[k]),
                     "greedy": greedy.value_at_size(n_kept)})
    return rows
