"""Attribution patching (gradient × activation difference) and integrated gradients.

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
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch
from jaxtyping import Float
from torch import Tensor

from ..adapter import ModelAdapter, as_adapter
from ..core import Result, register_result
from ..engine import MaskError, MaskSpec, Reference, masked_forward
from ..engine.gradients import ensure_eval, masked_forward_with_grads
from .plot import plot_attribution

ATTRIBUTION_SITES = ("z", "pattern", "mlp_out", "attn_out", "resid_pre", "resid_mid", "resid_post")
_POS_SITES = ("mlp_out", "attn_out", "resid_pre", "resid_mid", "resid_post")
DIRECTIONS = ("denoising", "noising")


# ---------------------------------------------------------------------------- inputs
@dataclass
class Run:
    """One forward's input: a prompt, optionally with its token embeddings replaced.

    Attributes:
        tokens: ``[pos]`` or ``[1, pos]`` token ids (or a string).
        embed: optional ``[pos, d_model]`` values for ``hook_embed`` (e.g. the clean
            embedding plus noise: a corruption that is not a different prompt).
    """

    tokens: Tensor | str
    embed: Tensor | None = None


def _as_run(adapter: ModelAdapter, x) -> Run:
    run = x if isinstance(x, Run) else Run(x)
    tokens = adapter.as_tokens(run.tokens)
    if tokens.shape[0] != 1:
        raise MaskError(f"attribution takes one prompt per run; got a batch of {tokens.shape[0]}")
    embed = run.embed
    if embed is not None:
        embed = torch.as_tensor(embed).to(device=adapter.device, dtype=adapter.dtype)
        if embed.ndim == 3 and embed.shape[0] == 1:
            embed = embed[0]
        if embed.shape != (tokens.shape[1], adapter.d_model):
            raise MaskError(f"Run.embed must be [pos={tokens.shape[1]}, d_model={adapter.d_model}], "
                            f"got {tuple(embed.shape)}")
        if torch.isnan(embed).any():
            raise MaskError("Run.embed contains NaN")
    return Run(tokens, embed)


def _run_masks(run: Run, n_rows: int) -> tuple[dict, dict]:
    """MaskSpec entries and reference values that make ``n_rows`` rows of ``run``."""
    if run.embed is None:
        return {}, {}
    return {("embed", None): torch.zeros(n_rows, 1, dtype=torch.bool)}, {"hook_embed": run.embed[None]}


def _base_other(adapter, clean, corrupt, direction) -> tuple[Run, Run]:
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {DIRECTIONS}, got {direction!r}")
    clean, corrupt = _as_run(adapter, clean), _as_run(adapter, corrupt)
    if clean.tokens.shape != corrupt.tokens.shape:
        raise MaskError(f"clean and corrupt prompts differ in length: {clean.tokens.shape[1]} vs "
                        f"{corrupt.tokens.shape[1]} tokens")
    return (corrupt, clean) if direction == "denoising" else (clean, corrupt)


def _check_sites(adapter, sites) -> tuple[str, ...]:
    sites = (sites,) if isinstance(sites, str) else tuple(sites)
    for s in sites:
        if s not in ATTRIBUTION_SITES:
            raise ValueError(f"unknown attribution site {s!r}; choose from {ATTRIBUTION_SITES}")
    if not sites:
        raise ValueError("no sites given")
    if "resid_mid" in sites and not adapter.resid_mid_on_residual_path:
        raise ValueError("resid_mid attribution needs HookedTransformer: a TransformerBridge's hook_resid_mid "
                         "is the MLP norm's input, so its gradient misses the residual path (use attn_out)")
    return sites


def _layers(adapter, layers) -> list[int]:
    out = list(range(adapter.n_layers)) if layers is None else [int(l) for l in layers]
    for l in out:
        if not 0 <= l < adapter.n_layers:
            raise MaskError(f"layer {l} out of range for a {adapter.n_layers}-layer model")
    return out


# ---------------------------------------------------------------------------- layouts
def _layout(site: str, per_position: bool, n_pos: int, n_heads: int):
    """(per-component keep shape, score shape, axis names after 'layer'); the flat index of a
    component in the keep shape equals its flat index in the score shape."""
    if site == "z":
        return ((n_pos, n_heads), (n_pos, n_heads), ("pos", "head")) if per_position else \
            ((1, n_heads), (n_heads,), ("head",))
    if site == "pattern":
        return (n_heads, n_pos, n_pos), (n_heads, n_pos, n_pos), ("head", "dest", "src")
    return ((n_pos,), (n_pos,), ("pos",)) if per_position else ((1,), (), ())


def _reduce(site: str, per_position: bool, x: Tensor) -> Tensor:
    """Elementwise products ``[rows, *activation]`` -> component scores ``[rows, *score]``."""
    if site == "pattern":
        return x
    x = x.sum(-1)  # d_head or d_model
    return x if per_position else x.sum(1)


# ---------------------------------------------------------------------------- result
@register_result
@dataclass
class AttributionResult(Result):
    """Scores per site (see the module docstring for layouts and sign conventions).

    Attributes:
        method: ``"attribution_patching"``, ``"integrated_gradients"`` or ``"exact"``.
        direction: ``"denoising"`` or ``"noising"``.
        scores: site -> tensor ``[layer, ...]`` (layers as in ``layers``).
        axes: site -> axis names of its scores.
        layers: the model layers along each score's first axis.
        base_value / other_value: the metric on the base run / on the other run.
        metric: a description of the metric.
        steps / path: integrated-gradients settings (None otherwise).
        meta: model identity (name, dtype, ...).
    """

    method: str
    direction: str
    scores: dict[str, Tensor]
    axes: dict[str, tuple[str, ...]]
    layers: list[int]
    base_value: float
    other_value: float
    metric: str
    steps: int | None = None
    path: str | None = None
    meta: dict = field(default_factory=dict)

    kind = "attribution"
    format_version = 1
    title = "Attribution"

    @property
    def total_effect(self) -> float:
        """``M(other run) − M(base run)``: the effect of patching everything."""
        return self.other_value - self.base_value

    def top(self, k: int = 10, site: str | None = None) -> list[tuple[str, tuple[int, ...], float]]:
        """The ``k`` components with the largest |score|: ``(site, (layer, ...), score)``."""
        items = []
        for s, t in self.scores.items():
            if site is not None and s != site:
                continue
            flat = t.reshape(-1)
            n = min(k, flat.numel())
            idx = flat.abs().topk(n).indices
            for i in idx.tolist():
                index = list(torch.unravel_index(torch.tensor(i), t.shape))
                index[0] = torch.tensor(self.layers[int(index[0])])
                items.append((s, tuple(int(j) for j in index), float(flat[i])))
        return sorted(items, key=lambda x: -abs(x[2]))[:k]

    def summary(self) -> str:
        lines = [f"{self.method} ({self.direction}), metric {self.metric}: base {self.base_value:.4g}, "
                 f"other {self.other_value:.4g}, total effect {self.total_effect:+.4g}"]
        lines += [f"  {site:<10} {index}  {score:+.4g}" for site, index, score in self.top(10)]
        return "\n".join(lines)

    def _plots(self):
        """One heatmap per site (``plot(site)``)."""
        return {s: functools.partial(plot_attribution, site=s) for s in self.scores}

    def to_dict(self) -> dict:
        d = super().to_dict()
        d["axes"] = {s: list(a) for s, a in self.axes.items()}
        d["dtypes"] = {s: str(t.dtype).replace("torch.", "") for s, t in self.scores.items()}
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "AttributionResult":
        d = dict(d)
        dtypes = d.pop("dtypes", {})
        d["scores"] = {s: torch.tensor(v, dtype=getattr(torch, dtypes.get(s, "float32"))) for s, v in d["scores"].items()}
        d["axes"] = {s: tuple(a) for s, a in d["axes"].items()}
        return cls(**d)


def _result(adapter, method, direction, scores, sites, per_position, layers, n_pos, base_value, other_value,
            metric, steps=None, path=None) -> AttributionResult:
    axes = {s: ("layer",) + _layout(s, per_position, n_pos, adapter.n_heads)[2] for s in sites}
    return AttributionResult(method=method, direction=direction, scores=scores, axes=axes, layers=layers,
                             base_value=float(base_value), other_value=float(other_value), metric=repr(metric),
                             steps=steps, path=path, meta=adapter.meta)


def _capture(adapter, run: Run, metric, hooks: list[str]):
    """Metric value, activations and gradients (``[1, ...]`` each) of one run."""
    entries, values = _run_masks(run, 1)
    vals, acts, grads = masked_forward_with_grads(adapter, run.tokens, MaskSpec(1, entries), metric, hooks,
                                                  reference=Reference(values))
    return float(vals[0]), acts, grads


# ---------------------------------------------------------------------------- methods
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
