"""Forward hooks of the edge sites (path patching of sender → receiver-input edges).

Every sender's *difference* ``Δ_s = r_s − o_s`` (reference output minus this forward's
output) is written into one buffer ``delta [rows, pos, n_senders, d_model]`` as the forward
reaches it; a receiver input then becomes

    input_r' = input_r + Σ_{s upstream of r} (1 − m_{s→r}) · Δ_s

— one ``einsum`` per receiver hook over the senders written so far. Senders and receivers
are listed in ``engine.masks`` (edge sites). The model must run inside
``ModelAdapter.edge_inputs()`` (the kernel does this when a chunk has edge masks).
"""

from __future__ import annotations

from typing import Callable

import torch
from jaxtyping import Float
from torch import Tensor

from ..adapter import ModelAdapter
from .masks import EDGE_SITES, MaskError, n_senders, upstream_senders

#: names of the receiver-input hooks (they exist only inside ``ModelAdapter.edge_inputs()``)
EDGE_INPUT_HOOKS = ("hook_q_input", "hook_k_input", "hook_v_input", "hook_mlp_in")
_RECEIVER_SITE = {"edge_q": "q_input", "edge_k": "k_input", "edge_v": "v_input", "edge_mlp": "mlp_in"}


def receiver_hook(adapter: ModelAdapter, site: str, layer: int | None) -> str:
    """Hook name of the receiver input of an edge site (logits: the last block's output)."""
    if site == "edge_logits":
        return adapter.hook_name("resid_post", adapter.n_layers - 1)
    return adapter.hook_name(_RECEIVER_SITE[site], layer)


def head_outputs(adapter: ModelAdapter, z: Float[Tensor, "b pos head d_head"], layer: int
                 ) -> Float[Tensor, "b pos head d_model"]:
    """Each head's write to the residual stream, ``z_h W_O[h]`` (``b_O`` belongs to no head)."""
    return torch.einsum("bphe,hem->bphm", z, adapter.W_O(layer).to(z.dtype))


def edge_hooks(adapter: ModelAdapter, entries: dict, ref_for: Callable[[str], Tensor | None],
               n_pos: int) -> list[tuple[str, Callable]]:
    """Hooks applying the edge-site ``entries`` ``{(site, layer): keep[rows, ...]}`` of one
    chunk; ``ref_for(hook)`` gives the chunk's reference value at a hook (None: zero)."""
    if not entries:
        return []
    if adapter.positional not in ("standard", "rotary"):
        raise MaskError(f"edge masks support learned or rotary positions, not {adapter.positional!r}")
    L, H = adapter.n_layers, adapter.n_heads
    S = n_senders(L, H)
    need = max(upstream_senders(H, site, layer, L) for site, layer in entries)
    state: dict[str, Tensor] = {}

    def put(index, diff: Tensor):
        if "delta" not in state:
            state["delta"] = diff.new_zeros(diff.shape[0], diff.shape[1], S, diff.shape[-1])
        d = state["delta"]
        if isinstance(index, slice):
            d[:, :, index] = diff
        else:
            d[:, :, index] += diff  # the embedding sender sums token and position embeddings

    def embed_sender(name):
        def store(x, hook):
            r = ref_for(name)
            put(0, (0 if r is None else r) - x)
            return x
        return store

    def head_sender(layer, name):
        def store(z, hook):
            r = ref_for(name)
            o = head_outputs(adapter, z, layer)
            put(slice(1 + layer * (H + 1), 1 + layer * (H + 1) + H),
                (0 if r is None else head_outputs(adapter, r.to(z.dtype), layer)) - o)
            return z
        return store

    def mlp_sender(layer, name):
        def store(x, hook):
            r = ref_for(name)
            put(slice(1 + layer * (H + 1) + H, 2 + layer * (H + 1) + H), ((0 if r is None else r) - x)[:, :, None])
            return x
        return store

    hooks = []
    embed_names = [adapter.hook_name("embed")] + ([adapter.hook_name("pos_embed")]
                                                  if adapter.positional == "standard" else [])
    hooks += [(n, embed_sender(n)) for n in embed_names]
    for l in range(L):
        base = 1 + l * (H + 1)
        if base < need:
            hooks.append((adapter.hook_name("z", l), head_sender(l, adapter.hook_name("z", l))))
        if base + H < need:
            hooks.append((adapter.hook_name("mlp_out", l), mlp_sender(l, adapter.hook_name("mlp_out", l))))

    def receiver(site, layer, keep):
        n_up = upstream_senders(H, site, layer, L)

        def edit(x, hook):
            w = (1 - keep[..., :n_up].to(x.dtype))
            d = state["delta"][:, :, :n_up].to(x.dtype)
            if site in ("edge_q", "edge_k", "edge_v"):
                return x + torch.einsum("bpsd,bphs->bphd", d, w.expand(x.shape[0], n_pos, H, n_up))
            return x + torch.einsum("bpsd,bps->bpd", d, w.expand(x.shape[0], n_pos, n_up))
        return edit

    for (site, layer), keep in entries.items():
        if site not in EDGE_SITES:
            raise MaskError(f"{site!r} is not an edge site")
        hooks.append((receiver_hook(adapter, site, layer), receiver(site, layer, keep)))
    return hooks
