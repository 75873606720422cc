"""Harsanyi AND-OR interactions between input words, in one model or shared across models.

Pipeline: ``players`` (words → token spans per tokenizer) → ``baselines`` (embedding for masked
words) → ``values`` (v(x_S) for all 2^n subsets, one batched masked-input forward through the
engine) → ``sparsify`` (γ, q making ‖I_and‖₁ + ‖I_or‖₁ small; exact LP or first-order) →
``analysis`` (salient sets, orders, cancellation, Shapley, sharing) → ``plots``/``report``.
``transforms`` holds the fast O(n·2^n) Möbius/zeta transforms; ``joint`` the joint extraction
over models. See DESIGN §4.
"""

from .analysis import (aggregate, cancellation, order_distribution, salient, shapley_from_interactions, sharing,
                       sharing_controls, subsample_cancellation)
from .baselines import fixed_baseline, learn_baseline
from .joint import joint_scales, joint_sparsify
from .pipeline import compare_models, compute_interactions
from .players import PlayerError, Players, PlayerTokens, subset_masks
from .result import Baseline, Comparison, InteractionResult, Sparsification
from .sparsify import decompose, merge_singletons, noise_bound, sparsify, sparsify_batch
from .transforms import and_interactions, mobius, or_interactions, or_synthesis, zeta
from .values import log_odds, subset_values, subset_values_loop

__all__ = [
    "Players", "PlayerTokens", "PlayerError", "subset_masks", "fixed_baseline", "learn_baseline",
    "subset_values", "subset_values_loop", "log_odds", "sparsify", "sparsify_batch", "decompose",
    "noise_bound", "joint_sparsify", "compute_interactions", "compare_models", "Baseline",
    "Sparsification", "InteractionResult", "Comparison", "salient", "order_distribution",
    "cancellation", "shapley_from_interactions", "sharing", "aggregate", "mobius", "zeta",
    "and_interactions", "or_interactions", "or_synthesis", "sharing_controls", "subsample_cancellation",
    "joint_scales", "merge_singletons",
]
