"""A leaner key/value-cache forward for HookedTransformer's attention, gated MLP and unembedding.

HookedTransformer's cached forward (``past_kv_cache``) redoes, on every call, work whose
result does not change between calls of one run:

- the gated MLP re-lays ``W_gate``, ``W_in``, ``W_out`` as contiguous transposes
  (three ``[d_model, d_mlp]`` copies per layer and forward);
- attention re-lays ``W_O`` as ``[d_model, head·d_head]``, and the unembedding ``W_U`` as
  ``[d_vocab, d_model]`` (inside the block: read in place, ``x @ W_U + b_U``);
- the cache stores keys *before* rotary, so every forward rotates all cached keys again;
- grouped-query attention expands the cached keys and values from ``kv_head`` to ``head``
  with ``repeat_interleave`` before both products.

Inside ``LeanCachedForward(model)`` a cached forward instead uses weight layouts made once
for the whole block of calls, keeps keys in the cache *after* rotary (each key is rotated once,
at its own position: the values are the ones TransformerLens computes, bit for bit), and
multiplies grouped queries against the ``kv_head`` keys directly: with ``g = head / kv_head``,
query head ``h`` reads key/value head ``⌊h / g⌋`` (``repeat_interleave``'s order), so
``q [b, head, n, d]`` is viewed as ``[b, kv_head, g·n, d]`` and

    scores[b, h, i, j] = q[b, h, i] · k[b, j, ⌊h/g⌋] / attn_scale,
    z[b, i, h] = Σ_j pattern[b, h, i, j] · v[b, j, ⌊h/g⌋].

Every hook point runs with the shape and value it has in TransformerLens's forward
(``hook_q/k/v`` on the new positions; ``hook_rot_q`` on the new positions, ``hook_rot_k``
on all cached and new keys; ``hook_attn_scores``, ``hook_pattern``, ``hook_z``; the MLP's
``hook_pre``, ``hook_pre_linear``, ``hook_post``; the unembedding's ``hook_in``,
``hook_out``). Every forward inside the block uses the MLP and unembedding layouts;
attention forwards without a cache or with an attention mask, and configurations this
forward does not cover (see ``unsupported``), run TransformerLens's own code.

A cache made by ``kv_cache`` inside the block holds rotated keys (``KEYS_ROTATED`` is set on
each entry) and must be continued inside such a block; the attention refuses a rotated cache
outside it rather than rotating its keys twice.
"""

from __future__ import annotations

import types

import torch
import torch.nn.functional as F
from torch import Tensor

KEYS_ROTATED = "_interp_toolkit_keys_rotated"
_OLMO = ("OlmoeForCausalLM", "Olmo2ForCausalLM", "Olmo3ForCausalLM")


def unsupported(model) -> str | None:
    """Why this model's blocks cannot take the lean cached forward (``None``: they can)."""
    try:
        from transformer_lens.components import Attention, GroupedQueryAttention
        from transformer_lens.components.mlps.gated_mlp import GatedMLP
    except ImportError:
        return "this TransformerLens has no HookedTransformer components"
    cfg = getattr(model, "cfg", None)
    blocks = getattr(model, "blocks", None)
    if cfg is None or blocks is None:
        return "not a HookedTransformer"
    checks = {
        "positional embedding": cfg.positional_embedding_type not in ("rotary", "standard"),
        "log-n attention scaling": getattr(cfg, "use_logn_attn", False),
        "attention sinks": getattr(cfg, "use_attention_sinks", False),
        "clipped q/k/v": getattr(cfg, "clip_qkv", None) is not None,
        "OLMo q/k norm": cfg.original_architecture in _OLMO,
        "4-bit weights": getattr(cfg, "load_in_4bit", False),
        "per-head attention results (use_attn_result)": cfg.use_attn_result,
        "dynamic NTK rotary": getattr(cfg, "use_dynamic_ntk_rope", False),
        "non-causal attention": cfg.attention_dir != "causal",
    }
    for what, bad in checks.items():
        if bad:
            return f"{what} is not covered"
    for block in blocks:
        if type(block.attn) not in (Attention, GroupedQueryAttention):
            return f"attention class {type(block.attn).__name__} is not covered"
        if getattr(block.attn, "_attention_dir_override", None) not in (None, "causal"):
            return "non-causal attention override"
        mlp = getattr(block, "mlp", None)
        if mlp is not None and type(mlp) is GatedMLP and cfg.is_layer_norm_activation():
            return "gated MLP with a layer-norm activation is not covered"
    return None


class LeanCachedForward:
    """Context manager: inside it, cached forwards of ``model`` take the lean path.

    Weight layouts are made on entry (one copy of ``W_gate``, ``W_in``, ``W_out``, ``W_O`` per
    layer, freed on exit) and the blocks' ``forward`` methods are restored on exit. Weights
    must not change inside the block, and no gradient reaches them through it (the layouts are
    detached copies; the engine runs its cached forwards without gradients). Nesting is
    allowed (the inner block does nothing)."""

    def __init__(self, model):
        self.model = model
        self.reason = unsupported(model)
        self._patched: list[torch.nn.Module] = []
        self._owner = False

    @property
    def active(self) -> bool:
        return self.reason is None

    def __enter__(self) -> "LeanCachedForward":
        if self.reason is not None or getattr(self.model, "_interp_toolkit_lean", False):
            return self
        from transformer_lens.components.mlps.gated_mlp import GatedMLP

        with torch.no_grad():
            for block in self.model.blocks:
                attn = block.attn
                attn._lean_w_o = attn.W_O.detach().permute(2, 0, 1).reshape(attn.W_O.shape[2], -1).contiguous()
                attn.forward = types.MethodType(_lean_attention, attn)
                self._patched.append(attn)
                mlp = getattr(block, "mlp", None)
                if mlp is not None and type(mlp) is GatedMLP:
                    mlp._lean_w = (mlp.W_gate.detach().T.contiguous(), mlp.W_in.detach().T.contiguous(),
                                   mlp.W_out.detach().T.contiguous())
                    mlp.forward = types.MethodType(_lean_gated_mlp, mlp)
                    self._patched.append(mlp)
            unembed = getattr(self.model, "unembed", None)
            if unembed is not None and type(unembed).__name__ == "Unembed":
                unembed.forward = types.MethodType(_lean_unembed, unembed)
                self._patched.append(unembed)
        self.model._interp_toolkit_lean = True
        self._owner = True
        return self

    def __exit__(self, *exc) -> None:
        if not self._owner:
            return
        for module in self._patched:
            del module.forward  # the class's forward again
            for name in ("_lean_w_o", "_lean_w"):
                if name in module.__dict__:
                    delattr(module, name)
        self.model._interp_toolkit_lean = False
        self._patched, self._owner = [], False


def lean_active(model) -> bool:
    """Is ``model`` inside a ``LeanCachedForward`` block (caches made now hold rotated keys)?"""
    return bool(getattr(model, "_interp_toolkit_lean", False))


def _lean_gated_mlp(self, x: Tensor) -> Tensor:
    """GatedMLP.forward with the transposed weights made once (same products, same hooks)."""
    w_gate, w_in, w_out = self._lean_w
    if w_gate.device != x.device:
        x = x.to(w_gate.device)
    pre_act = self.hook_pre(F.linear(x, w_gate))
    pre_linear = self.hook_pre_linear(F.linear(x, w_in))
    post_act = self.hook_post(self.act_fn(pre_act) * pre_linear + self.b_in)
    return F.linear(post_act, w_out, self.b_out)


def _lean_unembed(self, residual: Tensor) -> Tensor:
    """Unembed.forward as ``x @ W_U + b_U`` on the stored layout (TransformerLens copies
    ``W_U`` into a contiguous transpose, ``d_model × d_vocab`` values, on every call)."""
    return self.hook_out(torch.addmm(self.b_U, self.hook_in(residual).reshape(-1, self.W_U.shape[0]),
                                     self.W_U).reshape(*residual.shape[:-1], -1))


def _lean_attention(self, query_input, key_input, value_input, past_kv_cache_entry=None,
                    additive_attention_mask=None, attention_mask=None, position_bias=None):
    """Attention with a key/value cache that holds rotated keys (see the module docstring)."""
    entry = past_kv_cache_entry
    cls_forward = type(self).forward
    if entry is None or not getattr(entry, KEYS_ROTATED, False):
        if entry is not None and entry.past_keys.shape[1] and self.cfg.positional_embedding_type == "rotary":
            raise RuntimeError("a key/value cache made outside the lean cached forward holds keys before "
                               "rotary; continue it outside the LeanCachedForward block")
        return cls_forward(self, query_input, key_input, value_input, past_kv_cache_entry=entry,
                           additive_attention_mask=additive_attention_mask, attention_mask=attention_mask,
                           position_bias=position_bias)
    if attention_mask is not None or additive_attention_mask is not None or position_bias is not None:
        raise RuntimeError("the lean cached forward takes no attention mask or position bias")
    from transformer_lens.utilities.activation_functions import apply_softcap

    q, k, v = self.calculate_qkv_matrices(query_input, key_input, value_input)
    offset = entry.past_keys.shape[1]
    rotary = self.cfg.positional_embedding_type == "rotary"
    if rotary:
        q = self.hook_rot_q(self.apply_rotary(q, offset, None))
        k = self.apply_rotary(k, offset, None)  # each key rotated once, at its own position
    k, v = entry.append(k, v)
    if rotary:
        k = self.hook_rot_k(k)
    b, n, heads, d = q.shape
    kv_heads, kpos = k.shape[2], k.shape[1]
    g = heads // kv_heads
    q_ = q.permute(0, 2, 1, 3).reshape(b, kv_heads, g * n, d)
    scores = (q_ @ k.permute(0, 2, 3, 1)).view(b, heads, n, kpos) / self.attn_scale
    scores = apply_softcap(scores, self.cfg.attn_scores_soft_cap)
    scores = self.apply_causal_mask(scores, offset, None)
    scores = self.hook_attn_scores(scores)
    pattern = F.softmax(scores, dim=-1)
    pattern = torch.where(torch.isnan(pattern), torch.zeros_like(pattern), pattern)
    pattern = self.hook_pattern(pattern).to(device=v.device, dtype=v.dtype)
    z = (pattern.reshape(b, kv_heads, g * n, kpos) @ v.permute(0, 2, 1, 3)).view(b, heads, n, d)
    z = self.hook_z(z.permute(0, 2, 1, 3))
    w_o = self._lean_w_o
    if z.dtype != w_o.dtype:
        z = z.to(w_o.dtype)
    return F.linear(z.reshape(b, n, heads * d), w_o, self.b_O)
