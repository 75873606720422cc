"""One-call entry points: ``quick_lens`` (one prompt, every layer) and lens lookup by name.

Tuned lenses are not shipped (SmolLM2's is ~40 MB); ``benchmarks/lens_train.py`` trains one
and stores it under ``$INTERP_TOOLKIT_CACHE/lenses/<model>/`` where ``get_lens`` finds it.
"""

from __future__ import annotations

from pathlib import Path

from ..adapter import as_adapter
from .decode import run_lens
from .lenses import LogitLens
from .results import LensResult
from .tuned import TunedLens


def lens_dir(model_name: str) -> Path:
    """``$INTERP_TOOLKIT_CACHE/lenses/<model_name>`` (where trained tuned lenses are kept)."""
    from ..models.cache import cache_root

    return cache_root() / "lenses" / model_name


def get_lens(model, lens="logit", convention: str = "tuned"):
    """A lens object from ``"logit"``, ``"tuned"`` (the cached lens of this model), a lens
    directory, or a lens object (passed through)."""
    if not isinstance(lens, (str, Path)):
        return lens
    if lens == "logit":
        return LogitLens()
    adapter = as_adapter(model)
    path = lens_dir(adapter.name) if lens == "tuned" else Path(lens)
    if not (path / "config.json").exists():
        hint = (f"no tuned lens for {adapter.name!r} in {path}; train one with "
                f"`python benchmarks/lens_train.py --model {adapter.name}`") if lens == "tuned" else \
            f"{path} holds no tuned lens (config.json + lens.safetensors)"
        raise FileNotFoundError(hint)
    return TunedLens.load(path, adapter=adapter, convention=convention)


def quick_lens(model, prompt: str, lens="logit", *, site: str = "resid_post", convention: str = "tuned",
               k: int = 5) -> LensResult:
    """Decode every layer at every position of one prompt (``report()`` shows the heatmap)."""
    if not isinstance(prompt, str) or not prompt:
        raise ValueError("quick_lens takes one non-empty prompt string")
    return run_lens(model, prompt, get_lens(model, lens, convention), site=site, k=k, progress=False)
