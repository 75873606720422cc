"""s-Trace's per-position edge weights aggregated onto the circuit graph's component edges.

s-Trace (``strace.graph``) weighs, per prompt, every edge into a residual state
``(slot, pos)`` (slot 0 embeddings, ``2l+1`` after layer l's attention, ``2l+2`` after its
MLP) by its L1 norm, normalised over the node's incoming edges. Node importance flows back
from the output node: ``I(out) = 1``, ``I(u) = Σ_{u→v} w_{uv}·I(v)``. A component edge
``s → r`` is the residual path from the state ``s`` writes into to the state ``r`` reads::

    score(s → r) = Σ_pos  w_s(pos) · R(slot_s → slot_r, pos) · J_r(pos)

- ``w_s(pos)``: the local weight of the sender's write at ``pos`` (a head: its attention
  edges into ``(2l+1, pos)`` summed over sources; an MLP: its edge into ``(2l+2, pos)``;
  the input: 1 at slot 0),
- ``R``: the product of the residual-edge weights from ``slot_s`` up to ``slot_r`` at ``pos``,
- ``J_r(pos)``: importance flowing through the receiver's read of ``(slot_r, pos)`` (a head's
  keys and values: its edges with source ``pos``, ``Σ w·I(dst)``; its queries: its edges with
  destination ``pos``; an MLP: ``w_mlp(pos)·I(2l+2, pos)``; the logits: 1 at the last
  position of the last slot).
"""

from __future__ import annotations

import numpy as np

from ..strace.graph import ATTN, MLP, RESID_ATTN, RESID_MLP, build_graph
from .graph import RECEIVER_KINDS, CircuitGraph


def strace_edge_scores(model, graph: CircuitGraph, tokens) -> np.ndarray:
    """Scores ``[E]`` of one prompt (``tokens [1, pos]``); see the module docstring."""
    g = build_graph(model, tokens, mode="l1")
    L, H, T = graph.n_layers, graph.n_heads, g.n_pos
    n_slots = 2 * L + 1
    w, src, dst, kind, layer, head = g.weight, g.src, g.dst, g.kind, g.layer.astype(int), g.head.astype(int)
    # node importance, from the output node down
    I = np.zeros(n_slots * T)
    I[g.output_node] = 1.0
    dslot = dst // T
    for slot in range(n_slots - 1, 0, -1):
        sel = dslot == slot
        np.add.at(I, src[sel], w[sel] * I[dst[sel]])
    flow = w * I[dst]  # importance through each edge
    sp, dp = src % T, dst % T
    # residual path weights: log P[k, pos] of the edge slot k -> k+1
    logP = np.full((n_slots, T), np.log(1e-300))  # finite: missing (pruned) edges carry ~0
    res = (kind == RESID_ATTN) | (kind == RESID_MLP)
    logP[src[res] // T, sp[res]] = np.log(np.maximum(w[res], 1e-300))
    cum = np.zeros((n_slots + 1, T))
    cum[1:] = np.cumsum(logP, 0)  # cum[k] = Σ_{j<k} logP[j]

    S = graph.n_senders
    wsend = np.zeros((S, T))
    slot_send = np.zeros(S, dtype=int)
    wsend[0] = 1.0
    att = kind == ATTN
    np.add.at(wsend, (1 + layer[att] * (H + 1) + head[att], dp[att]), w[att])
    mlp = kind == MLP
    np.add.at(wsend, (1 + layer[mlp] * (H + 1) + H, dp[mlp]), w[mlp])
    for l in range(L):
        slot_send[1 + l * (H + 1): 1 + l * (H + 1) + H] = 2 * l + 1
        slot_send[1 + l * (H + 1) + H] = 2 * l + 2

    # receiver reads J[receiver, pos] and the slot each reads
    kinds = [RECEIVER_KINDS[k] for k in graph.receiver_kind]
    n_r = graph.n_receivers
    J = np.zeros((n_r, T))
    slot_recv = np.zeros(n_r, dtype=int)
    first = np.searchsorted(graph.receiver, np.arange(n_r))
    rkind = np.asarray([kinds[e] for e in first])
    rl, rh = graph.receiver_layer[first], graph.receiver_head[first]
    head_read = {"src": np.zeros((L, H, T)), "dst": np.zeros((L, H, T))}
    np.add.at(head_read["src"], (layer[att], head[att], sp[att]), flow[att])
    np.add.at(head_read["dst"], (layer[att], head[att], dp[att]), flow[att])
    mlp_read = np.zeros((L, T))
    np.add.at(mlp_read, (layer[mlp], sp[mlp]), flow[mlp])
    for r in range(n_r):
        k, l, h = rkind[r], int(rl[r]), int(rh[r])
        if k in ("q", "k", "v"):
            J[r] = head_read["dst" if k == "q" else "src"][l, h]
            slot_recv[r] = 2 * l
        elif k == "mlp":
            J[r] = mlp_read[l]
            slot_recv[r] = 2 * l + 1
        else:
            J[r, T - 1] = 1.0
            slot_recv[r] = 2 * L
    s, r = graph.sender, graph.receiver
    path = np.exp(cum[slot_recv[r]] - cum[slot_send[s]])  # [E, pos]
    return (wsend[s] * path * J[r]).sum(1)
