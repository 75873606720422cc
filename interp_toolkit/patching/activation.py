"""Activation patching as batches of masks: TransformerLens's ``patching`` functions, batched.

Each function patches, one component at a time, the clean run's activation into the
corrupted run and reports ``metric(patched logits)`` per component, with the output shape
of its TransformerLens namesake (``transformer_lens.patching.get_act_patch_*``). Every
patch is one row of a ``MaskSpec`` (keep 0 at the patched component, 1 elsewhere) with the
clean cache as the ``Reference``: ``x' = m·x + (1−m)·x_clean`` — so all patches run
through ``masked_forward``, many rows per forward, rows patching layer ``l`` starting from
the shared corrupted residual at ``l``.

Metrics: TransformerLens passes full logits ``[batch, pos, vocab]`` to the metric and so do
these functions by default. A metric that needs only the last position (the classes in
``interp_toolkit.engine.metrics`` declare ``metric_on = "last_logits"``, or pass
``metric_on="last_logits"``) is given ``[batch, vocab]`` and the kernel decodes only the
last position — much faster for large vocabularies. A metric may return a scalar, or one
value per prompt (averaged).
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import einops
import torch
from jaxtyping import Float
from torch import Tensor

from ..adapter import as_adapter
from ..engine import MaskError, MaskSpec, Reference, masked_forward
from ..engine.metrics import metric_value
from .result import PatchingResult

# TransformerLens's axis names -> what indexes them
_POS_SITES = ("resid_pre", "resid_mid", "resid_post", "attn_out", "mlp_out")
_HEAD_SITES = ("z", "q", "k", "v")

# bytes of keep masks held at once, and of logits held at once (several prompts, full logits)
KEEP_BYTES = 64 * 2**20
LOGITS_BYTES = 512 * 2**20


def _keep_shape(site: str, axes: tuple[str, ...], n_pos: int, n_heads: int) -> tuple[int, ...]:
    """Per-row keep shape whose flat index equals the flat index of the patched component
    (the axes after ``layer``)."""
    rest = axes[1:]
    if site in _POS_SITES and rest == ("pos",):
        return (n_pos,)
    if site in _HEAD_SITES and rest == ("pos", "head"):
        return (n_pos, n_heads)
    if site in _HEAD_SITES and rest == ("head",):
        return (1, n_heads)
    if site == "pattern" and rest == ("head",):
        return (n_heads, 1, 1)
    if site == "pattern" and rest == ("head", "dest_pos"):
        return (n_heads, n_pos, 1)
    if site == "pattern" and rest == ("head", "dest_pos", "src_pos"):
        return (n_heads, n_pos, n_pos)
    raise ValueError(f"no patch of site {site!r} over axes {axes}")


def _as_batch(adapter, tokens) -> Tensor:
    tokens = adapter.as_tokens(tokens)
    if tokens.shape[0] == 0 or tokens.shape[1] == 0:
        raise MaskError("empty batch of corrupted prompts")
    return tokens


def activation_patch(model, corrupted_tokens, clean_cache, metric: Callable[[Tensor], Tensor], site: str,
                     axes: Sequence[str], *, layers: Sequence[int] | None = None, metric_on: str | None = None,
                     max_batch_tokens: int | None = None, progress: bool | None = None,
                     position_reuse: bool | str = "auto") -> PatchingResult:
    """Patch each component of ``site`` (indexed by ``axes``, first ``"layer"``) from the
    clean run into the corrupted run, one component per mask row; returns a
    ``PatchingResult`` whose ``scores`` hold the metric per component, shaped like ``axes``.

    Args:
        model: HookedTransformer, TransformerBridge or ModelAdapter.
        corrupted_tokens: ``[batch, pos]`` (or ``[pos]``) corrupted prompts.
        clean_cache: the clean run's activations (``ActivationCache`` or dict), batch first,
            same prompt length.
        metric: function of logits (see module docstring).
        site: ``resid_pre``/``resid_mid``/``resid_post``/``attn_out``/``mlp_out``/``z``/
            ``q``/``k``/``v``/``pattern``.
        axes: ``("layer", "pos")``, ``("layer", "pos", "head")``, ``("layer", "head")``,
            ``("layer", "head", "dest_pos")`` or ``("layer", "head", "dest_pos", "src_pos")``.
        metric_on: ``"logits"`` (full logits, TransformerLens's convention) or
            ``"last_logits"``; default: the metric's ``metric_on`` attribute, else ``"logits"``.
        layers: patch only these layers (the output's first axis follows them); default all.
        max_batch_tokens: the kernel's memory budget per forward.
        progress: tqdm bar over blocks of patches (default: when there are more than 4).
        position_reuse: the kernel's causal prefix reuse (``masked_forward``): a patch at
            position p leaves positions < p as in the corrupted run, so those are computed
            once; ``"auto"`` (default) uses it where it saves work (one corrupted prompt;
            several prompts run in one dense call).
    """
    adapter = as_adapter(model)
    axes = tuple(axes)
    if not axes or axes[0] != "layer":
        raise ValueError(f"axes must start with 'layer', got {axes}")
    metric_on = metric_on or getattr(metric, "metric_on", "logits")
    if metric_on not in ("logits", "last_logits"):
        raise ValueError(f"metric_on must be 'logits' or 'last_logits', got {metric_on!r}")
    tokens = _as_batch(adapter, corrupted_tokens)
    n_prompts, n_pos = tokens.shape
    n_heads = adapter.n_kv_heads if site in ("k", "v") else adapter.n_heads
    keep_shape = _keep_shape(site, axes, n_pos, n_heads)
    per_layer = math.prod(keep_shape)
    layer_ids = list(range(adapter.n_layers)) if layers is None else [int(l) for l in layers]
    for l in layer_ids:
        if not 0 <= l < adapter.n_layers:
            raise MaskError(f"layer {l} out of range for a {adapter.n_layers}-layer model")
    L = len(layer_ids)

    hook_names = [adapter.hook_name(site, l) for l in layer_ids]
    values = {}
    for name in hook_names:
        try:
            v = clean_cache[name]
        except KeyError:
            raise MaskError(f"the clean cache has no {name!r}") from None
        if v.shape[0] != n_prompts:
            raise MaskError(f"clean cache {name!r} has batch {v.shape[0]}; the corrupted batch has {n_prompts}")
        values[name] = v.detach()
    ref = Reference(values, per_prompt=True)  # each row reads its own prompt's clean activations

    # components that cannot change anything: attention to later positions (both runs are 0)
    skip = torch.zeros(L, per_layer, dtype=torch.bool)
    if site == "pattern" and axes[-1] == "src_pos":
        causal = torch.ones(n_pos, n_pos, dtype=torch.bool).triu(1)
        skip[:] = causal.expand(n_heads, -1, -1).reshape(-1)
    todo = (~skip).reshape(-1).nonzero()[:, 0]

    # rows per call, bounded by the keep masks' memory (one [rows, per_layer] bool mask per
    # layer in the call) and, for several prompts, by the logits kept for the metric
    if len(todo) * per_layer * L <= KEEP_BYTES:
        rows_per_call = len(todo)
    else:
        rows_per_call = max(1, min(len(todo) // L, KEEP_BYTES // (2 * per_layer)))
    if n_prompts > 1:
        per_row = n_prompts * adapter.d_vocab * (n_pos if metric_on == "logits" else 1) * 4
        rows_per_call = max(1, min(rows_per_call, LOGITS_BYTES // per_row))

    out = torch.empty(L * per_layer, dtype=torch.float32)
    unpatched = None
    if skip.any():
        unpatched = _unpatched(adapter, tokens, metric, metric_on, max_batch_tokens)
        out[skip.reshape(-1)] = unpatched
    blocks = range(0, len(todo), rows_per_call)
    if progress or (progress is None and len(blocks) > 4):
        from tqdm.auto import tqdm

        blocks = tqdm(blocks, desc=f"patching {site}", unit="block")
    for start in blocks:
        flat = todo[start:start + rows_per_call]
        layer, comp = flat // per_layer, flat % per_layer
        spec = MaskSpec(len(flat))
        for l in layer.unique().tolist():
            keep = torch.ones(len(flat), per_layer, dtype=torch.bool)
            sel = (layer == l).nonzero()[:, 0]
            keep[sel, comp[sel]] = False
            spec.set(site, layer_ids[l], keep.reshape(len(flat), *keep_shape))
        out[flat] = _evaluate(adapter, tokens, spec, ref, metric, metric_on, max_batch_tokens,
                              position_reuse).float().cpu()
    shape = (L,) + tuple(_axis_size(a, n_pos, n_heads) for a in axes[1:])
    return PatchingResult(out.reshape(shape).to(adapter.device), site, axes, layer_ids, repr(metric), unpatched,
                          adapter.meta)


def _axis_size(axis: str, n_pos: int, n_heads: int) -> int:
    return n_heads if axis in ("head", "head_index") else n_pos


def _evaluate(adapter, tokens, spec: MaskSpec, ref: Reference, metric, metric_on, max_batch_tokens,
              position_reuse: bool | str = "auto") -> Tensor:
    """Metric per row of ``spec`` over all corrupted prompts: one engine call whose rows are
    (patch, prompt) pairs, each prompt's row reading that prompt's clean activations."""
    n_prompts = tokens.shape[0]
    if n_prompts == 1:
        if getattr(metric, "per_row", False):
            fn = metric
        else:
            def fn(x):
                return torch.tensor([metric_value(metric, x[i:i + 1], 1) for i in range(x.shape[0])])
        return masked_forward(adapter, tokens, spec, reference=ref, output=fn, metric_input=metric_on,
                              max_batch_tokens=max_batch_tokens, progress=False, position_reuse=position_reuse)
    rows = einops.repeat(torch.arange(spec.n_rows), "row -> (row prompt)", prompt=n_prompts)
    prompts = einops.repeat(torch.arange(n_prompts), "prompt -> (row prompt)", row=spec.n_rows)
    out = masked_forward(adapter, tokens, spec.select(rows), reference=ref, output=metric_on, prompt_index=prompts,
                         max_batch_tokens=max_batch_tokens, progress=False)
    stacked = einops.rearrange(out, "(row prompt) ... -> row prompt ...", prompt=n_prompts)
    return torch.tensor([metric_value(metric, stacked[i], n_prompts) for i in range(stacked.shape[0])])


@torch.no_grad()
def _unpatched(adapter, tokens, metric, metric_on, max_batch_tokens) -> float:
    logits = adapter.forward(tokens)
    return metric_value(metric, logits if metric_on == "logits" else logits[:, -1], tokens.shape[0])


def _patcher(site: str, axes: tuple[str, ...], shape_doc: str, what: str):
    def patch(model, corrupted_tokens, clean_cache, patching_metric, *, layers: Sequence[int] | None = None,
              metric_on: str | None = None, max_batch_tokens: int | None = None,
              progress: bool | None = None, position_reuse: bool | str = "auto") -> Tensor:
        return activation_patch(model, corrupted_tokens, clean_cache, patching_metric, site, axes, layers=layers,
                                metric_on=metric_on, max_batch_tokens=max_batch_tokens, progress=progress,
                                position_reuse=position_reuse).scores

    patch.__doc__ = (
        f"Activation patching of {what}: the metric after patching each one from the clean run "
        f"into the corrupted run. Returns ``{shape_doc}``, as TransformerLens's function of the "
        f"same name. See ``activation_patch`` for the arguments."
    )
    return patch


get_act_patch_resid_pre = _patcher("resid_pre", ("layer", "pos"), "[n_layers, pos]",
                                   "the residual stream entering each block, per position")
get_act_patch_resid_mid = _patcher("resid_mid", ("layer", "pos"), "[n_layers, pos]",
                                   "the residual stream between attention and MLP, per position")
get_act_patch_resid_post = _patcher("resid_post", ("layer", "pos"), "[n_layers, pos]",
                                    "the residual stream leaving each block, per position")
get_act_patch_attn_out = _patcher("attn_out", ("layer", "pos"), "[n_layers, pos]",
                                  "each attention layer's output, per position")
get_act_patch_mlp_out = _patcher("mlp_out", ("layer", "pos"), "[n_layers, pos]",
                                 "each MLP's output, per position")
get_act_patch_attn_head_out_by_pos = _patcher("z", ("layer", "pos", "head"), "[n_layers, pos, n_heads]",
                                              "each head's output (z), per position")
get_act_patch_attn_head_q_by_pos = _patcher("q", ("layer", "pos", "head"), "[n_layers, pos, n_heads]",
                                            "each head's queries, per position")
get_act_patch_attn_head_k_by_pos = _patcher("k", ("layer", "pos", "head"), "[n_layers, pos, n_kv_heads]",
                                            "each key-value head's keys, per position")
get_act_patch_attn_head_v_by_pos = _patcher("v", ("layer", "pos", "head"), "[n_layers, pos, n_kv_heads]",
                                            "each key-value head's values, per position")
get_act_patch_attn_head_pattern_by_pos = _patcher("pattern", ("layer", "head", "dest_pos"),
                                                  "[n_layers, n_heads, pos]",
                                                  "each head's attention pattern row, per destination")
get_act_patch_attn_head_pattern_dest_src_pos = _patcher("pattern", ("layer", "head", "dest_pos", "src_pos"),
                                                        "[n_layers, n_heads, pos, pos]",
                                                        "each attention edge (head, destination, source)")
get_act_patch_attn_head_out_all_pos = _patcher("z", ("layer", "head"), "[n_layers, n_heads]",
                                               "each head's output (z) at all positions")
get_act_patch_attn_head_q_all_pos = _patcher("q", ("layer", "head"), "[n_layers, n_heads]",
                                             "each head's queries at all positions")
get_act_patch_attn_head_k_all_pos = _patcher("k", ("layer", "head"), "[n_layers, n_kv_heads]",
                                             "each key-value head's keys at all positions")
get_act_patch_attn_head_v_all_pos = _patcher("v", ("layer", "head"), "[n_layers, n_kv_heads]",
                                             "each key-value head's values at all positions")
get_act_patch_attn_head_pattern_all_pos = _patcher("pattern", ("layer", "head"), "[n_layers, n_heads]",
                                                   "each head's whole attention pattern")


def _pad_heads(x: Tensor, n: int) -> Tensor:
    return torch.nn.functional.pad(x, (0, n - x.shape[-1]))


def get_act_patch_block_every(model, corrupted_tokens, clean_cache, metric, **kw) -> Float[Tensor, "3 layer pos"]:
    """resid_pre, attn_out and mlp_out patching stacked: ``[3, n_layers, pos]``."""
    return torch.stack([f(model, corrupted_tokens, clean_cache, metric, **kw) for f in
                        (get_act_patch_resid_pre, get_act_patch_attn_out, get_act_patch_mlp_out)])


def get_act_patch_attn_head_all_pos_every(model, corrupted_tokens, clean_cache, metric,
                                          **kw) -> Float[Tensor, "5 layer head"]:
    """Head output, q, k, v and pattern patching at all positions: ``[5, n_layers, n_heads]``
    (k and v of grouped-query models zero-padded to n_heads, as TransformerLens does)."""
    out = get_act_patch_attn_head_out_all_pos(model, corrupted_tokens, clean_cache, metric, **kw)
    res = [out, get_act_patch_attn_head_q_all_pos(model, corrupted_tokens, clean_cache, metric, **kw)]
    for f in (get_act_patch_attn_head_k_all_pos, get_act_patch_attn_head_v_all_pos):
        res.append(_pad_heads(f(model, corrupted_tokens, clean_cache, metric, **kw), out.shape[-1]))
    res.append(get_act_patch_attn_head_pattern_all_pos(model, corrupted_tokens, clean_cache, metric, **kw))
    return torch.stack(res)


def get_act_patch_attn_head_by_pos_every(model, corrupted_tokens, clean_cache, metric,
                                         **kw) -> Float[Tensor, "5 layer pos head"]:
    """Head output, q, k, v and pattern patching per position: ``[5, n_layers, pos, n_heads]``."""
    out = get_act_patch_attn_head_out_by_pos(model, corrupted_tokens, clean_cache, metric, **kw)
    res = [out, get_act_patch_attn_head_q_by_pos(model, corrupted_tokens, clean_cache, metric, **kw)]
    for f in (get_act_patch_attn_head_k_by_pos, get_act_patch_attn_head_v_by_pos):
        res.append(_pad_heads(f(model, corrupted_tokens, clean_cache, metric, **kw), out.shape[-1]))
    pattern = get_act_patch_attn_head_pattern_by_pos(model, corrupted_tokens, clean_cache, metric, **kw)
    res.append(pattern.transpose(-1, -2))
    return torch.stack(res)
