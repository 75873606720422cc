"""Integrated gradients from the base run to the other run: the gradient averaged over
``steps`` points of a straight path (midpoint rule), batched as rows of masked forwards;
``path="activations"`` (one site and layer at a time: completeness per layer) or
``path="inputs"`` (interpolated token embeddings, every site from one batch)."""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import Tensor

from ..adapter import as_adapter
from ..engine import MaskSpec, Reference
from ..engine.gradients import ensure_eval, masked_forward_with_grads
from .common import _base_other, _capture, _check_sites, _layers, _reduce, _result, _run_masks
from .result import AttributionResult


def integrated_gradients(model, clean, corrupt, metric: Callable[[Tensor], Tensor],
                         sites: Sequence[str] = ("z", "mlp_out", "pattern"), *, steps: int = 16,
                         direction: str = "denoising", path: str = "activations", per_position: bool = False,
                         layers: Sequence[int] | None = None, max_batch_tokens: int | None = None) -> AttributionResult:
    """Integrated gradients from the base run to the other run, ``steps`` points batched as
    rows of masked forwards (module docstring). Arguments as ``attribution_patching``, plus:

    Args:
        steps: number of interpolation points (midpoint rule).
        path: ``"activations"`` (one site and layer at a time; completeness per layer) or
            ``"inputs"`` (interpolate the token embeddings; one batch for every site).
        max_batch_tokens: the kernel's memory budget per forward.
    """
    adapter = as_adapter(model)
    ensure_eval(adapter)
    sites = _check_sites(adapter, sites)
    if path not in ("activations", "inputs"):
        raise ValueError(f"path must be 'activations' or 'inputs', got {path!r}")
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive int, got {steps!r}")
    base, other = _base_other(adapter, clean, corrupt, direction)
    layers = _layers(adapter, layers)
    hooks = [adapter.hook_name(s, l) for s in sites for l in layers]
    other_value, other_acts, _ = _capture(adapter, other, metric, hooks)
    base_value, base_acts, _ = _capture(adapter, base, metric, hooks)
    dtype = adapter.dtype
    alphas = (torch.arange(steps, dtype=torch.float64) + 0.5) / steps
    grad_sum: dict[str, Tensor] = {}

    def accumulate(hook, rows, act, grad):
        grad_sum[hook] = grad_sum.get(hook, 0) + grad.sum(0, keepdim=True)
        return None

    if path == "activations":
        for s in sites:
            n_keep_axes = {"z": 2, "pattern": 3}.get(s, 1)
            for l in layers:
                h = adapter.hook_name(s, l)
                entries, values = _run_masks(base, steps)
                entries[(s, l)] = (1 - alphas).to(torch.float32).reshape(steps, *([1] * n_keep_axes))
                values[h] = other_acts[h]
                masked_forward_with_grads(adapter, base.tokens, MaskSpec(steps, entries), metric, [h],
                                          reference=Reference(values), prefix_reuse=True, reduce=accumulate,
                                          max_batch_tokens=max_batch_tokens)
    else:
        e_base = base.embed if base.embed is not None else adapter.embed(base.tokens)[0]
        e_other = other.embed if other.embed is not None else adapter.embed(other.tokens)[0]
        a = alphas.to(dtype=dtype, device=adapter.device)[:, None, None]
        path_embed = e_base[None] + a * (e_other - e_base)[None]
        spec = MaskSpec(steps, {("embed", None): torch.zeros(steps, 1, dtype=torch.bool)})
        masked_forward_with_grads(adapter, base.tokens, spec, metric, hooks,
                                  reference=Reference({"hook_embed": path_embed}), reduce=accumulate,
                                  max_batch_tokens=max_batch_tokens)
    scores = {}
    for s in sites:
        per_layer = []
        for l in layers:
            h = adapter.hook_name(s, l)
            mean_grad = grad_sum[h] / steps
            per_layer.append(_reduce(s, per_position, (other_acts[h] - base_acts[h]) * mean_grad)[0])
        scores[s] = torch.stack(per_layer).detach()
    return _result(adapter, "integrated_gradients", direction, scores, sites, per_position, layers,
                   base.tokens.shape[1], base_value, other_value, metric, steps=steps, path=path)
