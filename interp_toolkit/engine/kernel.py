"""The batched masked forward: many per-row masks, one batched pass, chunked to a budget.

``masked_forward(model, tokens, masks)`` evaluates every row of a ``MaskSpec`` on the same
prompt. Rows are grouped into chunks of at most ``max_batch_tokens // n_pos`` rows; each
chunk is one forward whose hooks apply that chunk's masks (``x' = m·x + (1−m)·r``, see
``engine.masks``). When a chunk leaves layers ``< l`` untouched, the residual entering
layer ``l`` is computed once for the prompt and the chunk starts at ``l`` (prefix reuse).
Only the last position is unembedded unless full logits are asked for.

The slow, obvious twin is ``engine.reference.masked_forward_loop`` (one ``run_with_hooks``
per row); tests hold the two equal.
"""

from __future__ import annotations

import math
from typing import Callable, Mapping

import torch
from jaxtyping import Float
from torch import Tensor

from ..adapter import ModelAdapter, as_adapter
from .masks import MaskError, MaskSpec

OUTPUTS = ("last_logits", "last_log_probs", "logits", "log_probs", "final_resid")
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
    "pattern": lambda k: k,
}
# the hook each site edits, and (for skip paths) the hook whose value the skip carries
_SITE_HOOK = {"skip_attn": "resid_mid", "skip_mlp": "resid_post"}
_SKIP_SOURCE = {"skip_attn": "resid_pre", "skip_mlp": "resid_mid"}
# order of edits at one hook point: skip cuts first, then patches of the whole activation
_ORDER = {"skip_attn": 0, "skip_mlp": 0}


def _mix(x: Tensor, keep: Tensor, ref: Tensor | None) -> Tensor:
    """keep·x + (1−keep)·ref  (ref None = zero ablation)."""
    if ref is None:
        return x * keep
    return ref + keep * (x - ref)


class Reference:
    """Ablation values by hook name: tensors ``[1 | n_rows, ...]`` shaped like the hook.

    Built from a dict or a TransformerLens ``ActivationCache`` (e.g. a clean run for
    activation patching, or dataset means with a leading axis of 1). ``baseline`` sets the
    embedding used for masked input tokens (``[d_model]`` or ``[pos, d_model]``).
    """

    def __init__(self, values: Mapping[str, Tensor] | None = None, baseline: Tensor | None = None,
                 n_rows: int | None = None):
        self.values: dict[str, Tensor] = {}
        for name, v in dict(values or {}).items():
            v = torch.as_tensor(v)
            if v.is_floating_point() and torch.isnan(v).any():
                raise MaskError(f"reference activation {name!r} contains NaN")
            self.values[name] = v
        self.baseline = None
        if baseline is not None:
            b = torch.as_tensor(baseline)
            if torch.isnan(b).any():
                raise MaskError("baseline embedding contains NaN")
            self.baseline = b
        self.n_rows = n_rows

    def get(self, hook: str, rows: slice, n_rows: int, n_pos: int, device, dtype) -> Tensor | None:
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
        if v.ndim >= 2 and hook.endswith("hook_pattern"):
            pos_axes = v.shape[-2:]
        else:
            pos_axes = v.shape[1:2] if v.ndim >= 2 else ()
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


def build_hooks(adapter: ModelAdapter, spec: MaskSpec, reference: Reference | None, rows: slice,
                n_rows_total: int, n_pos: int) -> list[tuple[str, Callable]]:
    """Forward hooks applying ``spec`` (already restricted to ``rows``) to one batch."""
    device, dtype = adapter.device, adapter.dtype
    edits: dict[str, list[tuple[int, Callable]]] = {}
    stores: dict[str, Callable] = {}
    stored: dict[str, Tensor] = {}

    def ref_for(hook: str):
        if reference is None:
            return None
        return reference.get(hook, rows, n_rows_total, n_pos, device, dtype)

    for (site, layer), keep in spec.entries.items():
        k = _KEEP_VIEW[site](keep.to(device=device, dtype=dtype))
        hook = adapter.hook_name(_SITE_HOOK.get(site, site), layer)
        if site in _SKIP_SOURCE:
            src = adapter.hook_name(_SKIP_SOURCE[site], layer)
            ref = ref_for(src)

            def store(x, hook, _src=src):
                stored[_src] = x
                return x

            stores[src] = store

            def cut(x, hook, _k=k, _src=src, _ref=ref):
                skip = stored[_src] if _ref is None else stored[_src] - _ref
                return x - (1 - _k) * skip

            edits.setdefault(hook, []).append((_ORDER.get(site, 1), cut))
        else:
            ref = ref_for(hook)

            def edit(x, hook, _k=k, _ref=ref):
                return _mix(x, _k, _ref)

            edits.setdefault(hook, []).append((_ORDER.get(site, 1), edit))

    hooks = []
    for hook, fns in edits.items():
        for _, fn in sorted(fns, key=lambda t: t[0]):
            hooks.append((hook, fn))
    # stores run after every edit at the same hook point (the skip carries the edited state)
    hooks += list(stores.items())
    return hooks


def rows_per_chunk(n_pos: int, max_batch_tokens: int) -> int:
    if max_batch_tokens < n_pos:
        raise MaskError(
            f"memory budget of {max_batch_tokens} tokens per forward is smaller than one row "
            f"({n_pos} tokens); raise max_batch_tokens"
        )
    return max(1, max_batch_tokens // n_pos)


@torch.no_grad()
def masked_forward(model, tokens, masks: MaskSpec, *, reference: Reference | Mapping[str, Tensor] | None = None,
                   baseline: Tensor | None = None, output: str | Callable[[Tensor], Tensor] = "last_logits",
                   max_batch_tokens: int | None = None, prefix_reuse: bool = True,
                   progress: bool | None = None) -> Tensor:
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
            [rows, pos, d_model], or a function of the last-position logits
            ``[chunk, vocab] -> [chunk, ...]`` (a metric), whose results are concatenated.
        max_batch_tokens: rows × positions per forward (memory budget); default 2048.
        prefix_reuse: run layers that no row of a chunk touches once, not per row.
        progress: tqdm bar over chunks (default: shown when there are more than 4 chunks).

    Returns:
        Tensor with ``n_rows`` as the leading axis.
    """
    adapter = as_adapter(model)
    tokens = adapter.as_tokens(tokens)
    if tokens.shape[0] != 1:
        raise MaskError(f"masked_forward takes one prompt; got a batch of {tokens.shape[0]}")
    if not isinstance(masks, MaskSpec):
        raise TypeError(f"masks must be a MaskSpec, got {type(masks).__name__}")
    if masks.n_rows == 0:
        raise MaskError("empty batch: the MaskSpec has no rows")
    if not (isinstance(output, str) and output in OUTPUTS) and not callable(output):
        raise ValueError(f"output must be one of {OUTPUTS} or a callable, got {output!r}")
    n_pos = tokens.shape[1]
    masks.validate(adapter.n_layers, adapter.n_heads, n_pos)
    if isinstance(reference, Reference):
        ref = reference
        if baseline is not None:
            ref = Reference(ref.values, baseline)
    elif reference is not None or baseline is not None:
        values = dict(reference.items()) if reference is not None else {}
        ref = Reference(values, baseline)
    else:
        ref = None
    budget = max_batch_tokens or DEFAULT_MAX_BATCH_TOKENS
    per_chunk = rows_per_chunk(n_pos, budget)
    n_chunks = math.ceil(masks.n_rows / per_chunk)
    if progress is None:
        progress = n_chunks > 4

    prefix_cache: dict[int, Tensor] = {}

    def prefix(layer: int) -> Tensor:
        """Residual entering ``layer`` for the unmasked prompt (computed once)."""
        if layer not in prefix_cache:
            prefix_cache[layer] = adapter.forward(tokens, stop_at_layer=layer, return_type=None)
        return prefix_cache[layer]

    chunks = masks.chunks(per_chunk)
    if progress:
        from tqdm.auto import tqdm

        chunks = tqdm(chunks, total=n_chunks, desc="masked forward", unit="chunk")
    outs = []
    for rows, chunk in chunks:
        b = chunk.n_rows
        hooks = build_hooks(adapter, chunk, ref, rows, masks.n_rows, n_pos)
        start = chunk.first_touched_layer() if prefix_reuse else None
        if start is not None and start > 0:
            inp = prefix(start).expand(b, -1, -1)
        else:
            start, inp = None, tokens.expand(b, -1)
        resid = adapter.final_resid(inp, fwd_hooks=hooks, start_at_layer=start)
        outs.append(_finish(adapter, resid, output))
    return torch.cat(outs)


def _finish(adapter: ModelAdapter, resid: Float[Tensor, "b pos d"], output) -> Tensor:
    if output == "final_resid":
        return resid
    if output in ("logits", "log_probs"):
        logits = adapter.logits_from_resid(resid)
        return logits.log_softmax(-1) if output == "log_probs" else logits
    last = adapter.logits_from_resid(resid[:, -1])
    if output == "last_logits":
        return last
    if output == "last_log_probs":
        return last.log_softmax(-1)
    return output(last)
