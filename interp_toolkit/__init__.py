"""interp_toolkit: mechanistic interpretability on one batched masked forward."""

from ._version import __version__
from .models import DEFAULT_MODEL, OFFLINE_MODELS, ModelNotAvailableError, load_model, tiny_model

__all__ = ["load_model", "tiny_model", "OFFLINE_MODELS", "DEFAULT_MODEL", "ModelNotAvailableError"]
