"""Small random models for tests and GPU timing, as HookedTransformer or TransformerBridge.

``tiny_model()`` covers the architectures the analyses must handle: standard multi-head
attention with LayerNorm/GELU (GPT-2-like, learned positions) and grouped-query attention
with RMSNorm/gated-SiLU and rotary positions (Llama-like). ``"tiny-random"`` names map here.

The random weights are drawn once, in a Hugging Face model built from a config
(``GPT2LMHeadModel`` / ``LlamaForCausalLM``); the HookedTransformer is converted from it
and the TransformerBridge wraps it. So for a given seed both backends hold the same
weights and compute the same function, and analyses can be compared across them.
Every tiny model carries a character-level tokenizer (``tiny_tokenizer``) so text prompts
work; tiny models prepend no BOS unless asked.
"""

from __future__ import annotations

import re
import string
import warnings

import torch

from .hooked import _load_weights, has_hooked_transformer, to_dtype

TINY_ARCHS = {
    # GPT-2-like: LayerNorm, GELU, learned absolute positions, all heads own K/V.
    "gpt2": dict(normalization_type="LN", act_fn="gelu_new", positional_embedding_type="standard",
                 gated_mlp=False, n_key_value_heads=None),
    # Llama-like: RMSNorm, gated SiLU, rotary, grouped-query attention.
    "llama": dict(normalization_type="RMS", act_fn="silu", positional_embedding_type="rotary",
                  gated_mlp=True, n_key_value_heads=2, final_rms=True),
}

_NAME = re.compile(r"^tiny-random(?:-(?P<arch>gpt2|llama))?(?:-l(?P<l>\d+))?(?:-h(?P<h>\d+))?$")

TINY_SPECIAL_TOKENS = ("<|bos|>", "<|eos|>", "<|pad|>", "<|unk|>")
# One token per character; 60 characters + 4 special tokens fill the default 64-token vocab.
TINY_CHARS = " " + string.ascii_lowercase + string.digits + ".,!?'-:;()\"\n/&%$#@*+=<>_"


def tiny_tokenizer(d_vocab: int = 64):
    """Character-level fast tokenizer with ``d_vocab`` ids (ids 0-3: bos, eos, pad, unk).

    Characters outside its alphabet (including upper case) map to ``<|unk|>``. Called
    directly it adds BOS (``add_special_tokens=False`` to avoid); tiny models do not
    prepend BOS unless asked (``prepend_bos=True``).
    """
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    if d_vocab < len(TINY_SPECIAL_TOKENS) + 1:
        raise ValueError(f"d_vocab must be at least {len(TINY_SPECIAL_TOKENS) + 1}, got {d_vocab}")
    chars = TINY_CHARS[: d_vocab - len(TINY_SPECIAL_TOKENS)]
    vocab = {t: i for i, t in enumerate(list(TINY_SPECIAL_TOKENS) + list(chars))}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<|unk|>"))
    backend.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    backend.decoder = decoders.Fuse()
    # ``name_or_path`` and ``add_bos_token`` let TransformerLens keep this object instead of
    # reloading the tokenizer by name from the hub.
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, name_or_path=f"interp-toolkit/tiny-char-{d_vocab}",
        add_bos_token=True, bos_token="<|bos|>", eos_token="<|eos|>", pad_token="<|pad|>",
        unk_token="<|unk|>",
    )


def _check_arch(arch: str) -> None:
    if arch not in TINY_ARCHS:
        raise ValueError(f"unknown tiny architecture {arch!r}; choose from {sorted(TINY_ARCHS)}")


def _kv_heads(arch: str, n_heads: int, n_kv_heads: int | None) -> int | None:
    if arch != "llama":
        if n_kv_heads not in (None, n_heads):
            raise ValueError("grouped-query attention (n_kv_heads) needs arch='llama'")
        return None
    kv = TINY_ARCHS["llama"]["n_key_value_heads"] if n_kv_heads is None else n_kv_heads
    if n_heads % kv:
        kv = 1
    return kv


def tiny_hf_config(arch: str = "gpt2", *, n_layers: int = 2, n_heads: int = 4, d_head: int = 8,
                   d_vocab: int = 64, n_ctx: int = 64, d_mlp: int | None = None,
                   n_kv_heads: int | None = None):
    """The Hugging Face config of a tiny model (``GPT2Config`` or ``LlamaConfig``)."""
    _check_arch(arch)
    kv = _kv_heads(arch, n_heads, n_kv_heads)
    d_model = n_heads * d_head
    d_mlp = 4 * d_model if d_mlp is None else d_mlp
    special = dict(bos_token_id=0, eos_token_id=1, pad_token_id=2)
    if arch == "gpt2":
        from transformers import GPT2Config

        cfg = GPT2Config(vocab_size=d_vocab, n_positions=n_ctx, n_embd=d_model, n_layer=n_layers,
                         n_head=n_heads, n_inner=d_mlp, activation_function="gelu_new",
                         resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, **special)
        cfg.architectures = ["GPT2LMHeadModel"]
    else:
        from transformers import LlamaConfig

        cfg = LlamaConfig(vocab_size=d_vocab, hidden_size=d_model, intermediate_size=d_mlp,
                          num_hidden_layers=n_layers, num_attention_heads=n_heads,
                          num_key_value_heads=kv, head_dim=d_head, max_position_embeddings=n_ctx,
                          hidden_act="silu", rms_norm_eps=1e-5, tie_word_embeddings=False,
                          **special)
        cfg.architectures = ["LlamaForCausalLM"]
    return cfg


def tiny_hf_model(arch: str = "gpt2", *, seed: int = 0, init_std: float | None = None, **kwargs):
    """A random Hugging Face causal LM (float32, eval mode) — the source of every tiny model.

    ``init_std`` redraws every matrix (embeddings, projections, unembedding) as
    N(0, init_std²); the default keeps the architecture's own init (std 0.02), which gives
    nearly uniform attention. Tests that need sharp patterns pass e.g. 0.3.
    """
    from transformers import GPT2LMHeadModel, LlamaForCausalLM

    cfg = tiny_hf_config(arch, **kwargs)
    cls = GPT2LMHeadModel if arch == "gpt2" else LlamaForCausalLM
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        hf = cls(cfg)
    if init_std is not None:
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for _, p in hf.named_parameters():
                if p.ndim >= 2:
                    p.copy_(torch.randn(p.shape, generator=g) * init_std)
    hf.eval()
    return hf


def tiny_config(arch: str = "gpt2", *, n_layers: int = 2, n_heads: int = 4, d_head: int = 8,
                d_vocab: int = 64, n_ctx: int = 64, d_mlp: int | None = None,
                n_kv_heads: int | None = None, seed: int = 0, device="cpu",
                dtype=torch.float32, **overrides):
    """HookedTransformerConfig of the tiny model with these sizes (TransformerLens 3.x)."""
    from transformer_lens import HookedTransformerConfig

    _check_arch(arch)
    kw = dict(TINY_ARCHS[arch])
    kw["n_key_value_heads"] = _kv_heads(arch, n_heads, n_kv_heads)
    if arch == "llama":
        kw.update(rotary_dim=d_head, rotary_base=10000.0, original_architecture="LlamaForCausalLM")
    else:
        kw.update(original_architecture="GPT2LMHeadModel")
    kw.update(overrides)
    d_model = n_heads * d_head
    return HookedTransformerConfig(
        n_layers=n_layers, n_heads=n_heads, d_head=d_head, d_model=d_model,
        d_mlp=4 * d_model if d_mlp is None else d_mlp, d_vocab=d_vocab, n_ctx=n_ctx, seed=seed,
        eps=1e-5, device=str(device), dtype=to_dtype(dtype), default_prepend_bos=False, **kw,
    )


def tiny_model(arch: str = "gpt2", *, backend: str | None = None, init_std: float | None = None,
               n_layers: int = 2, n_heads: int = 4, d_head: int = 8, d_vocab: int = 64,
               n_ctx: int = 64, d_mlp: int | None = None, n_kv_heads: int | None = None,
               seed: int = 0, device="cpu", dtype=torch.float32, hf_model=None):
    """A random model (eval mode, unprocessed weights, character-level tokenizer).

    Args:
        arch: ``"gpt2"`` (LayerNorm, GELU, learned positions) or ``"llama"`` (RMSNorm,
            gated SiLU, rotary, grouped-query attention with ``n_kv_heads`` = 2).
        backend: ``"hooked"`` (HookedTransformer) or ``"bridge"`` (TransformerBridge);
            default: hooked where TransformerLens still has it (3.x), bridge on 4.x.
            Both hold the same weights for the same ``seed``.
        init_std: redraw every weight matrix with this std (default: the architecture's
            init, std 0.02, nearly uniform attention; e.g. 0.3 gives sharp patterns).
        hf_model: use this Hugging Face model's weights (from ``tiny_hf_model``, then edited
            or trained) instead of drawing them; the sizes come from its config.
    """
    dtype = to_dtype(dtype)
    if backend is None:
        backend = "hooked" if has_hooked_transformer() else "bridge"
    if backend not in ("hooked", "bridge"):
        raise ValueError(f"backend must be 'hooked' or 'bridge', not {backend!r}")
    sizes = dict(n_layers=n_layers, n_heads=n_heads, d_head=d_head, d_vocab=d_vocab, n_ctx=n_ctx,
                 d_mlp=d_mlp, n_kv_heads=n_kv_heads)
    if hf_model is not None:
        sizes = _sizes_from_hf(arch, hf_model.config)
    # Building draws (and TransformerLens re-seeds) random numbers: keep the caller's stream.
    with torch.random.fork_rng(devices=[]):
        model = _build_tiny(arch, backend, init_std, seed, device, dtype, sizes, hf_model)
    model.eval()
    model.interp_meta = {"name": f"tiny-random-{arch}", "source": "random" if hf_model is None else "given", "seed": seed,
                         "init_std": init_std, "arch": arch, "backend": backend}
    return model


def _sizes_from_hf(arch: str, cfg) -> dict:
    """``tiny_model`` sizes of a config made by ``tiny_hf_config``."""
    _check_arch(arch)
    if arch == "gpt2":
        return dict(n_layers=cfg.n_layer, n_heads=cfg.n_head, d_head=cfg.n_embd // cfg.n_head,
                    d_vocab=cfg.vocab_size, n_ctx=cfg.n_positions, d_mlp=cfg.n_inner, n_kv_heads=None)
    return dict(n_layers=cfg.num_hidden_layers, n_heads=cfg.num_attention_heads, d_head=cfg.head_dim,
                d_vocab=cfg.vocab_size, n_ctx=cfg.max_position_embeddings, d_mlp=cfg.intermediate_size,
                n_kv_heads=cfg.num_key_value_heads)


def _build_tiny(arch, backend, init_std, seed, device, dtype, sizes, hf=None):
    from .hooked import bridge_from_hf
    from .offline import hf_offline

    if hf is None:
        hf = tiny_hf_model(arch, seed=seed, init_std=init_std, **sizes)
    hf.eval()
    tok = tiny_tokenizer(sizes["d_vocab"])
    if backend == "hooked":
        if not has_hooked_transformer():
            raise RuntimeError("this TransformerLens has no HookedTransformer (4.x): use backend='bridge'")
        from transformer_lens import HookedTransformer

        cfg = tiny_config(arch, seed=seed, device=device, dtype=torch.float32, **sizes)
        cfg.init_weights = False  # the weights come from ``hf``; TL's init would reseed torch
        if arch == "gpt2":
            from transformer_lens.pretrained.weight_conversions.gpt2 import convert_gpt2_weights as convert
        else:
            from transformer_lens.pretrained.weight_conversions.llama import convert_llama_weights as convert
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = HookedTransformer(cfg, tokenizer=tok, move_to_device=False)
            _load_weights(model, convert(hf, cfg), processing=False, dtype=torch.float32)
        if dtype != torch.float32:
            model.to(dtype, print_details=False)
        model.to(device, print_details=False)
    else:
        hf.to(device=device, dtype=dtype)
        spec = _TinySpec(hf_name=f"interp-toolkit/tiny-random-{arch}", prepend_bos=False)
        with hf_offline():
            model = bridge_from_hf(spec, hf, tok, device=device, dtype=dtype, processing=False)
    return model


class _TinySpec:
    """The two fields of an offline-model spec that ``bridge_from_hf`` reads."""

    def __init__(self, hf_name: str, prepend_bos: bool):
        self.hf_name = hf_name
        self.prepend_bos = prepend_bos


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
