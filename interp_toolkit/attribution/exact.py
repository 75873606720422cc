"""Exact patching effects, one masked row per component, in the layout of the estimates
(the ground truth they are tested against)."""

from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
from torch import Tensor

from ..adapter import as_adapter
from ..engine import MaskSpec, Reference, masked_forward
from ..engine.gradients import ensure_eval
from .common import _base_other, _capture, _check_sites, _layers, _layout, _result, _run_masks
from .result import AttributionResult


@torch.no_grad()
def exact_effects(model, clean, corrupt, metric: Callable[[Tensor], Tensor],
                  sites: Sequence[str] = ("z", "mlp_out", "pattern"), *, direction: str = "denoising",
                  per_position: bool = False, layers: Sequence[int] | None = None,
                  max_batch_tokens: int | None = None, max_rows_per_call: int = 4096) -> AttributionResult:
    """The patching effect of every component, one masked row each, in the layout of
    ``attribution_patching`` (ground truth for the estimates)."""
    adapter = as_adapter(model)
    ensure_eval(adapter)
    sites = _check_sites(adapter, sites)
    base, other = _base_other(adapter, clean, corrupt, direction)
    layers = _layers(adapter, layers)
    n_pos, n_heads = base.tokens.shape[1], adapter.n_heads
    hooks = [adapter.hook_name(s, l) for s in sites for l in layers]
    other_value, other_acts, _ = _capture(adapter, other, metric, hooks)
    entries, values = _run_masks(base, 1)
    base_value = float(masked_forward(adapter, base.tokens, MaskSpec(1, entries), reference=Reference(values),
                                      output=metric)[0])
    scores = {}
    for s in sites:
        keep_shape, score_shape, _ = _layout(s, per_position, n_pos, n_heads)
        n_comp = math.prod(keep_shape)
        todo = torch.arange(n_comp)
        if s == "pattern":  # attention to later positions is zero in both runs: no effect
            todo = (~torch.ones(n_pos, n_pos, dtype=torch.bool).triu(1)).expand(n_heads, -1, -1)
            todo = todo.reshape(-1).nonzero()[:, 0]
        per_layer = []
        for l in layers:
            h = adapter.hook_name(s, l)
            eff = torch.zeros(n_comp, dtype=torch.float64)
            for start in range(0, len(todo), max_rows_per_call):
                comp = todo[start:start + max_rows_per_call]
                n = len(comp)
                entries, values = _run_masks(base, n)
                keep = torch.ones(n, n_comp, dtype=torch.bool)
                keep[torch.arange(n), comp] = False
                entries[(s, l)] = keep.reshape(n, *keep_shape)
                values[h] = other_acts[h]
                v = masked_forward(adapter, base.tokens, MaskSpec(n, entries), reference=Reference(values),
                                   output=metric, max_batch_tokens=max_batch_tokens, progress=False)
                eff[comp] = v.double().cpu() - base_value
            per_layer.append(eff.reshape(score_shape))
        scores[s] = torch.stack(per_layer)
    return _result(adapter, "exact", direction, scores, sites, per_position, layers, n_pos, base_value,
                   other_value, metric)
