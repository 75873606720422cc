"""An independent check of the masking engine, not through TransformerLens hooks.

A plain PyTorch forward written from the Hugging Face modules of SmolLM2 (Llama) and Gemma 3
(eager attention; the post-softmax weights multiplied by the attention-edge mask, the MLP
output by the MLP mask, the residual skip paths by theirs, the sublayers reading their
unmasked input) must give the same last-position logits as ``engine.masked_forward`` with the
same ``MaskSpec``, for random masks in deep layers. The unmasked reference must first equal
the Hugging Face model's own forward.
"""

from __future__ import annotations

import inspect

import pytest
import torch

from interp_toolkit.adapter import as_adapter
from interp_toolkit.engine import MaskSpec, masked_forward
from interp_toolkit.models.offline import load_hf_offline

pytestmark = [pytest.mark.real, pytest.mark.slow]


def _rotate_half(x):
    x1, x2 = x[..., : x.shape[-1] // 2], x[..., x.shape[-1] // 2:]
    return torch.cat((-x2, x1), dim=-1)


@torch.no_grad()
def hf_reference_forward(hf, ids: torch.Tensor, masks: dict) -> torch.Tensor:
    """Last-position logits ``[R, vocab]`` of ``hf`` (Llama or Gemma 3 causal LM) on ``ids``
    ``[T]`` for R rows of masks: ``masks[(site, layer)]`` as in ``MaskSpec`` (pattern
    [R, H, T, T]; mlp_out / skip_attn / skip_mlp [R, T]); absent = keep."""
    R = next(iter(masks.values())).shape[0] if masks else 1
    inner = hf.model
    cfg = hf.config
    T = ids.shape[0]
    if getattr(cfg, "sliding_window", None) is not None and T > cfg.sliding_window:
        raise ValueError("prompt longer than the sliding window")
    h = inner.embed_tokens(ids[None]).expand(R, T, -1)  # Gemma's module applies its √d scale
    pos = torch.arange(T)[None]
    causal = torch.full((T, T), float("-inf")).triu(1)
    types = getattr(cfg, "layer_types", None)
    for l, layer in enumerate(inner.layers):
        if types is not None and "layer_type" in inspect.signature(inner.rotary_emb.forward).parameters:
            cos, sin = inner.rotary_emb(h, pos, types[l])
        else:
            cos, sin = inner.rotary_emb(h, pos)
        attn = layer.self_attn
        x = layer.input_layernorm(h)
        hd = attn.head_dim
        q = attn.q_proj(x).view(R, T, -1, hd).transpose(1, 2)
        k = attn.k_proj(x).view(R, T, -1, hd).transpose(1, 2)
        v = attn.v_proj(x).view(R, T, -1, hd).transpose(1, 2)
        if hasattr(attn, "q_norm"):
            q, k = attn.q_norm(q), attn.k_norm(k)
        c, s = cos[:, None], sin[:, None]
        q, k = q * c + _rotate_half(q) * s, k * c + _rotate_half(k) * s
        rep = q.shape[1] // k.shape[1]
        k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
        scores = q @ k.transpose(-1, -2) * attn.scaling + causal
        weights = scores.softmax(-1, dtype=torch.float32).to(q.dtype)
        if ("pattern", l) in masks:
            weights = weights * masks[("pattern", l)].to(weights.dtype)
        o = attn.o_proj((weights @ v).transpose(1, 2).reshape(R, T, -1))
        if hasattr(layer, "pre_feedforward_layernorm"):  # Gemma 3: post-attention norm on the output
            o = layer.post_attention_layernorm(o)
        keep = masks.get(("skip_attn", l))
        mid = o + (h if keep is None else h * keep[..., None].to(h.dtype))
        if hasattr(layer, "pre_feedforward_layernorm"):
            m = layer.post_feedforward_layernorm(layer.mlp(layer.pre_feedforward_layernorm(mid)))
        else:
            m = layer.mlp(layer.post_attention_layernorm(mid))
        if ("mlp_out", l) in masks:
            m = m * masks[("mlp_out", l)][..., None].to(m.dtype)
        keep = masks.get(("skip_mlp", l))
        h = m + (mid if keep is None else mid * keep[..., None].to(mid.dtype))
    logits = hf.lm_head(inner.norm(h[:, -1]))
    cap = getattr(cfg, "final_logit_softcapping", None)
    return torch.tanh(logits / cap) * cap if cap else logits


def random_masks(adapter, T: int, layers, R: int, seed: int) -> dict:
    g = torch.Generator().manual_seed(seed)
    H = adapter.n_heads
    out = {}
    for l in layers:
        out[("pattern", l)] = torch.rand(R, H, T, T, generator=g) < 0.7
        for site in ("mlp_out", "skip_attn", "skip_mlp"):
            out[(site, l)] = torch.rand(R, T, generator=g) < 0.7
    return out


@pytest.mark.parametrize("name", ["smollm2-135m", "gemma3-270m"])
def test_engine_masks_equal_a_plain_hugging_face_forward(name, request):
    engine_model = request.getfixturevalue({"smollm2-135m": "smollm2", "gemma3-270m": "gemma3"}[name])
    adapter = as_adapter(engine_model)
    hf, tok, _ = load_hf_offline(name, progress=False)
    hf.eval()
    ids = torch.tensor(tok("The old lighthouse keeper climbed the stairs every night to light the lamp",
                           add_special_tokens=True)["input_ids"])
    T = ids.shape[0]
    with torch.no_grad():
        own = hf(ids[None]).logits[0, -1]
    mine = hf_reference_forward(hf, ids, {})[0]
    torch.testing.assert_close(mine, own, rtol=1e-4, atol=1e-3)  # the reference is the HF model
    L = adapter.n_layers
    layers = [L - 4, L - 2, L - 1]  # deep layers
    masks = random_masks(adapter, T, layers, R=3, seed=0)
    spec = MaskSpec(3)
    for (site, l), keep in masks.items():
        spec.set(site, l, keep)
    engine = masked_forward(adapter, ids[None].to(adapter.device), spec, output="last_logits").double()
    ref = hf_reference_forward(hf, ids, masks).double()
    unmasked = own.double()[None]
    assert (ref - unmasked).abs().max() > 0.5  # the masks matter
    torch.testing.assert_close(engine, ref, rtol=1e-4, atol=2e-3)
    # one site at a time, so that a wrong site cannot hide behind another
    for site in ("pattern", "mlp_out", "skip_attn", "skip_mlp"):
        only = {k: v for k, v in masks.items() if k[0] == site}
        spec = MaskSpec(3)
        for (s, l), keep in only.items():
            spec.set(s, l, keep)
        engine = masked_forward(adapter, ids[None].to(adapter.device), spec, output="last_logits").double()
        ref = hf_reference_forward(hf, ids, only).double()
        assert (ref - unmasked).abs().max() > 1e-2, site
        torch.testing.assert_close(engine, ref, rtol=1e-4, atol=2e-3, msg=site)
    del hf
