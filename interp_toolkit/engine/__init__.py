"""The batched masked forward (one engine behind every analysis)."""

from .gradients import masked_forward_with_grads
from .kernel import DEFAULT_MAX_BATCH_TOKENS, Reference, masked_forward
from .masks import SITES, MaskError, MaskSpec
from .metrics import KLToClean, LogitDiff, LogProb, Metric, kl_divergence
from .protocol import EngineAdapter
from .reference import masked_forward_loop

__all__ = ["MaskSpec", "MaskError", "SITES", "Reference", "masked_forward", "masked_forward_loop",
           "masked_forward_with_grads", "DEFAULT_MAX_BATCH_TOKENS", "Metric", "LogitDiff", "LogProb",
           "KLToClean", "kl_divergence", "EngineAdapter"]
