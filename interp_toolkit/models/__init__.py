"""Model loading: offline real models, tiny random models, hub models."""

from .loader import load_model
from .registry import DEFAULT_MODEL, OFFLINE_MODELS, ModelNotAvailableError
from .tiny import tiny_config, tiny_model

__all__ = ["load_model", "tiny_model", "tiny_config", "OFFLINE_MODELS", "DEFAULT_MODEL", "ModelNotAvailableError"]
