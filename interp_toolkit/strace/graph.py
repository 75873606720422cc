"""The per-input computation graph of s-Trace (DESIGN §3), built from one cached forward.

Nodes are residual-stream states per (slot, position): slot 0 holds the embeddings, slot
``2l+1`` the state after layer ``l``'s attention (``resid_mid``), slot ``2l+2`` the state
after its MLP (``resid_post``). A node's id is ``slot * n_pos + pos``. Every edge goes from
slot ``k`` to slot ``k+1``:

    kind        from            to              vector
    resid_attn  (2l, t)         (2l+1, t)       resid_pre[t]              (residual around attention)
    attn        (2l, s), s<=t   (2l+1, t)       A[h,t,s] · v[s,h] W_O[h]  (one edge per head h)
    resid_mlp   (2l+1, t)       (2l+2, t)       resid_mid[t]              (residual around the MLP)
    mlp         (2l+1, t)       (2l+2, t)       mlp_out[t]

``b_O`` is left out of the attention edges. Models with a norm after the attention / MLP
(Gemma 3: ``ln1_post``, ``ln2_post``) add ``norm(Σ_h,s heads + b_O)`` to the residual; the
head vectors are passed through that norm *linearised* at the scale of the cached forward
(``w ⊙ x / σ[t]``), so the edge vectors into a node still sum to what the node receives
(``mlp_out`` is already post-normed). In the last layer every edge vector is also passed
through the final norm linearised the same way (fixed ``1/σ`` of the last position, times
the gain). Nodes that cannot reach the output node (last slot, last position) are pruned
together with their edges: only the last position survives in the last layer.

Edges are stored as flat numpy arrays sorted by destination node (then kind, head, source
position); no per-edge Python objects. ``importance`` fills ``weight`` (incoming weights of
every node sum to 1).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from ..adapter import ModelAdapter, as_adapter
from .importance import edge_weights

EDGE_KINDS = ("resid_attn", "attn", "resid_mlp", "mlp")
RESID_ATTN, ATTN, RESID_MLP, MLP = range(4)
#: coarse edge types used for composition
EDGE_TYPES = ("attention", "mlp", "residual")
_KIND_TO_TYPE = np.array([2, 0, 2, 1], dtype=np.int8)


def expected_counts(n_layers: int, n_heads: int, n_pos: int) -> tuple[int, int]:
    """Closed-form ``(n_edges, n_nodes)`` of the pruned graph (DESIGN §3); with grouped-query
    attention ``n_heads`` counts query heads."""
    L, H, T = n_layers, n_heads, n_pos
    edges = L * (H * T * (T + 1) // 2 + 3 * T) - 2 * (T - 1) - (H * T * (T - 1) // 2 + (T - 1))
    nodes = T + 2 * L * T - 2 * (T - 1)
    return edges, nodes


@dataclass
class ComputationGraph:
    """Edge arrays of one input's computation graph (see module docstring).

    Attributes:
        n_layers, n_heads, n_pos: model and prompt sizes (query heads).
        src, dst: node ids ``slot * n_pos + pos`` [E].
        kind: index into ``EDGE_KINDS`` [E].
        layer: the edge's layer [E].
        head: query head for attention edges, -1 otherwise [E].
        weight: importance; incoming weights of each node sum to 1 [E].
        mode: importance mode that produced ``weight``.
        logits: the model's next-token logits at the last position (float64) [vocab].
        tokens: the prompt's token ids.
    """

    n_layers: int
    n_heads: int
    n_pos: int
    src: np.ndarray
    dst: np.ndarray
    kind: np.ndarray
    layer: np.ndarray
    head: np.ndarray
    weight: np.ndarray
    mode: str = "l1"
    logits: np.ndarray | None = None
    tokens: list[int] = field(default_factory=list)
    final_norm: str = "all"

    # ------------------------------------------------------------------ sizes
    @property
    def n_edges(self) -> int:
        return int(self.src.shape[0])

    @property
    def n_slots(self) -> int:
        return 2 * self.n_layers + 1

    @property
    def output_node(self) -> int:
        return (self.n_slots - 1) * self.n_pos + self.n_pos - 1

    @property
    def nodes(self) -> np.ndarray:
        """Ids of the nodes that remain after pruning (sorted)."""
        return np.union1d(np.unique(self.src), [self.output_node])

    @property
    def n_nodes(self) -> int:
        return int(self.nodes.shape[0])

    def slot(self, node_ids) -> np.ndarray:
        return np.asarray(node_ids) // self.n_pos

    def pos(self, node_ids) -> np.ndarray:
        return np.asarray(node_ids) % self.n_pos

    @property
    def src_pos(self) -> np.ndarray:
        return self.src % self.n_pos

    @property
    def dst_pos(self) -> np.ndarray:
        return self.dst % self.n_pos

    @property
    def edge_type(self) -> np.ndarray:
        """0 attention, 1 MLP, 2 residual (``EDGE_TYPES``)."""
        return _KIND_TO_TYPE[self.kind]

    def depth_quartile(self) -> np.ndarray:
        """Quartile of the edge's layer: 0 for the first quarter of the layers … 3 for the last."""
        return np.minimum(3, (self.layer.astype(np.int64) * 4) // self.n_layers)

    def incoming_sums(self) -> np.ndarray:
        """Sum of incoming weights per destination node id (length n_slots·n_pos)."""
        return np.bincount(self.dst, weights=self.weight, minlength=self.n_slots * self.n_pos)

    def __repr__(self) -> str:
        return (f"ComputationGraph(layers={self.n_layers}, heads={self.n_heads}, pos={self.n_pos}, "
                f"edges={self.n_edges}, nodes={self.n_nodes}, mode={self.mode!r})")


def edge_skeleton(n_layers: int, n_heads: int, n_pos: int) -> dict[str, np.ndarray]:
    """Edge arrays (src, dst, kind, layer, head, and for attention the (dest, src) positions)
    of the pruned graph, sorted by (dst, kind, head, src)."""
    L, H, T = n_layers, n_heads, n_pos
    t_idx, s_idx = np.tril_indices(T)  # s <= t, ordered by t then s
    n_tri = t_idx.shape[0]
    pos = np.arange(T)
    parts = []
    for l in range(L):
        a_in, a_out, m_out = 2 * l, 2 * l + 1, 2 * l + 2
        # attention edges: per (t, h, s)
        hh = np.repeat(np.arange(H), n_tri)
        tt = np.tile(t_idx, H)
        ss = np.tile(s_idx, H)
        parts.append(dict(src=a_in * T + ss, dst=a_out * T + tt, kind=np.full(H * n_tri, ATTN),
                          layer=np.full(H * n_tri, l), head=hh))
        for kind, s_slot, d_slot in ((RESID_ATTN, a_in, a_out), (RESID_MLP, a_out, m_out), (MLP, a_out, m_out)):
            parts.append(dict(src=s_slot * T + pos, dst=d_slot * T + pos, kind=np.full(T, kind),
                              layer=np.full(T, l), head=np.full(T, -1)))
    arrays = {k: np.concatenate([p[k] for p in parts]).astype(np.int64) for k in parts[0]}
    # prune: keep edges whose destination reaches the output (walk slots downwards)
    out = (2 * L) * T + T - 1
    reach = np.zeros((2 * L + 1) * T, dtype=bool)
    reach[out] = True
    slot_of_dst = arrays["dst"] // T
    for slot in range(2 * L, 0, -1):
        sel = (slot_of_dst == slot) & reach[arrays["dst"]]
        reach[arrays["src"][sel]] = True
    keep = reach[arrays["dst"]]
    arrays = {k: v[keep] for k, v in arrays.items()}
    order = np.lexsort((arrays["src"], arrays["head"], arrays["kind"], arrays["dst"]))
    arrays = {k: v[order] for k, v in arrays.items()}
    arrays["kind"] = arrays["kind"].astype(np.int8)
    arrays["layer"] = arrays["layer"].astype(np.int16)
    arrays["head"] = arrays["head"].astype(np.int16)
    return arrays


def cache_names(adapter: ModelAdapter) -> list[str]:
    """Hook names the graph needs from the cached forward."""
    names = [adapter.hook_name("final_scale")]
    for l in range(adapter.n_layers):
        names += [adapter.hook_name(s, l) for s in ("resid_pre", "resid_mid", "mlp_out", "pattern", "v")]
        if adapter.has_post_norms:
            names.append(adapter.hook_name("ln1_post_scale", l))
    return names


def check_prompt(adapter: ModelAdapter, prompt) -> torch.Tensor:
    """Tokens ``[1, pos]`` of ``prompt``, with clear errors for prompts s-Trace cannot trace."""
    if isinstance(prompt, str) and not prompt.strip():
        raise ValueError("empty prompt")
    tokens = adapter.as_tokens(prompt)  # raises for prompts longer than the context
    if tokens.shape[0] != 1:
        raise ValueError(f"trace one prompt at a time (got a batch of {tokens.shape[0]})")
    if tokens.shape[1] < 2:
        raise ValueError(
            "s-Trace needs a prompt of at least 2 tokens (a single token has no attention "
            f"between positions to trace); got {tokens.shape[1]}"
        )
    return tokens


@torch.no_grad()
def run_cached(model, prompt):
    """One forward with the cache the graph needs: ``(adapter, tokens, logits_last, cache)``."""
    adapter = as_adapter(model)
    tokens = check_prompt(adapter, prompt)
    _, cache = adapter.run_with_cache(tokens, names=cache_names(adapter), return_type=None)
    # only the last position is unembedded (a 262k vocabulary makes the rest costly)
    last = adapter.n_layers - 1
    resid = cache[adapter.hook_name("resid_mid", last)][:, -1] + cache[adapter.hook_name("mlp_out", last)][:, -1]
    logits = adapter.logits_from_resid(resid)[0]
    return adapter, tokens, logits.double().cpu().numpy(), cache


def build_graph(model, prompt, mode: str = "l1", seed: int = 0, final_norm: str = "all") -> ComputationGraph:
    """Graph of ``prompt`` with edge importance ``mode`` (``"l1"``, ``"l2"``, ``"random"``);
    ``final_norm``: which last-layer edges are scored through the linearised final norm
    (``"all"``, or ``"mlp"`` = only the edges into the last MLP node, as the reference)."""
    adapter, tokens, logits, cache = run_cached(model, prompt)
    skel = edge_skeleton(adapter.n_layers, adapter.n_heads, tokens.shape[1])
    weight = edge_weights(adapter, cache, skel, tokens.shape[1], mode=mode, seed=seed, final_norm=final_norm)
    return ComputationGraph(adapter.n_layers, adapter.n_heads, tokens.shape[1], skel["src"], skel["dst"],
                            skel["kind"], skel["layer"], skel["head"], weight, mode, logits,
                            tokens[0].tolist(), final_norm)
