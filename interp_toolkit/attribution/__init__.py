"""Attribution patching and integrated gradients (see ``core`` for sign conventions)."""

from ..engine.metrics import KLToClean, LogitDiff, LogProb, Metric
from .core import (
    ATTRIBUTION_SITES,
    AttributionResult,
    Run,
    attribution_patching,
    exact_effects,
    integrated_gradients,
)

__all__ = ["attribution_patching", "integrated_gradients", "exact_effects", "AttributionResult", "Run",
           "ATTRIBUTION_SITES", "Metric", "LogitDiff", "LogProb", "KLToClean"]
