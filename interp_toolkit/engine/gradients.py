"""Masked forwards that also capture activations and the metric's gradient at chosen hooks.

The gradient twin of ``masked_forward`` for attribution methods: one batched forward of a
``MaskSpec`` (the same mask semantics and hooks), the activations at ``capture`` hooks taken
after the masks' edits, and ``d metric_row / d activation`` per row (rows are independent,
so the gradient of the sum over rows gives every row's own gradient). Only activation
gradients are computed — never parameter gradients.
"""

from __future__ import annotations

from typing import Callable, Mapping, Sequence

import torch
from torch import Tensor

from ..adapter import as_adapter
from .kernel import _drive, _finish, _prepare, _Prefix, row_metric
from .masks import MaskSpec


def ensure_eval(model) -> None:
    """Refuse models in train mode (dropout would make every forward different)."""
    if as_adapter(model).model.training:
        raise RuntimeError("the model is in train mode (dropout active); call model.eval() before attribution")


def masked_forward_with_grads(model, tokens, masks: MaskSpec, metric: Callable[[Tensor], Tensor],
                              capture: Sequence[str], *, reference: Mapping[str, Tensor] | None = None,
                              baseline: Tensor | None = None, metric_input: str = "last_logits",
                              max_batch_tokens: int | None = None, prefix_reuse: bool = False,
                              reduce: Callable[[str, Tensor, Tensor, Tensor], Tensor] | None = None,
                              prompt_index=None):
    """Run ``masks`` like ``masked_forward`` and return per row the metric, and at each hook of
    ``capture`` the activation and the metric's gradient with respect to it (the kernel's
    driver in gradient mode).

    Args:
        metric: ``[chunk, vocab] -> [chunk]`` (rows independent), differentiable.
        capture: hook names (e.g. ``adapter.hook_name("z", 3)``; receiver inputs such as
            ``hook_q_input`` / ``hook_mlp_in`` run the model inside ``edge_inputs()``).
        prompt_index: ``[n_rows]`` prompt of each row when ``tokens`` holds several prompts.
        prefix_reuse: start chunks at the first layer their masks touch (never above a
            captured hook; default off).
        reduce: optional ``reduce(hook, rows, activation, grad) -> Tensor | None`` called per
            chunk (``rows``: the chunk's row indices) to keep only what the caller needs (or to
            accumulate it itself and return None); results are concatenated in row order.

    Returns:
        ``(values [rows], acts {hook: [rows, ...]}, grads {hook: [rows, ...]})``, or with
        ``reduce`` ``(values, reduced {hook: [rows, ...]})``.
    """
    ensure_eval(model)
    run = _prepare(model, tokens, masks, reference, baseline, max_batch_tokens, prompt_index)
    capture = list(capture)
    prefix = _Prefix(run.adapter, run.tokens) if prefix_reuse else None
    values, order = [], []
    acts: dict[str, list[Tensor]] = {h: [] for h in capture}
    grads: dict[str, list[Tensor]] = {h: [] for h in capture}
    for idx, chunk, resid, store in _drive(run, prefix, capture, grad=True, progress=False):
        with torch.enable_grad():
            v = _finish(run.adapter, resid, row_metric(metric, idx), metric_input)
            if v.shape != (chunk.n_rows,):
                raise ValueError(f"the metric must return one value per row; got shape {tuple(v.shape)}")
            g = torch.autograd.grad(v.sum(), [store[h] for h in capture], allow_unused=True)
        order.append(idx)
        values.append(v.detach())
        for h, gh in zip(capture, g):
            a = store[h].detach()
            gh = torch.zeros_like(a) if gh is None else gh.detach()
            if reduce is not None:
                r = reduce(h, idx, a, gh)
                if r is not None:
                    acts[h].append(r)
            else:
                acts[h].append(a)
                grads[h].append(gh)
    order = torch.cat(order)
    inv = torch.empty_like(order)
    inv[order] = torch.arange(len(order))

    def cat(parts):
        x = torch.cat(parts)
        return x[inv.to(x.device)]

    vals = cat(values)
    if reduce is not None:
        return vals, {h: cat(p) for h, p in acts.items() if p}
    return vals, {h: cat(p) for h, p in acts.items()}, {h: cat(p) for h, p in grads.items()}
