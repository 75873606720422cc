"""The batched masked forward: many per-row masks, one batched pass, chunked to a budget.

``masked_forward(model, tokens, masks)`` evaluates every row of a ``MaskSpec`` on the same
prompt. Rows are grouped into chunks of at most ``max_batch_tokens // n_pos`` rows; each
chunk is one forward whose hooks apply that chunk's masks (``x' = m·x + (1−m)·r``, see
``engine.masks``). With prefix reuse, rows are ordered by the first layer their masks touch;
when every row of a chunk leaves layers ``< l`` untouched, the residual entering layer ``l``
is computed once for the prompt and the chunk starts at ``l``. Only the last position is
unembedded unless full logits are asked for.

The same entry point serves every caller: several prompts of equal length in one call (rows
carry a prompt index), a capture mode (activations at chosen hooks per row), a gradient mode
(differentiable in the reference values / baseline; ``gradients.masked_forward_with_grads``
adds activation gradients through the same driver), and a shared masked prefix (rows that
differ from a base mask only from some layer on start there). The chunk scheduler
(``_drive``), hook builder (``_build_hooks``) and prefix providers (``_Prefix``) are private;
model-class differences are behind the adapter (``engine.protocol.EngineAdapter``).

The slow, obvious twin is ``engine.reference.masked_forward_loop`` (one ``run_with_hooks``
per row); tests hold the two equal.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Callable, Mapping, Sequence

import torch
from jaxtyping import Float
from torch import Tensor

from ..adapter import ModelAdapter, as_adapter
from . import causal
from .edges import EDGE_INPUT_HOOKS, edge_hooks
from .masks import EDGE_SITES, MaskError, MaskSpec

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
    ``hook_embed`` entry in ``values`` takes precedence over it. ``per_prompt=True``: the
    leading axis of every value is the prompt (``[n_prompts, ...]``, e.g. the clean cache of
    a batch of prompts), and each row reads its own prompt's value.
    """

    def __init__(self, values: Mapping[str, Tensor] | None = None, baseline: Tensor | None = None,
                 n_rows: int | None = None, per_prompt: bool = False):
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
        self.per_prompt = per_prompt

    def get(self, hook: str, rows: Rows, n_rows: int, n_pos: int, device, dtype,
            prompts: Tensor | None = None, n_prompts: int = 1) -> Tensor | None:
        """The ablation value at ``hook`` for the batch rows ``rows`` (None: zero);
        ``prompts``: the prompt index of each of those rows."""
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
        if self.per_prompt:
            if v.shape[0] != n_prompts:
                raise MaskError(f"per-prompt reference {hook!r} has {v.shape[0]} prompts; the batch has {n_prompts}")
            v = v[prompts.to(v.device)] if prompts is not None else v[:1]
        elif v.shape[0] == n_rows:
            v = v[rows]
        elif v.shape[0] != 1:
            raise MaskError(f"reference {hook!r} has {v.shape[0]} rows; expected 1 or {n_rows}")
        return v.to(device=device, dtype=dtype)


def as_reference(reference, baseline=None) -> Reference | None:
    """``Reference`` from a Reference, dict or ActivationCache (plus an optional baseline)."""
    if isinstance(reference, Reference):
        if baseline is None:
            return reference
        return Reference(reference.values, baseline, reference.n_rows, reference.per_prompt)
    if reference is None and baseline is None:
        return None
    return Reference(reference, baseline)


def _site_hooks(adapter: ModelAdapter, site: str, layer: int | None) -> list[str]:
    """Hook names whose reference values ``site`` reads (edge sites read the senders' hooks,
    checked when read)."""
    if site in EDGE_SITES:
        return []
    if site in ("skip_attn", "skip_mlp"):
        return [adapter.hook_name(_SKIP_SOURCE[site], layer)]
    return [adapter.hook_name(site, layer)]


def _check_reference(adapter: ModelAdapter, spec: MaskSpec, reference: Reference | None, n_pos: int,
                     n_prompts: int) -> None:
    """Raise MaskError now (before any forward) if a reference value the spec needs does not
    fit the prompt or the batch."""
    if reference is None:
        return
    for site, layer in spec.entries:
        for hook in _site_hooks(adapter, site, layer):
            reference.get(hook, slice(0, 1), spec.n_rows, n_pos, "cpu", torch.float32,
                          torch.zeros(1, dtype=torch.long), n_prompts)


def _build_hooks(adapter: ModelAdapter, spec: MaskSpec, reference: Reference | None, rows: Rows,
                 n_rows_total: int, n_pos: int, prompts: Tensor | None = None,
                 n_prompts: int = 1) -> list[tuple[str, Callable]]:
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
        return reference.get(hook, rows, n_rows_total, n_pos, device, dtype, prompts, n_prompts)
    edges = {key: keep.to(device=device) for key, keep in spec.entries.items() if key[0] in EDGE_SITES}
    for (site, layer), keep in spec.entries.items():
        if site in EDGE_SITES:
            continue
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
    return hooks + edge_hooks(adapter, edges, ref_for, n_pos)


def _rows_per_chunk(n_pos: int, max_batch_tokens: int) -> int:
    if not isinstance(max_batch_tokens, int) or max_batch_tokens < n_pos:
        raise MaskError(
            f"memory budget of {max_batch_tokens} tokens per forward is smaller than one row "
            f"({n_pos} tokens); raise max_batch_tokens"
        )
    return max(1, max_batch_tokens // n_pos)


def _hook_layer(name: str) -> int:
    """The block a hook name belongs to (0 for hooks before the first block)."""
    return int(name.split(".")[1]) if name.startswith("blocks.") else 0


class _Prefix:
    """Prefix provider: the residual entering layer ``l`` of every prompt, ``[n_prompts, pos,
    d_model]``, with the masks of ``base`` (a one-row ``MaskSpec``; None: the unmasked model)
    applied below ``l``; each layer computed once, from the nearest layer below already
    computed. ``row_start_layers`` says where each row of a spec may start from it: the first
    layer where the row's masks differ from ``base``."""

    def __init__(self, adapter: ModelAdapter, tokens: Tensor, base: MaskSpec | None = None):
        self.adapter, self.tokens, self.base = adapter, tokens, base
        self.hooks = [] if base is None else _build_hooks(adapter, base, None, slice(0, 1), 1, tokens.shape[1])
        self.cache: dict[int, Tensor] = {}

    @torch.no_grad()
    def __call__(self, layer: int) -> Tensor:
        if layer not in self.cache:
            below = [l for l in self.cache if l < layer]
            if below:
                l0 = max(below)
                x = self.adapter.forward_to(self.cache[l0], layer, fwd_hooks=self.hooks, start_at_layer=l0)
            else:
                x = self.adapter.forward_to(self.tokens, layer, fwd_hooks=self.hooks)
            self.cache[layer] = x
        return self.cache[layer]

    def row_start_layers(self, masks: MaskSpec) -> Tensor:
        n_layers = self.adapter.n_layers
        if self.base is None:
            return masks.row_start_layers(n_layers)
        start = torch.full((masks.n_rows,), n_layers, dtype=torch.long)
        for key in set(masks.entries) | set(self.base.entries):
            row = masks.entries.get(key)
            base = self.base.entries.get(key)
            row = torch.ones(1, dtype=torch.bool) if row is None else row
            base = torch.ones(1, dtype=torch.bool) if base is None else base
            differs = torch.ne(row.float(), base.float())
            differs = differs.reshape(differs.shape[0], -1).any(1).expand(masks.n_rows)
            start[differs] = torch.clamp(start[differs], max=0 if key[1] is None else key[1])
        return start


def _run_chunk(adapter: ModelAdapter, tokens: Tensor, chunk: MaskSpec, reference: Reference | None,
               rows: Rows, n_rows_total: int, prompts: Tensor, start: int | None, prefix: _Prefix | None,
               extra_hooks: Sequence[tuple[str, Callable]] = ()) -> Float[Tensor, "b pos d_model"]:
    """One batched forward of ``chunk`` to the final residual (before the final norm).

    ``prompts``: the prompt index of each row; ``start``: first layer to run (the layers
    below come from ``prefix``); None or 0 runs from the tokens. ``extra_hooks`` run after
    the mask edits at the same hook points.
    """
    n_prompts, n_pos = tokens.shape
    b = chunk.n_rows
    hooks = _build_hooks(adapter, chunk, reference, rows, n_rows_total, n_pos, prompts, n_prompts) + list(extra_hooks)

    def per_row(x: Tensor) -> Tensor:  # [n_prompts, ...] -> [b, ...]
        return x.expand(b, *x.shape[1:]) if x.shape[0] == 1 else x[prompts.to(x.device)]

    if start is not None and start >= adapter.n_layers and prefix is not None:
        return per_row(prefix(adapter.n_layers))
    if start is not None and start > 0 and prefix is not None:
        inp = per_row(prefix(start))
    else:
        start, inp = None, per_row(tokens)
    # edge masks, or hooks on receiver inputs, need the model's per-receiver residual copies
    split = chunk.has_edges() or any(isinstance(h, str) and h.endswith(EDGE_INPUT_HOOKS) for h, _ in extra_hooks)
    with adapter.edge_inputs() if split else contextlib.nullcontext():
        return adapter.forward_to(inp, adapter.n_layers, fwd_hooks=hooks, start_at_layer=start)


@dataclass
class _Run:
    """A checked call: adapter, prompts ``[n_prompts, pos]``, reference, prompt index per row,
    rows per forward."""

    adapter: ModelAdapter
    tokens: Tensor
    masks: MaskSpec
    reference: Reference | None
    prompt_index: Tensor
    per_chunk: int


def _prepare(model, tokens, masks: MaskSpec, reference, baseline, max_batch_tokens, prompt_index=None,
             shared_prefix: MaskSpec | None = None, chunk_rows: int | None = None) -> _Run:
    """Shared argument checks of the kernel's entry points."""
    adapter = as_adapter(model)
    tokens = adapter.as_tokens(tokens)
    if tokens.shape[1] == 0:
        raise MaskError("empty prompt: no tokens")
    if not isinstance(masks, MaskSpec):
        raise TypeError(f"masks must be a MaskSpec, got {type(masks).__name__}")
    if masks.n_rows == 0:
        raise MaskError("empty batch: the MaskSpec has no rows")
    n_prompts, n_pos = tokens.shape
    if prompt_index is None:
        if n_prompts != 1:
            raise MaskError(f"{n_prompts} prompts: pass prompt_index (the prompt of each of the {masks.n_rows} rows)")
        prompt_index = torch.zeros(masks.n_rows, dtype=torch.long)
    prompt_index = torch.as_tensor(prompt_index, dtype=torch.long).cpu()
    if prompt_index.shape != (masks.n_rows,):
        raise MaskError(f"prompt_index must hold one prompt per row ({masks.n_rows}), got {tuple(prompt_index.shape)}")
    if len(prompt_index) and (int(prompt_index.min()) < 0 or int(prompt_index.max()) >= n_prompts):
        raise MaskError(f"prompt_index must lie in [0, {n_prompts})")
    masks.validate(adapter.n_layers, adapter.n_heads, n_pos, adapter.n_kv_heads)
    if shared_prefix is not None:
        if not isinstance(shared_prefix, MaskSpec) or shared_prefix.n_rows != 1:
            raise MaskError("shared_prefix must be a one-row MaskSpec")
        if any(site == "embed" for site, _ in shared_prefix.entries) or n_prompts != 1:
            raise MaskError("shared_prefix takes one prompt and no input mask")
        shared_prefix.validate(adapter.n_layers, adapter.n_heads, n_pos, adapter.n_kv_heads)
    ref = as_reference(reference, baseline)
    _check_reference(adapter, masks, ref, n_pos, n_prompts)
    budget = DEFAULT_MAX_BATCH_TOKENS if max_batch_tokens is None else max_batch_tokens
    per_chunk = _rows_per_chunk(n_pos, budget)
    if chunk_rows is not None:
        if not isinstance(chunk_rows, int) or chunk_rows < 1:
            raise ValueError(f"chunk_rows must be a positive int, got {chunk_rows!r}")
        per_chunk = min(per_chunk, chunk_rows)
    return _Run(adapter, tokens, masks, ref, prompt_index, per_chunk)


def _drive(run: _Run, prefix: _Prefix | None, capture: Sequence[str] = (), grad: bool = False,
           progress: bool | None = None):
    """The one driver loop: yield ``(row indices, chunk, final residual, captured)`` per
    forward. With a ``prefix`` provider the rows are ordered by the layer they may start at
    (no later than the first captured hook) and each chunk starts at its lowest; without,
    rows run in order from the tokens. ``captured``: activation at each hook of ``capture``
    (after the mask edits), made a leaf that requires grad when ``grad``."""
    adapter, masks = run.adapter, run.masks
    if prefix is not None:
        starts = prefix.row_start_layers(masks)
        if capture:
            starts = starts.clamp(max=min(_hook_layer(h) for h in capture))
        order = torch.sort(starts, stable=True).indices
    else:
        order = torch.arange(masks.n_rows)
    n_chunks = math.ceil(masks.n_rows / run.per_chunk)
    steps = range(0, masks.n_rows, run.per_chunk)
    if progress is None:
        progress = n_chunks > 4
    if progress:
        from tqdm.auto import tqdm

        steps = tqdm(steps, total=n_chunks, desc="masked forward", unit="chunk")
    for i in steps:
        idx = order[i:i + run.per_chunk]
        if prefix is None:
            rows = slice(i, min(i + run.per_chunk, masks.n_rows))
            chunk, start = masks.select(rows), None
        else:
            rows, chunk, start = idx, masks.select(idx).pruned(), int(starts[idx].min())
        store: dict[str, Tensor] = {}

        def make_grab(name):  # keyed by the name we hooked (a bridge reports its canonical alias)
            def grab(x, hook):
                if grad and not x.requires_grad:
                    x = x.detach().requires_grad_(True)
                store[name] = x
                return x
            return grab

        with torch.set_grad_enabled(grad):
            resid = _run_chunk(adapter, run.tokens, chunk, run.reference, rows, masks.n_rows, run.prompt_index[idx],
                               start, prefix, extra_hooks=[(h, make_grab(h)) for h in capture])
        missing = [h for h in capture if h not in store]
        if missing:
            raise ValueError(f"hooks never ran (misspelt?): {missing}")
        yield idx, chunk, resid, store


class _Rows:
    """Per-row outputs gathered chunk by chunk into one tensor in the rows' order (a buffer
    written in place; with ``grad`` the parts are concatenated so autograd sees them)."""

    def __init__(self, n_rows: int, grad: bool = False):
        self.n_rows, self.grad = n_rows, grad
        self.buffer: Tensor | None = None
        self.parts: list[Tensor] = []
        self.order: list[Tensor] = []

    def put(self, idx: Tensor, out: Tensor) -> None:
        if self.grad:
            self.parts.append(out)
            self.order.append(idx)
            return
        if self.buffer is None:
            self.buffer = out.new_empty((self.n_rows, *out.shape[1:]))
        self.buffer[idx.to(out.device)] = out

    def result(self) -> Tensor:
        if not self.grad:
            return self.buffer
        x = torch.cat(self.parts)
        inv = torch.empty(self.n_rows, dtype=torch.long)
        inv[torch.cat(self.order)] = torch.arange(self.n_rows)
        return x[inv.to(x.device)]


def masked_forward(model, tokens, masks: MaskSpec, *, reference: Reference | Mapping[str, Tensor] | None = None,
                   baseline: Tensor | None = None, output: str | Callable[[Tensor], Tensor] = "last_logits",
                   metric_input: str = "last_logits", max_batch_tokens: int | None = None,
                   prefix_reuse: bool = True, progress: bool | None = None, prompt_index=None,
                   capture: Sequence[str] = (), grad: bool = False, shared_prefix: MaskSpec | None = None,
                   chunk_rows: int | None = None, position_reuse: bool | str = False,
                   reuse_plan: dict | None = None):
    """Evaluate every row of ``masks`` in batched, chunked forwards.

    Args:
        model: HookedTransformer, TransformerBridge or ModelAdapter.
        tokens: the prompt, ``[pos]`` or ``[1, pos]`` (or a string); or several prompts of
            equal length ``[n_prompts, pos]`` with ``prompt_index``.
        masks: ``MaskSpec`` with ``n_rows`` rows.
        reference: ablation values by hook name (``Reference``, a dict or an
            ``ActivationCache``); zero ablation where absent. For several prompts, a
            ``Reference(..., per_prompt=True)`` gives each row its own prompt's values.
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
            once per prompt, not per row.
        progress: tqdm bar over chunks (default: shown when there are more than 4 chunks).
        prompt_index: ``[n_rows]`` prompt of each row (needed with several prompts).
        capture: hook names whose activations (after the masks' edits) are returned per row.
        grad: gradient mode: the forward is differentiable (e.g. in a ``baseline`` or a
            ``reference`` that requires grad; model parameters are not touched).
        shared_prefix: a one-row ``MaskSpec`` the rows share below the layer where they
            first differ from it (rows still carry their whole masks): the prefix is run
            once with it, and each row starts at its first differing layer.
        chunk_rows: at most this many rows per forward (default: what the budget allows).
        position_reuse: causal prefix reuse by position (``engine.causal``; one prompt, no
            ``capture``, ``grad`` or ``shared_prefix``): True computes each distinct masked
            prefix once and continues every row from its key/value cache; ``"auto"`` does so
            only where it saves work; False (default) runs dense. Where the model class has no
            key/value cache forward (or the call is not one it takes, with ``"auto"``) it runs
            dense.
        reuse_plan: a dict filled with the ``causal.ReusePlan`` (computed vs dense token
            positions, and which path ran) when ``position_reuse`` is on.

    Returns:
        Tensor with ``n_rows`` as the leading axis, rows in the order of ``masks``; with
        ``capture``, ``(that tensor, {hook: [n_rows, ...]})``.
    """
    if not (isinstance(output, str) and output in OUTPUTS) and not callable(output):
        raise ValueError(f"output must be one of {OUTPUTS} or a callable, got {output!r}")
    if metric_input not in METRIC_INPUTS:
        raise ValueError(f"metric_input must be one of {METRIC_INPUTS}, got {metric_input!r}")
    run = _prepare(model, tokens, masks, reference, baseline, max_batch_tokens, prompt_index, shared_prefix,
                   chunk_rows)
    # -- causal prefix reuse by position: engine/causal.py (None: take the dense path below)
    if position_reuse is not False:
        if run.tokens.shape[0] == 1 and not capture and not grad and shared_prefix is None:
            out = causal.dispatch(run.adapter, run.tokens, masks, run.reference, output, metric_input,
                                  DEFAULT_MAX_BATCH_TOKENS if max_batch_tokens is None else max_batch_tokens,
                                  position_reuse, prefix_reuse, progress, reuse_plan, _CAUSAL_HELPERS)
            if out is not None:
                return out
        elif position_reuse is True:
            raise ValueError("position_reuse=True takes one prompt and no capture, grad or shared_prefix")
    # -- end of causal prefix reuse
    prefix = _Prefix(run.adapter, run.tokens, shared_prefix) if (prefix_reuse or shared_prefix is not None) else None
    capture = list(capture)
    out_rows = _Rows(masks.n_rows, grad)
    captured = {h: _Rows(masks.n_rows, grad) for h in capture}
    for idx, _, resid, store in _drive(run, prefix, capture, grad, progress):
        with torch.set_grad_enabled(grad):
            out = _finish(run.adapter, resid, row_metric(output, idx), metric_input)
        del resid
        out_rows.put(idx, out)
        for h in capture:
            captured[h].put(idx, store[h] if grad else store[h].detach())
    result = out_rows.result()
    if capture:
        return result, {h: c.result() for h, c in captured.items()}
    return result


def row_metric(output, idx: Tensor):
    """The metric for one chunk's rows ``idx``: a metric holding one target per row
    (``per_row_targets``, e.g. one prompt's answers per row) is narrowed by ``for_rows``."""
    if callable(output) and getattr(output, "per_row_targets", False):
        return output.for_rows(idx)
    return output


# last-position logits handed to a metric at once (a row-wise metric is applied block by block)
FINISH_LOGITS_BYTES = 8 * 2**20


def _finish(adapter: ModelAdapter, resid: Float[Tensor, "b pos d"], output, metric_input="last_logits") -> Tensor:
    """Turn a chunk's final residual into the requested output."""
    if callable(output):
        if metric_input == "final_resid":
            return output(resid)
        if metric_input == "logits":
            return output(adapter.logits_from_resid(resid))
        last = resid[:, -1]
        block = max(1, FINISH_LOGITS_BYTES // (adapter.d_vocab * last.element_size()))
        if last.shape[0] <= block or getattr(output, "per_row_targets", False):
            return output(adapter.logits_from_resid(last))
        # a row-wise metric on blocks of rows: logits of a few MB stay in cache and reuse
        # their memory, where [rows, vocab] at once costs page faults and memory traffic
        return torch.cat([output(adapter.logits_from_resid(last[a:a + block]))
                          for a in range(0, last.shape[0], block)])
    if output == "final_resid":
        return resid
    if output in ("logits", "log_probs"):
        logits = adapter.logits_from_resid(resid)
        return logits.log_softmax(-1) if output == "log_probs" else logits
    last = adapter.logits_from_resid(resid[:, -1])
    if output == "last_logits":
        return last
    return last.log_softmax(-1)


# -- causal prefix reuse by position (engine/causal.py): the kernel helpers it uses, and its plan
_CAUSAL_HELPERS = SimpleNamespace(build_hooks=_build_hooks, finish=_finish, site_hooks=_site_hooks,
                                  rows_per_chunk=_rows_per_chunk)


def reuse_plan(model, tokens, masks: MaskSpec, *, reference=None, baseline=None,
               max_batch_tokens: int | None = None) -> "causal.ReusePlan":
    """The causal prefix reuse plan of ``masks`` on one prompt (computed vs dense token
    positions, trie nodes, chunks, forwards) without running the model."""
    run = _prepare(model, tokens, masks, reference, baseline, max_batch_tokens)
    budget = DEFAULT_MAX_BATCH_TOKENS if max_batch_tokens is None else max_batch_tokens
    return causal.plan(run.adapter, masks, run.reference, run.tokens.shape[1], budget, _CAUSAL_HELPERS)[3]
