"""The batched masked forward (one engine behind every analysis)."""

from .kernel import DEFAULT_MAX_BATCH_TOKENS, Reference, masked_forward
from .masks import SITES, MaskError, MaskSpec
from .reference import masked_forward_loop

__all__ = ["MaskSpec", "MaskError", "SITES", "Reference", "masked_forward", "masked_forward_loop",
           "DEFAULT_MAX_BATCH_TOKENS"]
