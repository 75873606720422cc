"""Slow, obvious twin of the kernel: one ``run_with_hooks`` per mask row.

Written independently of the kernel's hook builder (plain loops, full forwards, no chunking,
no prefix reuse) so that tests comparing the two catch a mistake in either.
"""

from __future__ import annotations

from typing import Callable, Mapping

import torch
from torch import Tensor

from ..adapter import as_adapter
from .masks import MaskSpec


@torch.no_grad()
def masked_forward_loop(model, tokens, masks: MaskSpec, *, reference: Mapping[str, Tensor] | None = None,
                        baseline: Tensor | None = None,
                        output: str | Callable[[Tensor], Tensor] = "last_logits",
                        metric_input: str = "last_logits") -> Tensor:
    """Same contract as ``masked_forward`` for a single prompt; one forward per row."""
    adapter = as_adapter(model)
    tokens = adapter.as_tokens(tokens)
    if reference is not None and hasattr(reference, "values") and hasattr(reference, "baseline"):
        baseline = reference.baseline if baseline is None else baseline
        reference = reference.values  # an engine Reference
    ref = dict(reference.items()) if reference is not None else {}
    results = []
    for row in range(masks.n_rows):
        hooks = []
        saved: dict[str, Tensor] = {}

        def ablation_value(name: str, x: Tensor) -> Tensor:
            if name == "hook_embed" and name not in ref and baseline is not None:
                b = torch.as_tensor(baseline, dtype=x.dtype)
                return b.expand_as(x[0]) if b.ndim == 1 else b
            if name in ref:
                r = ref[name].to(x.dtype)
                return r[row] if r.shape[0] == masks.n_rows and masks.n_rows > 1 else r[0]
            return torch.zeros_like(x[0])

        for (site, layer), keep in masks.entries.items():
            m = keep[row].to(adapter.dtype)
            if site in ("skip_attn", "skip_mlp", "resid_mid"):
                # resid_mid = resid_pre + attn_out and resid_post = resid_mid + mlp_out: the edit
                # of the residual is made by changing the sublayer output added to it
                src_site = "resid_mid" if site == "skip_mlp" else "resid_pre"
                out_site = "mlp_out" if site == "skip_mlp" else "attn_out"
                src, out = adapter.hook_name(src_site, layer), adapter.hook_name(out_site, layer)
                ref_name = adapter.hook_name("resid_mid", layer) if site == "resid_mid" else src

                def save(x, hook, _src=src):
                    saved[_src] = x[0].clone()

                def cut(x, hook, _src=src, _m=m, _site=site, _ref=ref_name):
                    skip = saved[_src]
                    r = ablation_value(_ref, x)
                    y = x.clone()
                    for t in range(x.shape[1]):
                        mt = _m[t] if _m.shape[0] > 1 else _m[0]
                        resid = skip[t] + x[0, t]
                        if _site == "resid_mid":
                            new = mt * resid + (1 - mt) * r[t]
                        else:  # replace the skip term by m·skip + (1−m)·r
                            new = resid - skip[t] + (mt * skip[t] + (1 - mt) * r[t])
                        y[0, t] = new - skip[t]
                    return y

                hooks.append((out, cut, 3 if site == "resid_mid" else 2, src, save))
                continue
            name = adapter.hook_name(site, layer)

            def edit(x, hook, _m=m, _site=site, _name=name):
                r = ablation_value(_name, x)
                y = x.clone()
                if _site == "pattern":
                    H, D, S = x.shape[1:]
                    for h in range(H):
                        for d in range(D):
                            for s in range(S):
                                mm = _m[h if _m.shape[0] > 1 else 0, d if _m.shape[1] > 1 else 0,
                                        s if _m.shape[2] > 1 else 0]
                                y[0, h, d, s] = mm * x[0, h, d, s] + (1 - mm) * r[h, d, s]
                elif _site in ("z", "q", "k", "v"):
                    P, H = x.shape[1:3]
                    for p in range(P):
                        for h in range(H):
                            mm = _m[p if _m.shape[0] > 1 else 0, h if _m.shape[1] > 1 else 0]
                            y[0, p, h] = mm * x[0, p, h] + (1 - mm) * r[p, h]
                else:
                    for p in range(x.shape[1]):
                        mm = _m[p if _m.shape[0] > 1 else 0]
                        y[0, p] = mm * x[0, p] + (1 - mm) * r[p]
                return y

            hooks.append((name, edit, 1, None, None))

        fwd_hooks = []
        for name, fn, _, _, _ in sorted(hooks, key=lambda h: h[2]):
            fwd_hooks.append((name, fn))
        for _, _, _, src, save in hooks:
            if src is not None:
                fwd_hooks.append((src, save))
        if output in ("last_logits", "last_log_probs") or (callable(output) and metric_input == "last_logits"):
            # only the last position is decoded (full logits of large vocabularies are slow)
            resid = adapter.final_resid(tokens, fwd_hooks=fwd_hooks)
            logits = adapter.logits_from_resid(resid[:, -1:])
        else:
            logits = adapter.forward(tokens, fwd_hooks=fwd_hooks)
        if output == "last_logits":
            results.append(logits[0, -1])
        elif output == "last_log_probs":
            results.append(logits[0, -1].log_softmax(-1))
        elif output == "logits":
            results.append(logits[0])
        elif output == "log_probs":
            results.append(logits[0].log_softmax(-1))
        elif callable(output) and metric_input == "logits":
            results.append(output(logits)[0])
        elif callable(output) and metric_input == "last_logits":
            results.append(output(logits[:, -1])[0])
        else:
            raise ValueError(f"unsupported output {output!r} in the loop reference")
    return torch.stack(results)
