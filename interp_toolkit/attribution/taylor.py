"""Attribution patching: the first-order Taylor estimate of every component's patching effect,
``effect(c) ≈ (a_other(c) − a_base(c)) · ∂M/∂a(c) |_base`` — one forward and one backward of
the base run plus one forward of the other run, for all components together."""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import Tensor

from ..adapter import as_adapter
from ..engine.gradients import ensure_eval
from .common import _base_other, _capture, _check_sites, _layers, _reduce, _result
from .result import AttributionResult


def attribution_patching(model, clean, corrupt, metric: Callable[[Tensor], Tensor],
                         sites: Sequence[str] = ("z", "mlp_out", "pattern"), *, direction: str = "denoising",
                         per_position: bool = False, layers: Sequence[int] | None = None) -> AttributionResult:
    """First-order estimate of every component's patching effect (module docstring).

    Args:
        model: HookedTransformer, TransformerBridge or ModelAdapter, in eval mode.
        clean, corrupt: prompts of equal length (tokens, text or ``Run``).
        metric: differentiable ``[rows, vocab] -> [rows]`` of the last position's logits.
        sites: any of ``ATTRIBUTION_SITES``.
        direction: ``"denoising"`` (base = corrupt run) or ``"noising"`` (base = clean run).
        per_position: split head and layer scores by position.
        layers: restrict to these layers.
    """
    adapter = as_adapter(model)
    ensure_eval(adapter)
    sites = _check_sites(adapter, sites)
    base, other = _base_other(adapter, clean, corrupt, direction)
    layers = _layers(adapter, layers)
    hooks = [adapter.hook_name(s, l) for s in sites for l in layers]
    other_value, other_acts, _ = _capture(adapter, other, metric, hooks)
    base_value, base_acts, base_grads = _capture(adapter, base, metric, hooks)
    scores = {}
    for s in sites:
        per_layer = []
        for l in layers:
            h = adapter.hook_name(s, l)
            per_layer.append(_reduce(s, per_position, (other_acts[h] - base_acts[h]) * base_grads[h])[0])
        scores[s] = torch.stack(per_layer).detach()
    return _result(adapter, "attribution_patching", direction, scores, sites, per_position, layers,
                   base.tokens.shape[1], base_value, other_value, metric)
