"""The one place where analysis code meets the model.

``ModelAdapter`` wraps a TransformerLens ``HookedTransformer`` (3.x) or ``TransformerBridge``
(4.x, compatibility mode) and exposes what the analyses need: sizes, hook names per site,
weights (``W_O``, unembedding), the final norm, grouped-query expansion, forwards with hooks
and ``start_at_layer``. No other module branches on the model class.

Sites (``adapter.hook_name(site, layer)``)::

    embed        hook_embed                     [batch, pos, d_model]   token embeddings
    pos_embed    hook_pos_embed                 [batch, pos, d_model]   (learned positions only)
    resid_pre    blocks.{l}.hook_resid_pre      [batch, pos, d_model]
    resid_mid    blocks.{l}.hook_resid_mid      [batch, pos, d_model]
    resid_post   blocks.{l}.hook_resid_post     [batch, pos, d_model]
    attn_out     blocks.{l}.hook_attn_out       [batch, pos, d_model]
    mlp_out      blocks.{l}.hook_mlp_out        [batch, pos, d_model]
    q / k / v    blocks.{l}.attn.hook_q/k/v     [batch, pos, head(kv), d_head]
    z            blocks.{l}.attn.hook_z         [batch, pos, head, d_head]
    scores       blocks.{l}.attn.hook_attn_scores [batch, head, dest, src]
    pattern      blocks.{l}.attn.hook_pattern   [batch, head, dest, src]
    ln1 / ln2    blocks.{l}.ln1/ln2.hook_normalized
    ln1_scale / ln2_scale   blocks.{l}.ln1/ln2.hook_scale  [batch, pos, 1]
    final_norm   ln_final.hook_normalized       [batch, pos, d_model]
    final_scale  ln_final.hook_scale            [batch, pos, 1]
    q_input / k_input / v_input   blocks.{l}.hook_q_input ... [batch, pos, head, d_model]
    mlp_in       blocks.{l}.hook_mlp_in         [batch, pos, d_model]   (only inside ``edge_inputs()``)

What the norm hooks hold follows TransformerLens: for LayerNorm ``hook_normalized`` is the
output (gain and bias applied); for RMSNorm it is ``x / scale`` *before* the gain. Use
``final_norm(resid)`` for the final norm's output on every architecture. On Gemma-style
blocks (``has_post_norms``) ``hook_attn_out`` / ``hook_mlp_out`` are taken after the
post-sublayer norms, so ``attn_out`` is not ``z @ W_O + b_O`` there.

Differences between the two model classes that this adapter hides:
``TransformerBridge`` has no ``b_O`` for bias-free attention (we return zeros, as
HookedTransformer does), keeps Gemma's sqrt(d_model) embedding scale out of ``W_E`` (we
fold it in, so ``W_E[tokens]`` equals ``hook_embed`` on both), does not set
``cfg.use_normalization_before_and_after`` (we look for the post-norm modules), stores
Hugging Face norm parameters (``norm_gain`` gives the effective gain) and, before
TransformerLens 4, refuses ``start_at_layer`` (``forward``/``run_with_cache`` emulate it).
One difference stays visible: a bridge hook point reached through a TransformerLens alias
reports its own name in ``hook.name`` (``blocks.3.hook_resid_pre`` fires as
``blocks.3.hook_in``), so hook functions must not parse ``hook.name``; bind what they need
when they are made. Cache keys and name filters use the names above on both.
"""

from __future__ import annotations

import contextlib
from typing import Callable, Iterable, Sequence

import torch
from jaxtyping import Float, Int
from torch import Tensor

_BLOCK_SITES = {
    "resid_pre": "blocks.{l}.hook_resid_pre",
    "resid_mid": "blocks.{l}.hook_resid_mid",
    "resid_post": "blocks.{l}.hook_resid_post",
    "attn_out": "blocks.{l}.hook_attn_out",
    "mlp_out": "blocks.{l}.hook_mlp_out",
    "q": "blocks.{l}.attn.hook_q",
    "k": "blocks.{l}.attn.hook_k",
    "v": "blocks.{l}.attn.hook_v",
    "z": "blocks.{l}.attn.hook_z",
    "scores": "blocks.{l}.attn.hook_attn_scores",
    "pattern": "blocks.{l}.attn.hook_pattern",
    "ln1": "blocks.{l}.ln1.hook_normalized",
    "ln2": "blocks.{l}.ln2.hook_normalized",
    "ln1_scale": "blocks.{l}.ln1.hook_scale",
    "ln2_scale": "blocks.{l}.ln2.hook_scale",
    "ln1_post": "blocks.{l}.ln1_post.hook_normalized",
    "ln2_post": "blocks.{l}.ln2_post.hook_normalized",
    "ln1_post_scale": "blocks.{l}.ln1_post.hook_scale",
    "ln2_post_scale": "blocks.{l}.ln2_post.hook_scale",
}
# receiver inputs: these hooks exist only inside ``ModelAdapter.edge_inputs()``
_EDGE_INPUT_SITES = {
    "q_input": "blocks.{l}.hook_q_input",
    "k_input": "blocks.{l}.hook_k_input",
    "v_input": "blocks.{l}.hook_v_input",
    "mlp_in": "blocks.{l}.hook_mlp_in",
}
_MODEL_SITES = {
    "embed": "hook_embed",
    "pos_embed": "hook_pos_embed",
    "final_norm": "ln_final.hook_normalized",
    "final_scale": "ln_final.hook_scale",
}
BLOCK_SITES = tuple(_BLOCK_SITES)
EDGE_INPUT_SITES = tuple(_EDGE_INPUT_SITES)
MODEL_SITES = tuple(_MODEL_SITES)

Hook = tuple[str | Callable[[str], bool], Callable]


class ModelAdapter:
    """Thin, uniform view of a TransformerLens model (HookedTransformer or TransformerBridge)."""

    def __init__(self, model):
        if isinstance(model, ModelAdapter):
            model = model.model
        if not hasattr(model, "cfg") or not hasattr(model, "run_with_hooks"):
            raise TypeError(f"expected a HookedTransformer or TransformerBridge, got {type(model).__name__}")
        self.model = model
        cfg = model.cfg
        self.cfg = cfg
        self.n_layers: int = cfg.n_layers
        self.n_heads: int = cfg.n_heads
        self.n_kv_heads: int = getattr(cfg, "n_key_value_heads", None) or cfg.n_heads
        self.d_model: int = cfg.d_model
        self.d_head: int = cfg.d_head
        self.d_vocab: int = cfg.d_vocab_out if getattr(cfg, "d_vocab_out", -1) > 0 else cfg.d_vocab
        self.n_ctx: int = cfg.n_ctx
        self.positional: str = getattr(cfg, "positional_embedding_type", "standard")
        self.is_bridge: bool = type(model).__name__ == "TransformerBridge"
        self.lean_cache: bool = True  # lean key/value-cache forward (False: TransformerLens's own)
        self.has_post_norms: bool = bool(getattr(cfg, "use_normalization_before_and_after", False)) or (
            self.n_layers > 0 and hasattr(model.blocks[0], "ln1_post"))

    # ------------------------------------------------------------------ identity
    @property
    def backend(self) -> str:
        """``"bridge"`` (TransformerBridge) or ``"hooked"`` (HookedTransformer)."""
        return "bridge" if self.is_bridge else "hooked"

    @property
    def meta(self) -> dict:
        """Model name, revision, dtype, processing — to record in saved results."""
        meta = dict(getattr(self.model, "interp_meta", {}) or {})
        meta.setdefault("name", getattr(self.cfg, "model_name", type(self.model).__name__))
        meta.setdefault("dtype", str(self.dtype).replace("torch.", ""))
        return meta

    @property
    def name(self) -> str:
        return self.meta["name"]

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    @property
    def tokenizer(self):
        return getattr(self.model, "tokenizer", None)

    @property
    def group_size(self) -> int:
        """Query heads per key/value head (1 without grouped-query attention)."""
        return self.n_heads // self.n_kv_heads

    # ------------------------------------------------------------------ hooks
    def hook_name(self, site: str, layer: int | None = None) -> str:
        """TransformerLens hook name for ``site`` (see module docstring) at ``layer``."""
        if site in _MODEL_SITES:
            return _MODEL_SITES[site]
        pattern = _BLOCK_SITES.get(site) or _EDGE_INPUT_SITES.get(site)
        if pattern is None:
            raise ValueError(f"unknown site {site!r}; known: "
                             f"{sorted(_BLOCK_SITES) + sorted(_EDGE_INPUT_SITES) + sorted(_MODEL_SITES)}")
        if layer is None:
            raise ValueError(f"site {site!r} needs a layer")
        return pattern.format(l=self._layer(layer))

    def hook_names(self, site: str, layers: Iterable[int] | None = None) -> list[str]:
        layers = range(self.n_layers) if layers is None else layers
        return [self.hook_name(site, l) for l in layers]

    # ------------------------------------------------------------------ weights
    def _layer(self, layer: int) -> int:
        if not -self.n_layers <= layer < self.n_layers:
            raise ValueError(f"layer {layer} out of range for a {self.n_layers}-layer model")
        return layer % self.n_layers

    def W_O(self, layer: int) -> Float[Tensor, "head d_head d_model"]:
        return self.model.blocks[self._layer(layer)].attn.W_O

    def b_O(self, layer: int) -> Float[Tensor, "d_model"]:
        """Attention output bias (zeros for bias-free attention)."""
        b = self.model.blocks[self._layer(layer)].attn.b_O
        return b if b is not None else torch.zeros(self.d_model, device=self.device, dtype=self.dtype)

    def W_V(self, layer: int) -> Float[Tensor, "head d_model d_head"]:
        """Value weights per query head (K/V heads repeated under grouped-query attention)."""
        W = self.model.blocks[self._layer(layer)].attn.W_V
        if W.shape[0] != self.n_heads:
            W = self.expand_kv(W, dim=0)
        return W

    @property
    def W_U(self) -> Float[Tensor, "d_model d_vocab"]:
        return self.model.W_U

    @property
    def b_U(self) -> Float[Tensor, "d_vocab"]:
        b = getattr(self.model, "b_U", None)
        return b if b is not None else torch.zeros(self.d_vocab, device=self.device, dtype=self.dtype)

    @property
    def W_E(self) -> Float[Tensor, "d_vocab d_model"]:
        """Token embedding matrix, scaled so that ``W_E[tokens]`` is the value at ``hook_embed``."""
        W = self.model.W_E
        if self.is_bridge:
            hf_embed = getattr(self.model.embed, "original_component", None)
            scale = getattr(hf_embed, "embed_scale", None)
            if scale is not None:
                W = W * torch.as_tensor(scale).to(device=W.device, dtype=W.dtype)
        return W

    def expand_kv(self, x: Tensor, dim: int = -2) -> Tensor:
        """Repeat key/value heads along ``dim`` so there is one per query head.

        Query head h reads key/value head h // group_size (TransformerLens's convention).
        """
        if x.shape[dim] == self.n_heads:
            return x
        if x.shape[dim] != self.n_kv_heads:
            raise ValueError(f"dim {dim} has size {x.shape[dim]}, expected {self.n_kv_heads} kv heads")
        return x.repeat_interleave(self.group_size, dim=dim)

    # ------------------------------------------------------------------ maps
    def final_norm(self, resid: Float[Tensor, "... d_model"]) -> Float[Tensor, "... d_model"]:
        """Apply the final norm, recomputing its scale from ``resid`` itself."""
        return self.model.ln_final(resid)

    def norm_module(self, site: str = "final", layer: int | None = None):
        """The normalisation layer ``site`` ∈ {final, ln1, ln2, ln1_post, ln2_post}."""
        if site == "final":
            return self.model.ln_final
        if site not in ("ln1", "ln2", "ln1_post", "ln2_post"):
            raise ValueError(f"unknown norm {site!r}; known: final, ln1, ln2, ln1_post, ln2_post")
        if layer is None:
            raise ValueError(f"norm {site!r} needs a layer")
        return getattr(self.model.blocks[layer], site)

    def linear_norm(self, x: Float[Tensor, "... d_model"], scale: Float[Tensor, "... 1"] | float,
                    site: str = "final", layer: int | None = None) -> Float[Tensor, "... d_model"]:
        """The norm at ``site`` with its scale held fixed (a linear map of ``x``):
        ``w ⊙ c(x) / scale``, where ``c`` removes the mean for LayerNorm and is the identity
        for RMSNorm, ``w`` is the gain (1 for the ``*Pre`` variants) and the bias is left out.
        With ``scale`` taken from a cached forward (``*_scale`` sites) this is the
        linearisation of the norm around that forward."""
        module = self.norm_module(site, layer)
        kind = self._norm_kind(module)
        if kind == "LN":
            x = x - x.mean(-1, keepdim=True)
        y = x / scale
        w = self.norm_gain(site, layer)
        return y * w if w is not None else y

    def _norm_kind(self, module) -> str:
        name = type(module).__name__
        if name.startswith("LayerNorm"):
            return "LN"
        if name.startswith("RMSNorm"):
            return "RMS"
        if self.is_bridge and name.endswith("NormalizationBridge"):
            if name.startswith("RMS"):
                return "RMS"
            inner = type(getattr(module, "original_component", None)).__name__
            return "RMS" if "RMS" in inner else "LN"
        raise TypeError(f"cannot linearise a norm of type {name}")

    def norm_gain(self, site: str = "final", layer: int | None = None) -> Tensor | None:
        """The norm's effective elementwise gain (None for the gain-free ``*Pre`` norms).

        HookedTransformer stores it as ``w``. A TransformerBridge keeps the Hugging Face
        parameter, which is not always the gain (Gemma's RMSNorm multiplies by 1 + weight),
        so there the gain of an RMSNorm is read off the module: on a constant input c·1
        (c ≫ √eps) its output is the gain.
        """
        module = self.norm_module(site, layer)
        if not self.is_bridge:
            w = getattr(module, "w", None)
            return w if w is not None else getattr(module, "weight", None)
        if self._norm_kind(module) == "LN":
            return module.w
        probe = torch.full((self.d_model,), 1e3, device=self.device, dtype=torch.float32)
        with torch.no_grad():
            inner = getattr(module, "original_component", module)
            return inner(probe.to(self.dtype)).to(self.dtype)

    def norm_output(self, x: Float[Tensor, "... d_model"], site: str = "final",
                    layer: int | None = None) -> Float[Tensor, "... d_model"]:
        """The norm at ``site`` applied to ``x``: what the next sublayer reads (gain and bias
        included, scale recomputed from ``x``). ``hook_normalized`` holds the value before
        the gain; this is the module's output."""
        module = self.norm_module(site, layer)
        return getattr(module, "original_component", module)(x)

    def unembed(self, normed: Float[Tensor, "... d_model"],
                vocab: Int[Tensor, "v"] | None = None) -> Float[Tensor, "... d_vocab"]:
        """Logits from a final-normed residual (including any output soft-cap); with ``vocab``
        (token ids) only those columns, ``[..., len(vocab)]``."""
        W_U, b_U = self.W_U, self.b_U
        if vocab is not None:
            W_U, b_U = W_U[:, vocab], b_U[vocab]
        logits = normed @ W_U + b_U
        cap = getattr(self.cfg, "output_logits_soft_cap", -1.0) or -1.0
        if cap > 0:
            logits = cap * torch.tanh(logits / cap)
        return logits

    def logits_from_resid(self, resid: Float[Tensor, "... d_model"]) -> Float[Tensor, "... d_vocab"]:
        """Logit lens: final norm (scale recomputed on this state) then unembed."""
        return self.unembed(self.final_norm(resid))

    # ------------------------------------------------------------------ tokens
    def to_tokens(self, text: str | Sequence[str], prepend_bos: bool | None = None) -> Int[Tensor, "batch pos"]:
        if self.tokenizer is None:
            raise ValueError("this model has no tokenizer; pass token ids")
        return self.model.to_tokens(text, prepend_bos=prepend_bos)

    def to_str_tokens(self, tokens_or_text, prepend_bos: bool | None = None) -> list[str]:
        if self.tokenizer is None:
            t = torch.as_tensor(tokens_or_text).flatten().tolist()
            return [f"<{i}>" for i in t]
        if isinstance(tokens_or_text, str):
            return self.model.to_str_tokens(tokens_or_text, prepend_bos=prepend_bos)
        return self.model.to_str_tokens(torch.as_tensor(tokens_or_text).flatten())

    def token_id(self, target) -> int:
        """A single-token target as its id: an id in the vocabulary, or text that is exactly
        one token (mind the leading space); anything else is a ``ValueError``."""
        if isinstance(target, int) or (hasattr(target, "dtype") and getattr(target, "ndim", 1) == 0
                                       and not isinstance(target, str)):
            t = int(target)
            if not 0 <= t < self.d_vocab:
                raise ValueError(f"target id {t} is outside the vocabulary [0, {self.d_vocab})")
            return t
        if not isinstance(target, str):
            raise TypeError(f"a target is a token id or a string, got {type(target).__name__}")
        if self.tokenizer is None:
            raise ValueError("a string target needs a tokenizer; pass a token id")
        ids = self.tokenizer(target, add_special_tokens=False)["input_ids"]
        if len(ids) != 1:
            pieces = [self.tokenizer.decode([i]) for i in ids]
            raise ValueError(f"target {target!r} is {len(ids)} tokens in {self.name} ({pieces}), not one: "
                             f"it must be a single token (mind the leading space)")
        return int(ids[0])

    def to_string(self, tokens) -> str:
        return self.model.to_string(tokens)

    def as_tokens(self, tokens_or_text, prepend_bos: bool | None = None) -> Int[Tensor, "batch pos"]:
        """Text -> tokens [1, pos]; token tensors [pos] or [batch, pos] pass through (on device)."""
        if isinstance(tokens_or_text, str):
            tokens = self.to_tokens(tokens_or_text, prepend_bos=prepend_bos)
        else:
            tokens = torch.as_tensor(tokens_or_text)
            if tokens.ndim == 1:
                tokens = tokens[None]
            if tokens.ndim != 2:
                raise ValueError(f"tokens must be [pos] or [batch, pos], got shape {tuple(tokens.shape)}")
            if tokens.dtype not in (torch.int64, torch.int32):
                raise ValueError(f"tokens must be integer ids, got {tokens.dtype}")
        if tokens.shape[-1] > self.n_ctx:
            raise ValueError(f"prompt has {tokens.shape[-1]} tokens; the model's context is {self.n_ctx}")
        if tokens.numel() and (int(tokens.min()) < 0 or int(tokens.max()) >= self.cfg.d_vocab):
            raise ValueError(f"token ids must lie in [0, {self.cfg.d_vocab})")
        return tokens.to(self.device)

    # ------------------------------------------------------------------ running
    def forward(self, input, *, fwd_hooks: Sequence[Hook] = (), start_at_layer: int | None = None,
                stop_at_layer: int | None = None, return_type: str | None = "logits",
                past_kv_cache=None) -> Tensor:
        """Model forward with hooks. ``input`` is tokens, or residual ``[batch, pos, d_model]``
        entering layer ``start_at_layer`` (rotary models need nothing else; models with learned
        positions already have them inside the residual).

        ``past_kv_cache`` (from ``kv_cache``; only where ``supports_kv_cache``): ``input`` are
        the tokens that follow the cached positions; they take the absolute positions after
        them, and the cache is extended in place by their keys and values."""
        if past_kv_cache is not None:
            return self._forward_cached(input, fwd_hooks, stop_at_layer, return_type, past_kv_cache)
        kwargs = {}
        if stop_at_layer is not None:
            kwargs["stop_at_layer"] = stop_at_layer
        if start_at_layer is not None:
            if self._emulate_start_at_layer(start_at_layer):
                tokens, put, keep = self._start_emulation(input, start_at_layer)
                hooks = [put] + [(keep(n) if callable(n) else n, f) for n, f in fwd_hooks
                                 if callable(n) or keep(n)]
                return self.model.run_with_hooks(tokens, fwd_hooks=hooks, return_type=return_type, **kwargs)
            kwargs["start_at_layer"] = start_at_layer
        return self.model.run_with_hooks(input, fwd_hooks=list(fwd_hooks), return_type=return_type, **kwargs)

    # ------------------------------------------------------------------ key/value cache
    @property
    def supports_kv_cache(self) -> bool:
        """Can ``forward`` continue from a key/value cache with hooks at absolute positions?

        HookedTransformer can (its ``past_kv_cache``; hooks see the new positions only,
        ``hook_pattern`` as ``[batch, head, new, cached + new]``). A TransformerBridge runs
        Hugging Face's attention with Hugging Face's cache objects, whose stored keys are taken
        after rotary embedding; we do not use it (the engine falls back to full forwards)."""
        return not self.is_bridge and self.positional != "shortformer"

    def kv_cache(self, keys: Sequence[Tensor] | None = None, values: Sequence[Tensor] | None = None,
                 batch: int = 1):
        """A key/value cache: empty (``batch`` rows), or holding ``keys[l]`` / ``values[l]``
        ``[batch, pos, kv_head, d_head]`` for every layer ``l`` (hook_k / hook_v values; keys
        before rotary, or after it when made inside ``lean_cached_forward``)."""
        if not self.supports_kv_cache:
            raise NotImplementedError("this model class has no key/value cache forward")
        from transformer_lens.cache.key_value_cache import TransformerLensKeyValueCache

        from .models.cached_forward import KEYS_ROTATED, lean_active

        cache = TransformerLensKeyValueCache.init_cache(self.cfg, self.device, batch)
        rotated = lean_active(self.model)
        for entry in cache.entries:
            setattr(entry, KEYS_ROTATED, rotated)
        if keys is not None:
            n = keys[0].shape[0]
            for entry, k, v in zip(cache.entries, keys, values):
                entry.past_keys, entry.past_values = k, v
            cache.previous_attention_mask = torch.ones((n, keys[0].shape[1]), dtype=torch.long,
                                                       device=self.device)
        return cache

    def lean_cached_forward(self):
        """Context manager for a run of key/value-cache forwards: inside it, HookedTransformer's
        cached forward uses weight layouts made once, keeps keys after rotary and multiplies
        grouped queries without expanding the cache (``models.cached_forward``; same hook
        values). A no-op where the model class or configuration is not covered, or where
        ``self.lean_cache`` is False (TransformerLens's own forward: the slow twin)."""
        import contextlib

        if not self.lean_cache or not self.supports_kv_cache:
            return contextlib.nullcontext()
        from .models.cached_forward import LeanCachedForward

        return LeanCachedForward(self.model)

    def _forward_cached(self, tokens, fwd_hooks, stop_at_layer, return_type, cache):
        """HookedTransformer's blocks with ``past_kv_cache`` and no attention mask (the fast
        path: rotary and causal masks offset by the cache length, as in the dense forward);
        the embedding, with positions offset by the cache length, computed under the hooks."""
        if not self.supports_kv_cache:
            raise NotImplementedError("this model class has no key/value cache forward")
        from .models.cached_forward import KEYS_ROTATED, lean_active

        model = self.model
        if self.n_layers and getattr(cache.entries[0], KEYS_ROTATED, False) and not lean_active(model):
            raise RuntimeError("this key/value cache was made inside lean_cached_forward (keys after rotary); "
                               "continue it inside such a block")
        offset = cache.entries[0].past_keys.shape[1] if self.n_layers else 0
        with model.hooks(fwd_hooks=list(fwd_hooks)):
            embed = model.hook_embed(model.embed(tokens))
            resid = model.get_residual(embed, offset, tokens=tokens, return_shortformer_pos_embed=False)
            return model(resid, start_at_layer=0, stop_at_layer=stop_at_layer, return_type=return_type,
                         past_kv_cache=cache)

    @staticmethod
    def kv_cache_tensors(cache) -> tuple[list[Tensor], list[Tensor]]:
        """``(keys, values)`` per layer of a cache made by ``kv_cache``."""
        return [e.past_keys for e in cache.entries], [e.past_values for e in cache.entries]

    # TransformerBridge before TransformerLens 4 refuses ``start_at_layer``; there we feed
    # placeholder tokens and overwrite ``blocks.{l}.hook_resid_pre`` with the given residual
    # (the same function: layers >= l see only the residual and positions), and hide the
    # hooks of the earlier layers, which run on the placeholders.
    def _emulate_start_at_layer(self, layer: int) -> bool:
        self._layer(layer)
        if not self.is_bridge:
            return False
        if not hasattr(self, "_bridge_start_native"):
            from .models.hooked import transformer_lens_major

            self._bridge_start_native = transformer_lens_major() >= 4
        return not self._bridge_start_native

    def _start_emulation(self, resid: Tensor, layer: int):
        layer = self._layer(layer)
        if resid.ndim != 3 or resid.shape[-1] != self.d_model:
            raise ValueError(f"start_at_layer needs a residual [batch, pos, d_model], got {tuple(resid.shape)}")
        tokens = torch.zeros(resid.shape[:2], dtype=torch.long, device=resid.device)

        def put(x, hook):
            return resid.to(x.dtype)

        def runs(name: str) -> bool:  # does this hook point run on the given residual?
            if name.startswith("blocks."):
                return int(name.split(".")[1]) >= layer
            return not name.startswith(("hook_embed", "hook_pos_embed", "embed.", "pos_embed.", "rotary_emb."))

        def keep(name_or_filter):
            if callable(name_or_filter):
                return lambda n: runs(n) and name_or_filter(n)
            return runs(name_or_filter)

        return tokens, (self.hook_name("resid_pre", layer), put), keep

    def final_resid(self, input, *, fwd_hooks: Sequence[Hook] = (),
                    start_at_layer: int | None = None) -> Float[Tensor, "batch pos d_model"]:
        """Residual stream after the last block (before the final norm), skipping the
        unembedding of every position (``logits_from_resid`` decodes the ones needed).

        HookedTransformer returns it for ``stop_at_layer=n_layers``. TransformerBridge runs
        the whole model there and returns nothing, so on a bridge the last block's
        ``hook_resid_post`` is taken (after every other hook there) and the forward stopped.
        """
        if not self.is_bridge:
            return self.forward(input, fwd_hooks=fwd_hooks, start_at_layer=start_at_layer,
                                stop_at_layer=self.n_layers, return_type=None)
        store = {}

        def grab(x, hook):
            store["resid"] = x
            raise _StopForward

        try:
            self.forward(input, fwd_hooks=[*fwd_hooks, (self.hook_name("resid_post", self.n_layers - 1), grab)],
                         start_at_layer=start_at_layer, return_type=None)
        except _StopForward:
            pass
        return store["resid"]

    def forward_to(self, input, stop: int, *, fwd_hooks: Sequence[Hook] = (),
                   start_at_layer: int | None = None) -> Float[Tensor, "batch pos d_model"]:
        """The residual entering layer ``stop`` (``stop = n_layers``: after the last block,
        before the final norm), from the tokens or from the residual ``input`` entering
        ``start_at_layer``."""
        if stop < self.n_layers:
            return self.forward(input, fwd_hooks=fwd_hooks, start_at_layer=start_at_layer, stop_at_layer=stop,
                                return_type=None)
        return self.final_resid(input, fwd_hooks=fwd_hooks, start_at_layer=start_at_layer)

    @property
    def resid_mid_on_residual_path(self) -> bool:
        """Whether ``hook_resid_mid`` is the residual stream itself (HookedTransformer), so
        its gradient includes the residual path. On a TransformerBridge it is the MLP norm's
        input: editing it reaches only the MLP, and its gradient misses the skip path."""
        return not self.is_bridge

    def run_with_cache(self, input, names: Iterable[str] | Callable[[str], bool] | None = None,
                       **kwargs):
        """``(logits, cache)``; ``names`` is a list of hook names or a filter function."""
        if names is not None and not callable(names):
            wanted = set(names)
            names_filter = lambda n: n in wanted  # noqa: E731
        else:
            names_filter = names
        start = kwargs.get("start_at_layer")
        if start is not None and self._emulate_start_at_layer(start):
            kwargs.pop("start_at_layer")
            tokens, put, keep = self._start_emulation(input, start)
            with self.model.hooks(fwd_hooks=[put]):
                return self.model.run_with_cache(tokens, names_filter=keep(names_filter or (lambda n: True)),
                                                 **kwargs)
        return self.model.run_with_cache(input, names_filter=names_filter, **kwargs)

    @contextlib.contextmanager
    def hooks(self, fwd_hooks: Sequence[Hook]):
        """Context manager that keeps ``fwd_hooks`` attached (removed on exit)."""
        with self.model.hooks(fwd_hooks=list(fwd_hooks)):
            yield self.model

    # ------------------------------------------------------------------ edge inputs
    @property
    def edge_input_support(self) -> str | None:
        """None when the model can run with per-receiver input copies (``edge_inputs``),
        else the reason it cannot."""
        if self.is_bridge:
            return ("edge interventions need HookedTransformer (per-head input copies under "
                    "TransformerBridge are not supported for every architecture); load with --backend hooked")
        if self.has_post_norms:
            return ("edge interventions need additive sublayer outputs; this model normalises the attention "
                    "and MLP outputs (post-norms), so a head's contribution to the residual is not additive")
        return None

    @contextlib.contextmanager
    def edge_inputs(self):
        """Run with one copy of the residual per receiver input: ``hook_q_input`` /
        ``hook_k_input`` / ``hook_v_input`` ``[batch, pos, head, d_model]`` (one per *query*
        head: grouped key/value heads are ungrouped) and ``hook_mlp_in`` ``[batch, pos,
        d_model]``, all taken before the norms. The function computed is unchanged."""
        reason = self.edge_input_support
        if reason is not None:
            raise NotImplementedError(reason)
        flags = ("use_split_qkv_input", "ungroup_grouped_query_attention", "use_hook_mlp_in")
        old = {f: getattr(self.cfg, f) for f in flags}
        try:
            for f in flags:
                setattr(self.cfg, f, True)
            yield self
        finally:
            for f, v in old.items():
                setattr(self.cfg, f, v)

    def embed(self, tokens: Int[Tensor, "batch pos"]) -> Float[Tensor, "batch pos d_model"]:
        """The value at ``hook_embed`` (token embeddings, any model-specific scaling included)."""
        store = {}

        def grab(x, hook):
            store["e"] = x.detach().clone()
            raise _StopForward

        try:
            self.forward(tokens, fwd_hooks=[(self.hook_name("embed"), grab)], return_type=None)
        except _StopForward:
            pass
        return store["e"]


class _StopForward(Exception):
    pass


def as_adapter(model) -> ModelAdapter:
    """Wrap ``model`` (or pass an adapter through)."""
    return model if isinstance(model, ModelAdapter) else ModelAdapter(model)
