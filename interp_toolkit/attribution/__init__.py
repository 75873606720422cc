"""Attribution patching (gradient × activation difference), integrated gradients and exact
effects, one module per method behind a small registry (``METHODS``, ``attribute``).

Both estimate, for many components at once, the *patching effect* of a component c:

    denoising (default):  effect(c) = M(corrupt run with c := its clean value) − M(corrupt run)
    noising:              effect(c) = M(clean run with c := its corrupt value) − M(clean run)

i.e. always "metric after the patch minus metric of the run patched into" (the base run:
corrupt for denoising, clean for noising); a positive effect means the patch raises the
metric. With the logit difference of the clean answer as M, a component important for the
clean behaviour has a positive denoising effect and a negative noising effect.

- **Attribution patching** (first-order Taylor expansion around the base run):
  ``effect(c) ≈ (a_other(c) − a_base(c)) · ∂M/∂a(c) |_base`` — one forward and one backward
  of the base run, plus one forward of the other run, for all components together. Exact to
  first order in the activation difference.
- **Integrated gradients** average the gradient along a straight path from the base to the
  other run (midpoint rule, ``steps`` points, batched as rows of one masked forward):
  ``path="activations"`` (default) interpolates one site at one layer at a time
  (``a = a_base + α·(a_other − a_base)`` through a soft keep mask ``1 − α`` with the other
  run as reference); per site and layer the scores then add up to the exact effect of
  patching that whole site at that layer (completeness), so a site with one component per
  layer (``mlp_out`` without ``per_position``) gets its exact effect as steps grow.
  ``path="inputs"`` interpolates the token embeddings (EAP-IG style) and takes every
  site's gradient from the same batch.
- ``exact_effects`` computes the effects themselves (one masked row per component), in the
  same layout, as ground truth.

Metrics (``interp_toolkit.engine.metrics``): ``LogitDiff``, ``LogProb``, ``KLToClean`` or any
differentiable ``[rows, vocab] -> [rows]`` function of the last position's logits. KL to the
clean output is at its minimum (zero gradient) on the clean run: in the noising direction
attribution patching of KL is identically zero, and near the clean run (small corruptions)
its error is of the same order as the effect; prefer integrated gradients there.

Component layouts (``per_position=False`` / ``True``)::

    z           [layer, head]           / [layer, pos, head]   (a head's output, all d_head)
    mlp_out, attn_out, resid_pre/mid/post
                [layer]                 / [layer, pos]
    pattern     [layer, head, dest, src]                       (attention edges)

Modules: ``common`` (runs, checks, layouts), ``result`` (``AttributionResult``),
``taylor`` (attribution patching), ``integrated`` (integrated gradients), ``exact``; ``plot``.
"""

from typing import Callable

from ..engine.metrics import KLToClean, LogitDiff, LogProb, Metric
from .taylor import attribution_patching
from .common import ATTRIBUTION_SITES, DIRECTIONS, Run
from .exact import exact_effects
from .integrated import integrated_gradients
from .result import AttributionResult

#: method name -> function(model, clean, corrupt, metric, sites, **options) -> AttributionResult
METHODS: dict[str, Callable[..., AttributionResult]] = {
    "attribution_patching": attribution_patching,
    "integrated_gradients": integrated_gradients,
    "exact": exact_effects,
}


def attribute(model, clean, corrupt, metric, sites=("z", "mlp_out", "pattern"), *,
              method: str = "attribution_patching", **options) -> AttributionResult:
    """Scores of every component by ``method`` (a key of ``METHODS``); ``options`` go to it."""
    if method not in METHODS:
        raise ValueError(f"unknown attribution method {method!r}; choose from {list(METHODS)}")
    return METHODS[method](model, clean, corrupt, metric, sites, **options)


__all__ = ["attribute", "METHODS", "attribution_patching", "integrated_gradients", "exact_effects",
           "AttributionResult", "Run", "ATTRIBUTION_SITES", "DIRECTIONS", "Metric", "LogitDiff", "LogProb",
           "KLToClean"]
