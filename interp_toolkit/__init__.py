"""interp_toolkit: mechanistic interpretability on one batched masked forward."""

from .models import DEFAULT_MODEL, OFFLINE_MODELS, ModelNotAvailableError, load_model, tiny_model

__version__ = "0.1.0"
__all__ = ["load_model", "tiny_model", "OFFLINE_MODELS", "DEFAULT_MODEL", "ModelNotAvailableError"]
