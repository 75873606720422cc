"""What the attribution methods share: runs (prompts, optionally with replaced embeddings),
argument checks, component layouts, one capture of a run's activations and gradients, and
the result builder.

Component layouts (``per_position=False`` / ``True``)::

    z           [layer, head]           / [layer, pos, head]   (a head's output, all d_head)
    mlp_out, attn_out, resid_pre/mid/post
                [layer]                 / [layer, pos]
    pattern     [layer, head, dest, src]                       (attention edges)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ..adapter import ModelAdapter
from ..engine import MaskError, MaskSpec, Reference
from ..engine.gradients import masked_forward_with_grads
from .result import AttributionResult

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
