"""Edge importance: the weight of each edge within the edges entering the same node.

Modes (``MODES``):

* ``"l1"`` (default): ‖edge vector‖₁ divided by the sum over the node's incoming edges.
  Attention edges use ‖A[h,t,s]·(v[s,h]W_O[h])‖₁ = A[h,t,s]·‖v[s,h]W_O[h]‖₁ (A ≥ 0): the
  per-(layer, source, head) norms are computed once and multiplied by the pattern, so no
  ``[head, dest, src, d_model]`` tensor is ever built. The linearised post-attention norm
  (Gemma 3) and, in the last layer, the linearised final norm are linear maps whose only
  dependence on the destination position is a scalar ``1/σ[t]``, so the shortcut still holds.
* ``"l2"``: the same with the Euclidean norm.
* ``"random"``: i.i.d. uniform scores (seeded), normalised per node — a control.

Final norm (``final_norm``, ``FINAL_NORM``): ``"all"`` (default) passes every last-layer edge
vector through the linearised final norm (the edges into the last attention node too, since
their sum reaches the output through it); ``"mlp"`` applies it only to the edges into the
last MLP node (residual-MLP and MLP edges), as the reference code does — the last attention
node's incoming edges are then scored as raw vectors.

``edge_vectors`` builds every edge vector explicitly (tests and small models only).
"""

from __future__ import annotations

import numpy as np
import torch
from jaxtyping import Float, Int

from ..adapter import ModelAdapter

MODES = ("l1", "l2", "random")
FINAL_NORM = ("all", "mlp")


def check_final_norm(final_norm: str) -> str:
    if final_norm not in FINAL_NORM:
        raise ValueError(f"final_norm must be one of {FINAL_NORM}, got {final_norm!r}")
    return final_norm


def check_mode(mode: str) -> str:
    if not isinstance(mode, str) or mode.lower() not in MODES:
        raise ValueError(f"unknown importance mode {mode!r}; choose from {MODES}")
    return mode.lower()


def _norm(x: torch.Tensor, p: int) -> torch.Tensor:
    x = x.double()
    return x.abs().sum(-1) if p == 1 else x.pow(2).sum(-1).sqrt()


def _layer_maps(adapter: ModelAdapter, cache, l: int, attn_node: bool = False, final_norm: str = "all"):
    """(post-attention map, final map) for layer l as functions ``f(x, scale)``; identity
    where a model has no such norm / the layer is not the last / (``final_norm="mlp"``) the
    edge enters the attention node (``attn_node``)."""
    last = l == adapter.n_layers - 1 and (final_norm == "all" or not attn_node)

    def post(x, scale):
        if not adapter.has_post_norms:
            return x
        return adapter.linear_norm(x, scale, "ln1_post", l)

    def final(x, scale):
        return adapter.linear_norm(x, scale, "final") if last else x

    return post, final


def _scales(adapter: ModelAdapter, cache, l: int):
    T = cache[adapter.hook_name("resid_pre", l)].shape[1]
    one = torch.ones(T, 1, dtype=adapter.dtype, device=adapter.device)
    fs = cache[adapter.hook_name("final_scale")][0] if l == adapter.n_layers - 1 else one
    ps = cache[adapter.hook_name("ln1_post_scale", l)][0] if adapter.has_post_norms else one
    return ps, fs  # [pos, 1] each


def _head_vectors(adapter: ModelAdapter, cache, l: int) -> torch.Tensor:
    """u[s, h] = v[s, h] W_O[h]  [pos, head, d_model] (K/V heads expanded per query head)."""
    v = adapter.expand_kv(cache[adapter.hook_name("v", l)][0], dim=-2)  # [pos, head, d_head]
    return torch.einsum("shd,hdm->shm", v, adapter.W_O(l))


@torch.no_grad()
def edge_scores(adapter: ModelAdapter, cache, skel: dict, n_pos: int, p: int = 1,
                final_norm: str = "all") -> Float[np.ndarray, "edge"]:
    """Unnormalised ‖edge vector‖_p for every edge of ``skel`` (float64) via the shortcut."""
    final_norm = check_final_norm(final_norm)
    L, H, T = adapter.n_layers, adapter.n_heads, n_pos
    attn = np.zeros((L, H, T, T))
    node = np.zeros((L, 4, T))  # per kind (only the non-attention kinds are filled)
    for l in range(L):
        post, final = _layer_maps(adapter, cache, l)
        _, final_a = _layer_maps(adapter, cache, l, attn_node=True, final_norm=final_norm)
        ps, fs = _scales(adapter, cache, l)
        fs_a = torch.ones_like(fs) if final_norm == "mlp" else fs  # scale of the attention node's edges
        one = torch.ones((), dtype=adapter.dtype, device=adapter.device)
        u = _head_vectors(adapter, cache, l)
        n_sh = _norm(final_a(post(u, one), one), p)  # [src, head] at unit scales
        pattern = cache[adapter.hook_name("pattern", l)][0].double()  # [head, dest, src]
        per_dest = (1.0 / (ps[:, 0] * fs_a[:, 0])).double()  # [dest]
        attn[l] = (pattern * n_sh.T[:, None, :] * per_dest[None, :, None]).cpu().numpy()
        node[l, 0] = _norm(final_a(cache[adapter.hook_name("resid_pre", l)][0], fs), p).cpu().numpy()
        node[l, 2] = _norm(final(cache[adapter.hook_name("resid_mid", l)][0], fs), p).cpu().numpy()
        node[l, 3] = _norm(final(cache[adapter.hook_name("mlp_out", l)][0], fs), p).cpu().numpy()
    kind = skel["kind"].astype(np.int64)
    layer = skel["layer"].astype(np.int64)
    t = skel["dst"] % T
    s = skel["src"] % T
    scores = node[layer, kind, t]
    is_attn = kind == 1
    scores[is_attn] = attn[layer[is_attn], skel["head"][is_attn].astype(np.int64), t[is_attn], s[is_attn]]
    return scores


def normalise_per_node(scores: Float[np.ndarray, "edge"], dst: Int[np.ndarray, "edge"]) -> Float[np.ndarray, "edge"]:
    """Divide each score by the sum over the edges sharing its destination (uniform where a
    node's scores are all zero)."""
    total = np.bincount(dst, weights=scores)
    count = np.bincount(dst)
    denom = total[dst]
    out = np.empty_like(scores, dtype=np.float64)
    ok = denom > 0
    out[ok] = scores[ok] / denom[ok]
    out[~ok] = 1.0 / count[dst[~ok]]
    return out


def edge_weights(adapter: ModelAdapter, cache, skel: dict, n_pos: int, mode: str = "l1",
                 seed: int = 0, final_norm: str = "all") -> Float[np.ndarray, "edge"]:
    """Importance weights (incoming weights of every node sum to 1)."""
    mode = check_mode(mode)
    if mode == "random":
        scores = np.random.default_rng(seed).random(skel["src"].shape[0])
    else:
        scores = edge_scores(adapter, cache, skel, n_pos, p=1 if mode == "l1" else 2, final_norm=final_norm)
    return normalise_per_node(scores, skel["dst"])


@torch.no_grad()
def edge_vectors(adapter: ModelAdapter, cache, skel: dict, n_pos: int,
                 final_norm: str = "all") -> Float[torch.Tensor, "edge d_model"]:
    """Every edge vector explicitly, ``[E, d_model]`` — the brute-force twin of the shortcut
    (memory ∝ E·d_model: small models only)."""
    final_norm = check_final_norm(final_norm)
    T = n_pos
    out = torch.zeros(skel["src"].shape[0], adapter.d_model, dtype=torch.float64)
    t_all = torch.as_tensor(skel["dst"] % T)
    s_all = torch.as_tensor(skel["src"] % T)
    for l in range(adapter.n_layers):
        post, final_m = _layer_maps(adapter, cache, l)
        _, final_a = _layer_maps(adapter, cache, l, attn_node=True, final_norm=final_norm)
        ps, fs = _scales(adapter, cache, l)
        u = _head_vectors(adapter, cache, l)  # [src, head, d]
        pattern = cache[adapter.hook_name("pattern", l)][0]
        in_layer = torch.as_tensor(skel["layer"] == l)
        for kind in range(4):
            final = final_a if kind in (0, 1) else final_m  # into the attention / the MLP node
            sel = torch.nonzero(in_layer & torch.as_tensor(skel["kind"] == kind)).flatten()
            t, s = t_all[sel], s_all[sel]
            if kind == 1:
                h = torch.as_tensor(skel["head"])[sel].long()
                vec = pattern[h, t, s][:, None] * u[s, h]  # [n, d]
                vec = post(vec, ps[t])
            else:
                site = {0: "resid_pre", 2: "resid_mid", 3: "mlp_out"}[kind]
                vec = cache[adapter.hook_name(site, l)][0][t]
            out[sel] = final(vec, fs[t]).double()
    return out
