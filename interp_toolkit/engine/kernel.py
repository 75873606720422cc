"""The batched masked forward: many per-row masks, one batched pass, chunked to a budget.

``masked_forward(model, tokens, masks)`` evaluates every row of a ``MaskSpec`` on the same
prompt. Rows are grouped into chunks of at most ``max_batch_tokens // n_pos`` rows; each
chunk is one forward whose hooks apply that chunk's masks (``x' = m·x + (1−m)·r``, see
``engine.masks``). With prefix reuse, rows are ordered by the first layer their masks touch;
when every row of a chunk leaves layers ``< l`` untouched, the residual entering layer ``l``
is computed once for the prompt and the chunk starts at ``l``. Only the last position is
unembedded unless full logits are asked for.

The slow, obvious twin is ``engine.reference.masked_forward_loop`` (one ``run_with_hooks``
per row); tests hold the two equal.
"""

from __future__ import annotations

import math
from typing import Callable, Mapping, Sequence

import torch
from jaxtyping import Float
from torch import Tensor

from ..adapter import ModelAdapter, as_adapter
from .masks import MaskError, MaskSpec

OUTPUTS = ("last_logits", "last_log_probs", "logits", "log_probs", "final_resid")
METRIC_INPUTS = ("last_logits", "logits", "final_resid")
DEFAULT_MAX_BATCH_TOKENS = 2048

# activation-shaped view of a per-row keep (rows first) for each site
_KEEP_VIEW = {
    "embed": lambda k: k[..., None],
    "attn_out": lambda k: k[..., None],
    "mlp_out": lambda k: k[..., None],
    "resid_pre": lambda k: k[..., None],
    "resid_mid": lambda k: k[..., None],
    "resid_post": lambda k: k[..., None],
    "skip_attn": lambda k: k[..., None],
    "skip_mlp": lambda k: k[..., None],
    "z": lambda k: k[..., None],
    "q": lambda k: k[..., None],
    "k": lambda k: k[..., None],
    "v": lambda k: k[..., None],
    "pattern": lambda k: k,
}
# Residual-stream edits between the sublayers are made through the sublayer outputs, which both
# HookedTransformer and TransformerBridge add to the residual stream as hooked:
#   resid_mid  = resid_pre + attn_out   ->  skip_attn and resid_mid edits change attn_out
#   resid_post = resid_mid + mlp_out    ->  skip_mlp edits change mlp_out
# (TransformerBridge's ``hook_resid_mid`` is the MLP norm's input: editing it there would not
# reach the residual stream.) The residual entering the sublayer is stored at its own hook.
_SKIP_SOURCE = {"skip_attn": "resid_pre", "skip_mlp": "resid_mid", "resid_mid": "resid_pre"}
_VIA = {"skip_attn": "attn_out", "resid_mid": "attn_out", "skip_mlp": "mlp_out"}

Rows = slice | Tensor


def _mix(x: Tensor, keep: Tensor, ref: Tensor | None) -> Tensor:
    """keep·x + (1−keep)·ref  (ref None = zero ablation)."""
    if ref is None:
        return x * keep
    return ref + keep * (x - ref)


class Reference:
    """Ablation values by hook name: tensors ``[1 | n_rows, ...]`` shaped like the hook.

    Built from a dict or a TransformerLens ``ActivationCache`` (e.g. a clean run for
    activation patching, or dataset means with a leading axis of 1). ``baseline`` sets the
    embedding used for masked input tokens (``[d_model]`` or ``[pos, d_model]``); a
    ``hook_embed`` entry in ``values`` takes precedence over it.
    """

    def __init__(self, values: Mapping[str, Tensor] | None = None, baseline: Tensor | None = None,
                 n_rows: int | None = None):
        self.values: dict[str, Tensor] = {}
        for name, v in dict(values.items() if values is not None else {}).items():
            v = torch.as_tensor(v)
            if v.is_floating_point() and torch.isnan(v).any():
                raise MaskError(f"reference activation {name!r} contains NaN")
            self.values[name] = v
        self.baseline = None
        if baseline is not None:
            b = torch.as_tensor(baseline)
            if b.is_floating_point() and torch.isnan(b).any():
                raise MaskError("baseline embedding contains NaN")
            self.baseline = b
        self.n_rows = n_rows

    def get(self, hook: str, rows: Rows, n_rows: int, n_pos: int, device, dtype) -> Tensor | None:
        """The ablation value at ``hook`` for the batch rows ``rows`` (None: zero)."""
        v = self.values.get(hook)
        if v is None and hook == "hook_embed" and self.baseline is not None:
            b = self.baseline
            if b.ndim == 1:
                return b.to(device=device, dtype=dtype)
            if b.ndim == 2 and b.shape[0] == n_pos:
                return b.to(device=device, dtype=dtype)[None]
            raise MaskError(f"baseline must be [d_model] or [pos={n_pos}, d_model], got {tuple(b.shape)}")
        if v is None:
            return None
        if v.ndim < 3:
            raise MaskError(f"reference {hook!r} has shape {tuple(v.shape)}; expected [rows, pos, ...]")
        pos_axes = v.shape[-2:] if hook.endswith(("hook_pattern", "hook_attn_scores")) else v.shape[1:2]
        if any(p != n_pos for p in pos_axes):
            raise MaskError(
                f"reference {hook!r} has shape {tuple(v.shape)}: made for a prompt of another "
                f"length (this prompt has {n_pos} tokens)"
            )
        if v.shape[0] == n_rows:
            v = v[rows]
        elif v.shape[0] != 1:
            raise MaskError(f"reference {hook!r} has {v.shape[0]} rows; expected 1 or {n_rows}")
        return v.to(device=device, dtype=dtype)


def as_reference(reference, baseline=None) -> Reference | None:
    """``Reference`` from a Reference, dict or ActivationCache (plus an optional baseline)."""
    if isinstance(reference, Reference):
        if baseline is None:
            return reference
        return Reference(reference.values, baseline if baseline is not None else reference.baseline,
                         reference.n_rows)
    if reference is None and baseline is None:
        return None
    return Reference(reference, baseline)


def _site_hooks(adapter: ModelAdapter, site: str, layer: int | None) -> list[str]:
    """Hook names whose reference values ``site`` reads."""
    if site in ("skip_attn", "skip_mlp"):
        return [adapter.hook_name(_SKIP_SOURCE[site], layer)]
    return [adapter.hook_name(site, layer)]


def check_reference(adapter: ModelAdapter, spec: MaskSpec, reference: Reference | None, n_pos: int) -> None:
    """Raise MaskError now (before any forward) if a reference value the spec needs does not
    fit the prompt or the batch."""
    if reference is None:
        return
    for site, layer in spec.entries:
        for hook in _site_hooks(adapter, site, layer):
            reference.get(hook, slice(0, 1), spec.n_rows, n_pos, "cpu", torch.float32)


def build_hooks(adapter: ModelAdapter, spec: MaskSpec, reference: Reference | None, rows: Rows,
                n_rows_total: int, n_pos: int) -> list[tuple[str, Callable]]:
    """Forward hooks applying ``spec`` (already restricted to ``rows``) to one batch.

    Per hook point the order is: patches of the activation itself (``x' = m·x + (1−m)·r``),
    then the residual edits routed through it (skip cut first, then the ``resid_mid``
    patch), then the stores of residuals that later edits read.
    """
    device, dtype = adapter.device, adapter.dtype
    mixes: dict[str, list[Callable]] = {}
    routed: dict[str, dict[str, tuple[Tensor, Tensor | None]]] = {}
    stored: dict[str, Tensor] = {}
    store_at: set[str] = set()

    def ref_for(hook: str):
        if reference is None:
            return None
        return reference.get(hook, rows, n_rows_total, n_pos, device, dtype)

    for (site, layer), keep in spec.entries.items():
        # kept in its stored dtype (bool: 1 byte per entry) and made float one layer at a time
        # inside the hook, so a chunk's float attention masks never all exist at once
        k = _KEEP_VIEW[site](keep.to(device=device))
        if site in _VIA:
            src = adapter.hook_name(_SKIP_SOURCE[site], layer)
            via = adapter.hook_name(_VIA[site], layer)
            ref = ref_for(src if site != "resid_mid" else adapter.hook_name("resid_mid", layer))
            routed.setdefault(via, {})[site] = (k, ref, src)
            store_at.add(src)
        else:
            hook = adapter.hook_name(site, layer)

            def edit(x, hook, _k=k, _ref=ref_for(hook)):
                return _mix(x, _k.to(x.dtype), _ref)

            mixes.setdefault(hook, []).append(edit)

    def make_routed(parts):
        def route(x, hook):
            # x: the sublayer output; src: the residual it is added to
            site = "skip_mlp" if "skip_mlp" in parts else "skip_attn" if "skip_attn" in parts else "resid_mid"
            src = stored[parts[site][2]]
            resid = src + x
            if "skip_attn" in parts or "skip_mlp" in parts:
                k, ref, _ = parts["skip_mlp" if "skip_mlp" in parts else "skip_attn"]
                resid = resid - (1 - k.to(x.dtype)) * (src if ref is None else src - ref)
            if "resid_mid" in parts:
                k, ref, _ = parts["resid_mid"]
                resid = _mix(resid, k.to(x.dtype), ref)
            return resid - src
        return route

    def make_store(name):  # keyed by the name we hooked (a bridge reports its canonical alias)
        def store(x, hook):
            stored[name] = x
            return x
        return store

    hooks = []
    for hook, fns in mixes.items():
        hooks += [(hook, fn) for fn in fns]
    for via, parts in routed.items():
        hooks.append((via, make_routed(parts)))
    hooks += [(src, make_store(src)) for src in store_at]
    return hooks


def rows_per_chunk(n_pos: int, max_batch_tokens: int) -> int:
    if not isinstance(max_batch_tokens, int) or max_batch_tokens < n_pos:
        raise MaskError(
            f"memory budget of {max_batch_tokens} tokens per forward is smaller than one row "
            f"({n_pos} tokens); raise max_batch_tokens"
        )
    return max(1, max_batch_tokens // n_pos)


class _StopForward(Exception):
    pass


def forward_to(adapter: ModelAdapter, inp, stop: int, *, fwd_hooks: Sequence[tuple[str, Callable]] = (),
               start: int | None = None) -> Float[Tensor, "b pos d_model"]:
    """The residual entering layer ``stop`` (``stop = n_layers``: after the last block, before
    the final norm), running from the tokens or from the residual ``inp`` entering ``start``.

    HookedTransformer returns it for ``stop_at_layer=stop``. TransformerBridge runs the whole
    model for ``stop_at_layer=n_layers`` and returns nothing, so there the last block's
    ``hook_resid_post`` is taken (after every other hook there) and the forward stopped.
    """
    if stop < adapter.n_layers:
        return adapter.forward(inp, fwd_hooks=fwd_hooks, start_at_layer=start, stop_at_layer=stop,
                               return_type=None)
    if not adapter.is_bridge:
        return adapter.final_resid(inp, fwd_hooks=fwd_hooks, start_at_layer=start)
    store = {}

    def grab(x, hook):
        store["resid"] = x
        raise _StopForward

    try:
        adapter.forward(inp, fwd_hooks=[*fwd_hooks, (adapter.hook_name("resid_post", adapter.n_layers - 1), grab)],
                        start_at_layer=start, return_type=None)
    except _StopForward:
        pass
    return store["resid"]


class _Prefix:
    """Residual entering layer ``l`` for the unmasked prompt, each computed once (from the
    nearest layer below already computed)."""

    def __init__(self, adapter: ModelAdapter, tokens: Tensor):
        self.adapter, self.tokens = adapter, tokens
        self.cache: dict[int, Tensor] = {}

    @torch.no_grad()
    def __call__(self, layer: int) -> Tensor:
        if layer not in self.cache:
            below = [l for l in self.cache if l < layer]
            if below:
                l0 = max(below)
                x = forward_to(self.adapter, self.cache[l0], layer, start=l0)
            else:
                x = forward_to(self.adapter, self.tokens, layer)
            self.cache[layer] = x
        return self.cache[layer]


def run_chunk(adapter: ModelAdapter, tokens: Tensor, chunk: MaskSpec, reference: Reference | None,
              rows: Rows, n_rows_total: int, start: int | None, prefix: _Prefix | None,
              extra_hooks: Sequence[tuple[str, Callable]] = ()) -> Float[Tensor, "b pos d_model"]:
    """One batched forward of ``chunk`` to the final residual (before the final norm).

    ``start``: first layer to run (the layers below come from ``prefix``); None or 0 runs
    from the tokens. ``extra_hooks`` run after the mask edits at the same hook points.
    """
    n_pos = tokens.shape[1]
    b = chunk.n_rows
    hooks = build_hooks(adapter, chunk, reference, rows, n_rows_total, n_pos) + list(extra_hooks)
    if start is not None and start >= adapter.n_layers and prefix is not None:
        return prefix(adapter.n_layers).expand(b, -1, -1)
    if start is not None and start > 0 and prefix is not None:
        inp = prefix(start).expand(b, -1, -1)
    else:
        start, inp = None, tokens.expand(b, -1)
    return forward_to(adapter, inp, adapter.n_layers, fwd_hooks=hooks, start=start)


def prepare(model, tokens, masks: MaskSpec, reference, baseline, max_batch_tokens):
    """Shared argument checks of the kernel's entry points."""
    adapter = as_adapter(model)
    tokens = adapter.as_tokens(tokens)
    if tokens.shape[0] != 1:
        raise MaskError(f"masked_forward takes one prompt; got a batch of {tokens.shape[0]}")
    if tokens.shape[1] == 0:
        raise MaskError("empty prompt: no tokens")
    if not isinstance(masks, MaskSpec):
        raise TypeError(f"masks must be a MaskSpec, got {type(masks).__name__}")
    if masks.n_rows == 0:
        raise MaskError("empty batch: the MaskSpec has no rows")
    n_pos = tokens.shape[1]
    masks.validate(adapter.n_layers, adapter.n_heads, n_pos, adapter.n_kv_heads)
    ref = as_reference(reference, baseline)
    check_reference(adapter, masks, ref, n_pos)
    budget = DEFAULT_MAX_BATCH_TOKENS if max_batch_tokens is None else max_batch_tokens
    per_chunk = rows_per_chunk(n_pos, budget)
    return adapter, tokens, ref, per_chunk


def iter_chunks(adapter: ModelAdapter, masks: MaskSpec, per_chunk: int, prefix_reuse: bool):
    """Yield ``(row_index, chunk_spec, start_layer)``; with prefix reuse the rows are ordered
    by the first layer they touch, so chunks can skip the shared layers below it."""
    if prefix_reuse:
        starts = masks.row_start_layers(adapter.n_layers)
        order = torch.sort(starts, stable=True).indices
    else:
        starts, order = None, torch.arange(masks.n_rows)
    for i in range(0, masks.n_rows, per_chunk):
        idx = order[i:i + per_chunk]
        if not prefix_reuse:
            idx = slice(i, min(i + per_chunk, masks.n_rows))
            yield idx, masks.select(idx), None
        else:
            yield idx, masks.select(idx).pruned(), int(starts[idx].min())


@torch.no_grad()
def masked_forward(model, tokens, masks: MaskSpec, *, reference: Reference | Mapping[str, Tensor] | None = None,
                   baseline: Tensor | None = None, output: str | Callable[[Tensor], Tensor] = "last_logits",
                   metric_input: str = "last_logits", max_batch_tokens: int | None = None,
                   prefix_reuse: bool = True, progress: bool | None = None,
                   position_reuse: bool | str = False, reuse_plan: dict | None = None) -> Tensor:
    """Evaluate every row of ``masks`` on the prompt ``tokens`` in batched, chunked forwards.

    Args:
        model: HookedTransformer, TransformerBridge or ModelAdapter.
        tokens: the prompt, ``[pos]`` or ``[1, pos]`` (or a string).
        masks: ``MaskSpec`` with ``n_rows`` rows.
        reference: ablation values by hook name (``Reference``, a dict or an
            ``ActivationCache``); zero ablation where absent.
        baseline: embedding for masked input tokens (``[d_model]`` or ``[pos, d_model]``).
        output: ``"last_logits"`` [rows, vocab] (default), ``"last_log_probs"``,
            ``"logits"`` / ``"log_probs"`` [rows, pos, vocab], ``"final_resid"``
            [rows, pos, d_model], or a function (a metric) applied to each chunk's
            ``metric_input``, returning ``[chunk, ...]``; results are concatenated.
        metric_input: what a callable ``output`` receives: ``"last_logits"`` [chunk, vocab]
            (default: only the last position is unembedded), ``"logits"``
            [chunk, pos, vocab] or ``"final_resid"`` [chunk, pos, d_model].
        max_batch_tokens: rows × positions per forward (memory budget); default
            ``DEFAULT_MAX_BATCH_TOKENS``.
        prefix_reuse: order rows by the first layer they touch and run the layers below it
            once, not per row.
        progress: tqdm bar over chunks (default: shown when there are more than 4 chunks).
        position_reuse: causal prefix reuse by position (``engine.causal``): True computes
            each distinct masked prefix once and continues every row from its key/value
            cache; ``"auto"`` does so only where it saves work; False (default) runs dense.
            Where the model class has no key/value cache forward it runs dense.
        reuse_plan: a dict filled with the ``causal.ReusePlan`` (computed vs dense token
            positions, and which path ran) when ``position_reuse`` is on.

    Returns:
        Tensor with ``n_rows`` as the leading axis, rows in the order of ``masks``.
    """
    if not (isinstance(output, str) and output in OUTPUTS) and not callable(output):
        raise ValueError(f"output must be one of {OUTPUTS} or a callable, got {output!r}")
    if metric_input not in METRIC_INPUTS:
        raise ValueError(f"metric_input must be one of {METRIC_INPUTS}, got {metric_input!r}")
    adapter, tokens, ref, per_chunk = prepare(model, tokens, masks, reference, baseline, max_batch_tokens)
    # -- causal prefix reuse by position: engine/causal.py (None: take the dense path below)
    if position_reuse is not False:
        from .causal import dispatch

        out = dispatch(adapter, tokens, masks, ref, output, metric_input,
                       DEFAULT_MAX_BATCH_TOKENS if max_batch_tokens is None else max_batch_tokens,
                       position_reuse, prefix_reuse, progress, reuse_plan)
        if out is not None:
            return out
    # -- end of causal prefix reuse
    n_chunks = math.ceil(masks.n_rows / per_chunk)
    if progress is None:
        progress = n_chunks > 4
    prefix = _Prefix(adapter, tokens)

    chunks = iter_chunks(adapter, masks, per_chunk, prefix_reuse)
    if progress:
        from tqdm.auto import tqdm

        chunks = tqdm(chunks, total=n_chunks, desc="masked forward", unit="chunk")
    result = None
    for rows, chunk, start in chunks:
        resid = run_chunk(adapter, tokens, chunk, ref, rows, masks.n_rows, start, prefix)
        out = finish(adapter, resid, output, metric_input)
        del resid
        if result is None:  # one output buffer, filled chunk by chunk in the rows' order
            result = out.new_empty((masks.n_rows, *out.shape[1:]))
        result[rows.to(out.device) if isinstance(rows, Tensor) else rows] = out
    return result


def finish(adapter: ModelAdapter, resid: Float[Tensor, "b pos d"], output, metric_input="last_logits") -> Tensor:
    """Turn a chunk's final residual into the requested output."""
    if callable(output):
        if metric_input == "final_resid":
            return output(resid)
        if metric_input == "logits":
            return output(adapter.logits_from_resid(resid))
        return output(adapter.logits_from_resid(resid[:, -1]))
    if output == "final_resid":
        return resid
    if output in ("logits", "log_probs"):
        logits = adapter.logits_from_resid(resid)
        return logits.log_softmax(-1) if output == "log_probs" else logits
    last = adapter.logits_from_resid(resid[:, -1])
    if output == "last_logits":
        return last
    return last.log_softmax(-1)
