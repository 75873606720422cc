"""Decode every layer of a batch of prompts with a lens (one observation forward per chunk).

For prompt ``n``, layer ``l`` (state at ``site`` of block ``l``) and position ``p``::

    q[n, l, p]   = softmax(lens(h[n, l, p]))            lens distribution   [d_vocab]
    f[n, p]      = softmax(model logits[n, p])          output distribution
    kl[n, l, p]  = Σ_v f_v (log f_v − log q_v)          KL(output ‖ lens), nats
    rank(t)      = 1 + #{v : logit_v > logit_t}         1 = top-1 (ties count in t's favour)

Prompts are tokenised one by one and right-padded to a chunk: under causal attention the
padding never reaches the real positions, so each prompt's numbers are those of its own
forward. Only ``adapter.run_with_cache`` touches the model.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from jaxtyping import Float, Int
from torch import Tensor
from tqdm.auto import tqdm

from ..adapter import as_adapter
from .lenses import LogitLens, check_site
from .results import LensResult


def target_id(adapter, target) -> int:
    """A single-token target as its id (``adapter.token_id``: an id, or text of exactly one token)."""
    return adapter.token_id(target)


def ranks_of(logits: Float[Tensor, "... v"], ids: Int[Tensor, "..."]) -> Int[Tensor, "..."]:
    """1-based rank of ``ids`` under ``logits`` (1 + number of strictly larger logits)."""
    own = logits.gather(-1, ids[..., None])
    return (logits > own).sum(-1) + 1


def kl_div(log_p: Float[Tensor, "... v"], log_q: Float[Tensor, "... v"]) -> Float[Tensor, "..."]:
    """KL(p ‖ q) = Σ p (log p − log q) in nats, over the last axis."""
    return (log_p.exp() * (log_p - log_q)).sum(-1)


def _tokenise(adapter, prompts, prepend_bos):
    if isinstance(prompts, str):
        prompts = [prompts]
    if isinstance(prompts, Tensor):
        rows = [r for r in (prompts if prompts.ndim == 2 else prompts[None])]
        return [adapter.as_tokens(r)[0] for r in rows], None
    if not len(prompts):
        raise ValueError("no prompts given")
    rows = [adapter.as_tokens(p, prepend_bos=prepend_bos)[0] for p in prompts]
    for p, r in zip(prompts, rows):
        if r.numel() == 0:
            raise ValueError(f"prompt {p!r} has no tokens")
    return rows, [p if isinstance(p, str) else None for p in prompts]


def run_lens(model, prompts: str | Sequence[str] | Tensor, lens=None, **kwargs) -> LensResult:
    """Decode ``site`` of every layer in ``layers`` (default all) with ``lens`` (default logit);
    keywords as ``run_lenses``."""
    return run_lenses(model, prompts, [lens], **kwargs)[0]


def run_lenses(model, prompts: str | Sequence[str] | Tensor, lenses: Sequence, *, site: str = "resid_post",
               layers: Sequence[int] | None = None, positions: str = "all", targets: Sequence | None = None,
               k: int = 5, prepend_bos: bool | None = None, max_batch_tokens: int = 2048,
               progress: bool | None = None) -> list[LensResult]:
    """Decode ``site`` of every layer in ``layers`` (default all) with each lens of ``lenses``
    (None: logit lens) from one forward per chunk; one ``LensResult`` per lens.

    Args:
        prompts: one text, a list of texts, or token ids ``[batch, pos]``.
        positions: ``"all"`` (every position; pads to the longest prompt) or ``"last"``.
        targets: one single-token target per prompt (id or text) whose rank and probability
            at the last position are recorded per layer; multi-token targets are refused.
        k: top-k tokens kept per layer and position.
        max_batch_tokens: prompts × positions per forward.
    """
    adapter = as_adapter(model)
    lenses = [LogitLens() if lens is None else lens for lens in lenses]
    if not lenses:
        raise ValueError("no lens given")
    for lens in lenses:
        lens.check(adapter)
    layers = list(range(adapter.n_layers)) if layers is None else [check_site(adapter, site, l) for l in layers]
    check_site(adapter, site, layers[0] if layers else 0)
    if not layers:
        raise ValueError("no layers to decode")
    if positions not in ("all", "last"):
        raise ValueError(f"positions must be 'all' or 'last', got {positions!r}")
    if k < 1:
        raise ValueError("k must be >= 1")
    rows, texts = _tokenise(adapter, prompts, prepend_bos)
    n = len(rows)
    tgt = None
    if targets is not None:
        if len(targets) != n:
            raise ValueError(f"{len(targets)} targets for {n} prompts")
        tgt = torch.tensor([target_id(adapter, t) for t in targets], device=adapter.device)
    lengths = np.array([r.numel() for r in rows])
    P = int(lengths.max()) if positions == "all" else 1
    L, k = len(layers), min(k, adapter.d_vocab)
    outs = [_alloc(n, L, P, k, tgt is not None) for _ in lenses]
    out = outs[0]  # the output's arrays are filled here and shared at the end
    names = [adapter.hook_name(site, l) for l in layers]
    chunks = _chunks(lengths, max_batch_tokens)
    bar = tqdm(chunks, desc="lens", disable=not (progress or (progress is None and n > 50)))
    with torch.no_grad():
        for idx in bar:
            width = int(lengths[idx].max())
            toks = torch.zeros((len(idx), width), dtype=torch.long, device=adapter.device)
            for j, i in enumerate(idx):
                toks[j, : lengths[i]] = rows[i]
            logits, cache = adapter.run_with_cache(toks, names)
            last = torch.as_tensor(lengths[idx] - 1, device=adapter.device)
            sel = (lambda x: x[torch.arange(len(idx)), last][:, None]) if positions == "last" else (lambda x: x)
            final = sel(logits).float()
            log_f = final.log_softmax(-1)
            top1 = final.argmax(-1)
            fp, fi = log_f.topk(k, dim=-1)
            _put(out["out_top_ids"], idx, fi, lengths, positions)
            _put(out["out_top_probs"], idx, fp.exp(), lengths, positions)
            pos = last if positions == "all" else torch.zeros_like(last)
            if tgt is not None:
                t = tgt[idx]
                last_f = log_f[torch.arange(len(idx)), pos]
                out["target_rank"][idx, L] = ranks_of(last_f, t).cpu().numpy()
                out["target_prob"][idx, L] = last_f.gather(-1, t[:, None])[:, 0].exp().cpu().numpy()
            for lens, o in zip(lenses, outs):
                for li, (layer, name) in enumerate(zip(layers, names)):
                    lg = lens.logits(adapter, sel(cache[name]), site, layer).float()
                    log_q = lg.log_softmax(-1)
                    qp, qi = log_q.topk(k, dim=-1)
                    _put(o["top_ids"][:, li], idx, qi, lengths, positions)
                    _put(o["top_probs"][:, li], idx, qp.exp(), lengths, positions)
                    _put(o["kl"][:, li], idx, kl_div(log_f, log_q), lengths, positions)
                    _put(o["out_rank"][:, li], idx, ranks_of(lg, top1), lengths, positions)
                    if tgt is not None:
                        lq = log_q[torch.arange(len(idx)), pos]
                        o["target_rank"][idx, li] = ranks_of(lq, tgt[idx]).cpu().numpy()
                        o["target_prob"][idx, li] = lq.gather(-1, tgt[idx][:, None])[:, 0].exp().cpu().numpy()
            del cache
    for o in outs[1:]:
        for key in ("out_top_ids", "out_top_probs"):
            o[key] = out[key]
        if tgt is not None:
            o["target_rank"][:, L] = out["target_rank"][:, L]
            o["target_prob"][:, L] = out["target_prob"][:, L]
    tokens = [r.tolist() for r in rows]
    str_tokens = [adapter.to_str_tokens(torch.tensor(r)) for r in tokens] if adapter.tokenizer is not None else None
    return [LensResult(
        meta=adapter.meta, lens=lens.describe(), site=site, layers=layers, n_layers=adapter.n_layers,
        positions=positions, prompts=texts, tokens=tokens, str_tokens=str_tokens,
        targets=None if tgt is None else tgt.tolist(), token_text=_token_texts(adapter, o), **o)
        for lens, o in zip(lenses, outs)]


def _alloc(n: int, L: int, P: int, k: int, targets: bool) -> dict[str, np.ndarray]:
    out = {
        "top_ids": np.full((n, L, P, k), -1, np.int64), "top_probs": np.zeros((n, L, P, k), np.float32),
        "out_top_ids": np.full((n, P, k), -1, np.int64), "out_top_probs": np.zeros((n, P, k), np.float32),
        "kl": np.full((n, L, P), np.nan, np.float32), "out_rank": np.zeros((n, L, P), np.int64),
    }
    if targets:
        out["target_rank"] = np.zeros((n, L + 1), np.int64)
        out["target_prob"] = np.zeros((n, L + 1), np.float32)
    return out


def _chunks(lengths: np.ndarray, max_batch_tokens: int) -> list[list[int]]:
    """Prompt indices in chunks, longest first, each at most ``max_batch_tokens`` padded tokens."""
    chunks, cur = [], []
    for i in np.argsort(-lengths, kind="stable"):
        if cur and (len(cur) + 1) * lengths[cur[0]] > max_batch_tokens:
            chunks.append(cur)
            cur = []
        cur.append(int(i))
    chunks.append(cur)
    return chunks


def _put(arr: np.ndarray, idx, values: Tensor, lengths, positions) -> None:
    """Write chunk ``values`` ``[b, p, ...]`` into rows ``idx`` of ``arr`` ``[n, P, ...]``, real positions only."""
    v = values.detach().cpu().numpy()
    for j, i in enumerate(idx):
        m = 1 if positions == "last" else lengths[i]
        arr[i, :m] = v[j, :m]


def _token_texts(adapter, out) -> dict[int, str]:
    """Decoded text of every token id the result mentions (for tables and figures)."""
    ids = set(np.unique(out["top_ids"][..., :1]).tolist()) | set(np.unique(out["out_top_ids"][..., :1]).tolist())
    ids.discard(-1)
    tok = adapter.tokenizer
    if tok is None:
        return {i: f"<{i}>" for i in sorted(ids)}
    return {i: tok.decode([i]) for i in sorted(ids)}
