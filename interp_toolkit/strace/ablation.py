"""Edge sets → engine masks (zero ablation per edge, DESIGN §3).

An attention edge (l, h, t, s) is the pattern entry ``A[h, t, s]`` of layer l (site
``pattern``, post-softmax, not renormalised); a residual-attention edge (l, t) is the skip
path around the attention at position t (``skip_attn``); a residual-MLP edge the skip path
around the MLP (``skip_mlp``); an MLP edge the MLP output at t (``mlp_out``). The
attention keep really reaches the pattern the model uses (the engine multiplies
``hook_pattern``) — the reference code's attention mask never did.

Rows are built from ``keep[row, edge]``; components outside the pruned graph (positions that
cannot reach the output) take ``fill`` (False for trace-only rows, True for inverse rows):
they do not affect the output either way.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from jaxtyping import Bool, Int

from ..engine import MaskSpec
from .graph import ATTN, MLP, RESID_ATTN, RESID_MLP, ComputationGraph

_NODE_SITES = ((RESID_ATTN, "skip_attn"), (MLP, "mlp_out"), (RESID_MLP, "skip_mlp"))


def keep_from_rank(rank: Int[np.ndarray, "edge"], counts: Sequence[int],
                   invert: bool = False) -> Bool[np.ndarray, "row edge"]:
    """``keep[row, edge]``: edge kept in row k iff it is among the first ``counts[k]`` of the
    order (``rank`` = position in the order); inverted for ablate-only-the-stratum rows."""
    keep = rank[None, :] < np.asarray(counts)[:, None]
    return ~keep if invert else keep


def masks_from_keep(graph: ComputationGraph, keep: Bool[np.ndarray, "row edge"],
                    fill: Bool[np.ndarray, "row"] | bool = False,
                    labels: list | None = None, ablate_attention: bool = True) -> MaskSpec:
    """A ``MaskSpec`` with one row per row of ``keep[row, edge]``; ``fill[row]`` is the keep
    value of components outside the graph. Layers/sites that keep everything in every row
    are left out of the spec.

    ``ablate_attention=False`` leaves every attention edge in place — what the stored
    reference code effectively did (its attention mask never reached the attention). It
    exists only to measure what that defect changes; never use it for results."""
    keep = np.asarray(keep, dtype=bool)
    R = keep.shape[0]
    L, H, T = graph.n_layers, graph.n_heads, graph.n_pos
    fill = np.broadcast_to(np.asarray(fill, dtype=bool), (R,))
    t = graph.dst_pos
    spec = MaskSpec(R, labels=labels)
    attn = graph.kind == ATTN
    pattern = np.repeat(fill[:, None, None, None, None], L, axis=1)
    pattern = np.broadcast_to(pattern, (R, L, H, T, T)).copy()
    pattern[:, graph.layer[attn], graph.head[attn], t[attn], graph.src_pos[attn]] = keep[:, attn]
    node_keep = {}
    for kind, site in _NODE_SITES:
        sel = graph.kind == kind
        arr = np.broadcast_to(fill[:, None, None], (R, L, T)).copy()
        arr[:, graph.layer[sel], t[sel]] = keep[:, sel]
        node_keep[site] = arr
    for l in range(L):
        if ablate_attention and not pattern[:, l].all():
            spec.set("pattern", l, torch.from_numpy(np.ascontiguousarray(pattern[:, l])))
        for site, arr in node_keep.items():
            if not arr[:, l].all():
                spec.set(site, l, torch.from_numpy(np.ascontiguousarray(arr[:, l])))
    return spec
