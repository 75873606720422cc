"""Small random HookedTransformers for tests and GPU timing.

``tiny_model()`` covers the architectures the analyses must handle: standard multi-head
attention with LayerNorm/GELU (GPT-2-like, learned positions) and grouped-query attention
with RMSNorm/gated-SiLU and rotary positions (Llama-like). ``"tiny-random"`` names map here.
"""

from __future__ import annotations

import re

import torch

TINY_ARCHS = {
    # GPT-2-like: LayerNorm, GELU, learned absolute positions, all heads own K/V.
    "gpt2": dict(normalization_type="LN", act_fn="gelu_new", positional_embedding_type="standard",
                 gated_mlp=False, n_key_value_heads=None),
    # Llama-like: RMSNorm, gated SiLU, rotary, grouped-query attention.
    "llama": dict(normalization_type="RMS", act_fn="silu", positional_embedding_type="rotary",
                  gated_mlp=True, n_key_value_heads=2, final_rms=True),
}

_NAME = re.compile(r"^tiny-random(?:-(?P<arch>gpt2|llama))?(?:-l(?P<l>\d+))?(?:-h(?P<h>\d+))?$")


def tiny_config(arch: str = "gpt2", *, n_layers: int = 2, n_heads: int = 4, d_head: int = 8,
                d_vocab: int = 64, n_ctx: int = 64, seed: int = 0, device="cpu",
                dtype=torch.float32, **overrides):
    from transformer_lens import HookedTransformerConfig

    if arch not in TINY_ARCHS:
        raise ValueError(f"unknown tiny architecture {arch!r}; choose from {sorted(TINY_ARCHS)}")
    kw = dict(TINY_ARCHS[arch])
    if kw.get("n_key_value_heads") is not None and n_heads % kw["n_key_value_heads"]:
        kw["n_key_value_heads"] = 1
    if arch == "llama":
        kw["rotary_dim"] = d_head
    kw.update(overrides)
    return HookedTransformerConfig(
        n_layers=n_layers, n_heads=n_heads, d_head=d_head, d_model=n_heads * d_head,
        d_mlp=4 * n_heads * d_head, d_vocab=d_vocab, n_ctx=n_ctx, seed=seed,
        device=str(device), dtype=dtype, default_prepend_bos=False, **kw,
    )


def tiny_model(arch: str = "gpt2", *, init_std: float | None = None, **kwargs):
    """A random HookedTransformer (eval mode, unprocessed weights, no tokenizer).

    ``init_std`` rescales the random init (the TL default, 0.02/√... , gives nearly
    uniform attention; tests that need sharp patterns pass e.g. 0.3).
    """
    from transformer_lens import HookedTransformer

    cfg = tiny_config(arch, **kwargs)
    torch.manual_seed(cfg.seed)
    model = HookedTransformer(cfg)
    if init_std is not None:
        g = torch.Generator().manual_seed(cfg.seed)
        with torch.no_grad():
            for name, p in model.named_parameters():
                if p.ndim >= 2:
                    p.copy_(torch.randn(p.shape, generator=g) * init_std)
    model.eval()
    return model


def parse_tiny_name(name: str) -> dict | None:
    """``tiny-random[-gpt2|-llama][-l<layers>][-h<heads>]`` -> tiny_model kwargs, else None."""
    m = _NAME.match(name)
    if not m:
        return None
    kw: dict = {"arch": m.group("arch") or "gpt2"}
    if m.group("l"):
        kw["n_layers"] = int(m.group("l"))
    if m.group("h"):
        kw["n_heads"] = int(m.group("h"))
    return kw
