"""Build TransformerLens models (HookedTransformer or TransformerBridge) from HF models."""

from __future__ import annotations

import warnings

import torch


def transformer_lens_major() -> int:
    import transformer_lens

    version = getattr(transformer_lens, "__version__", None)
    if version is None:
        from importlib.metadata import version as _v

        version = _v("transformer-lens")
    return int(str(version).split(".")[0])


def has_hooked_transformer() -> bool:
    try:
        from transformer_lens import HookedTransformer  # noqa: F401
    except ImportError:
        return False
    return True


def llama_config_from_hf(hf_config, *, device, dtype, default_prepend_bos: bool):
    """HookedTransformerConfig for a Llama-architecture HF config absent from TL's list."""
    from transformer_lens import HookedTransformerConfig

    rope = getattr(hf_config, "rope_parameters", None) or {}
    rotary_base = rope.get("rope_theta", getattr(hf_config, "rope_theta", 10000.0))
    n_heads = hf_config.num_attention_heads
    d_head = getattr(hf_config, "head_dim", None) or hf_config.hidden_size // n_heads
    n_kv = getattr(hf_config, "num_key_value_heads", n_heads)
    return HookedTransformerConfig(
        d_model=hf_config.hidden_size,
        d_head=d_head,
        n_heads=n_heads,
        d_mlp=hf_config.intermediate_size,
        n_layers=hf_config.num_hidden_layers,
        n_ctx=min(hf_config.max_position_embeddings, 8192),
        eps=hf_config.rms_norm_eps,
        d_vocab=hf_config.vocab_size,
        act_fn=hf_config.hidden_act,
        n_key_value_heads=n_kv if n_kv != n_heads else None,
        normalization_type="RMS",
        positional_embedding_type="rotary",
        rotary_dim=d_head,
        rotary_base=float(rotary_base),
        final_rms=True,
        gated_mlp=True,
        original_architecture="LlamaForCausalLM",
        tokenizer_prepends_bos=False,
        default_prepend_bos=default_prepend_bos,
        device=str(device),
        dtype=dtype,
    )


def _load_weights(model, state: dict, *, processing: bool, dtype) -> None:
    """Put converted weights into a HookedTransformer built without random init.

    Unprocessed weights are assigned in one ``load_state_dict(assign=True)`` (what
    ``load_and_process_state_dict`` does with every flag off, minus a per-key copy that
    takes seconds on a 135M-parameter model); processed weights go through TransformerLens.
    """
    if processing:
        model.load_and_process_state_dict(state, fold_ln=True, center_writing_weights=True,
                                          center_unembed=True, fold_value_biases=True,
                                          refactor_factored_attn_matrices=False)
        return
    state = model.fill_missing_keys(state)
    state = {k: v.detach().to(dtype).contiguous() for k, v in state.items()}
    result = model.load_state_dict(state, strict=False, assign=True)
    if result.missing_keys or result.unexpected_keys:
        raise RuntimeError(f"weights do not fit the model: missing {result.missing_keys[:5]}, "
                           f"unexpected {result.unexpected_keys[:5]}")


def hooked_from_hf(spec, hf, tok, *, device, dtype, processing: bool):
    """HookedTransformer from a loaded HF model (weights unprocessed unless ``processing``).

    The HookedTransformer is built without its random initialisation and receives the
    converted weights directly; for models TransformerLens knows (``spec.tl_name``) with
    ``processing`` this is ``HookedTransformer.from_pretrained``.
    """
    from transformer_lens import HookedTransformer

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if spec.tl_name is not None and processing:
            model = HookedTransformer.from_pretrained(
                spec.tl_name, hf_model=hf, tokenizer=tok, device=device, dtype=dtype,
                default_prepend_bos=spec.prepend_bos, refactor_factored_attn_matrices=False,
            )
        else:
            if spec.tl_name is not None:
                from transformer_lens import loading_from_pretrained as loading

                official = loading.get_official_model_name(spec.tl_name)
                cfg = loading.get_pretrained_model_config(
                    official, hf_cfg=hf.config.to_dict(), fold_ln=False, device=device,
                    dtype=dtype, default_prepend_bos=spec.prepend_bos)
                make_state = lambda: loading.get_pretrained_state_dict(official, cfg, hf, dtype=dtype)  # noqa: E731
            else:
                from transformer_lens.pretrained.weight_conversions.llama import convert_llama_weights

                cfg = llama_config_from_hf(hf.config, device=device, dtype=dtype,
                                           default_prepend_bos=spec.prepend_bos)
                make_state = lambda: convert_llama_weights(hf, cfg)  # noqa: E731
            cfg.init_weights = False
            model = HookedTransformer(cfg, tokenizer=tok, move_to_device=False)
            _load_weights(model, make_state(), processing=processing, dtype=dtype)
            model.to(device, print_details=False)
    model.eval()
    return model


def bridge_from_hf(spec, hf, tok, *, device, dtype, processing: bool):
    """TransformerBridge (TransformerLens >= 4) in compatibility mode from a loaded HF model."""
    from transformer_lens.model_bridge import TransformerBridge

    hf.config.architectures = [type(hf).__name__]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bridge = TransformerBridge.boot_transformers(
            spec.hf_name, hf_model=hf, tokenizer=tok, device=device, dtype=dtype
        )
        try:
            bridge.enable_compatibility_mode(no_processing=not processing)
        except TypeError:
            bridge.enable_compatibility_mode()
    bridge.cfg.default_prepend_bos = spec.prepend_bos
    bridge.eval()
    return bridge


def to_dtype(dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    return getattr(torch, str(dtype).replace("torch.", ""))
