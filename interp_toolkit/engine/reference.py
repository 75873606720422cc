"""Slow, obvious twin of the kernel: one ``run_with_hooks`` per mask row.

Written independently of the kernel's hook builder (plain loops, full forwards, no chunking,
no prefix reuse) so that tests comparing the two catch a mistake in either.
"""

from __future__ import annotations

import contextlib
from typing import Callable, Mapping

import torch
from torch import Tensor

from ..adapter import as_adapter
from .masks import EDGE_SITES, MaskSpec, n_senders


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
    all_tokens = tokens
    for row in range(masks.n_rows):
        tokens = all_tokens[row:row + 1] if all_tokens.shape[0] > 1 else all_tokens
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

        edge_entries = {k: v[row] for k, v in masks.entries.items() if k[0] in EDGE_SITES}
        if edge_entries:
            hooks += _edge_loop_hooks(adapter, edge_entries, ablation_value)
        for (site, layer), keep in masks.entries.items():
            if site in EDGE_SITES:
                continue
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
        ctx = adapter.edge_inputs() if edge_entries else contextlib.nullcontext()
        with ctx:
            if output in ("last_logits", "last_log_probs") or (callable(output) and metric_input == "last_logits"):
                # only the last position is decoded (full logits of large vocabularies are slow)
                resid = adapter.final_resid(tokens, fwd_hooks=fwd_hooks)
                logits = adapter.logits_from_resid(resid[:, -1:])
            else:
                logits = adapter.forward(tokens, fwd_hooks=fwd_hooks)
        if callable(output) and getattr(output, "per_row_targets", False):
            metric = output.for_rows(torch.tensor([row]))
        else:
            metric = output
        if output == "last_logits":
            results.append(logits[0, -1])
        elif output == "last_log_probs":
            results.append(logits[0, -1].log_softmax(-1))
        elif output == "logits":
            results.append(logits[0])
        elif output == "log_probs":
            results.append(logits[0].log_softmax(-1))
        elif callable(output) and metric_input == "logits":
            results.append(metric(logits)[0])
        elif callable(output) and metric_input == "last_logits":
            results.append(metric(logits[:, -1])[0])
        else:
            raise ValueError(f"unsupported output {output!r} in the loop reference")
    return torch.stack(results)


def _edge_loop_hooks(adapter, entries: dict, ablation_value) -> list:
    """Edge sites of one row, written as loops: each sender's output is recorded per position
    (heads: ``z[p, h] @ W_O[h]``); each receiver input gets ``(1 − m)·(ref − out)`` added,
    sender by sender, position by position, head by head."""
    L, H = adapter.n_layers, adapter.n_heads
    out: dict[int, Tensor] = {}   # sender -> [pos, d_model] output in this run
    refv: dict[int, Tensor] = {}  # sender -> [pos, d_model] reference output
    hooks = []

    def rec_embed(name):
        def f(x, hook):
            r = ablation_value(name, x)
            out[0] = out.get(0, 0) + x[0].clone()
            refv[0] = refv.get(0, 0) + r
            return x
        return f

    def rec_z(l, name):
        def f(z, hook):
            r = ablation_value(name, z)
            W = adapter.W_O(l)
            for h in range(H):
                s = 1 + l * (H + 1) + h
                out[s] = torch.stack([z[0, p, h] @ W[h] for p in range(z.shape[1])])
                refv[s] = torch.stack([r[p, h] @ W[h] for p in range(z.shape[1])])
            return z
        return f

    def rec_mlp(l, name):
        def f(x, hook):
            s = 1 + l * (H + 1) + H
            out[s], refv[s] = x[0].clone(), ablation_value(name, x)
            return x
        return f

    names = ["embed"] + (["pos_embed"] if adapter.positional == "standard" else [])
    for n in names:
        hooks.append((adapter.hook_name(n), rec_embed(adapter.hook_name(n)), 3.5, None, None))
    for l in range(L):
        hooks.append((adapter.hook_name("z", l), rec_z(l, adapter.hook_name("z", l)), 3.5, None, None))
        hooks.append((adapter.hook_name("mlp_out", l), rec_mlp(l, adapter.hook_name("mlp_out", l)), 3.5, None, None))

    def receive(site, layer, m):
        def f(x, hook):
            y = x.clone()
            for s in range(n_senders(L, H)):
                if s not in out:  # not written yet: not upstream of this receiver
                    continue
                for p in range(x.shape[1]):
                    mp = m[p if m.shape[0] > 1 else 0]
                    if site in ("edge_q", "edge_k", "edge_v"):
                        for h in range(H):
                            w = 1 - mp[h if mp.shape[0] > 1 else 0, s if mp.shape[1] > 1 else 0]
                            y[0, p, h] = y[0, p, h] + w * (refv[s][p] - out[s][p])
                    else:
                        w = 1 - mp[s if mp.shape[0] > 1 else 0]
                        y[0, p] = y[0, p] + w * (refv[s][p] - out[s][p])
            return y
        return f

    receivers = {"edge_q": "q_input", "edge_k": "k_input", "edge_v": "v_input", "edge_mlp": "mlp_in"}
    for (site, layer), m in entries.items():
        name = (adapter.hook_name("resid_post", L - 1) if site == "edge_logits"
                else adapter.hook_name(receivers[site], layer))
        hooks.append((name, receive(site, layer, m.to(adapter.dtype)), 4, None, None))
    return hooks
