"""Models with learned absolute positions for the helix analysis.

- ``helix_model``: a tiny GPT-2-style model whose position embeddings are a planted helix,
  ``W_pos[p] = R (cos θ_p u + sin θ_p v) + h (p / (P-1) - ½) w`` with ``θ_p = 2π·turns·p/(P-1)``
  and orthonormal random ``u, v, w`` (the test that the analysis finds one).
- ``train_char_gpt2``: a small GPT-2-style character model trained on text for a time
  budget (does a helix emerge from training?).
"""

from __future__ import annotations

import math
import time
from typing import Sequence

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor


def helical_positions(n_ctx: int, d_model: int, turns: float = 1.0, radius: float = 3.0, pitch: float = 3.0,
                      seed: int = 0) -> Float[Tensor, "n_ctx d_model"]:
    """Position embeddings on a helix (see the module docstring)."""
    if d_model < 3:
        raise ValueError("a helix needs d_model >= 3")
    g = torch.Generator().manual_seed(seed)
    u, v, w = torch.linalg.qr(torch.randn(d_model, 3, generator=g))[0].T
    t = torch.arange(n_ctx, dtype=torch.float32) / max(n_ctx - 1, 1)
    theta = 2 * math.pi * turns * t
    return (radius * (torch.cos(theta)[:, None] * u + torch.sin(theta)[:, None] * v)
            + pitch * (t - 0.5)[:, None] * w)


def helix_model(backend: str | None = None, *, n_ctx: int = 64, turns: float = 1.0, radius: float = 3.0,
                pitch: float = 3.0, seed: int = 0, **sizes):
    """A tiny GPT-2-style model (``tiny_model("gpt2")``) with planted helical positions."""
    from ..models.tiny import tiny_hf_model, tiny_model

    hf = tiny_hf_model("gpt2", seed=seed, n_ctx=n_ctx, **sizes)
    with torch.no_grad():
        hf.transformer.wpe.weight.copy_(helical_positions(n_ctx, hf.config.n_embd, turns, radius, pitch, seed))
    model = tiny_model("gpt2", backend=backend, hf_model=hf)
    model.interp_meta.update(name="tiny-helix-gpt2", planted={"turns": turns, "radius": radius, "pitch": pitch})
    return model


def char_corpus(texts: Sequence[str], d_vocab: int = 64) -> Tensor:
    """Texts (lower-cased, joined by newlines) as one stream of tiny-tokenizer ids."""
    from ..models.tiny import tiny_tokenizer

    tok = tiny_tokenizer(d_vocab)
    ids = tok("\n".join(t.lower() for t in texts), add_special_tokens=False)["input_ids"]
    return torch.tensor(ids, dtype=torch.long)


def train_char_gpt2(texts: Sequence[str], *, seconds: float = 120.0, n_layers: int = 2, n_heads: int = 4,
                    d_head: int = 16, n_ctx: int = 128, batch: int = 16, lr: float = 3e-3, seed: int = 0,
                    backend: str | None = None, log_every: int = 50, progress: bool = True):
    """Train a GPT-2-style character model on ``texts`` for ``seconds`` (CPU, AdamW, random
    windows of ``n_ctx`` characters). Returns ``(model, history)`` where ``history`` is a list
    of ``(step, seconds, loss)``."""
    from ..models.tiny import tiny_hf_model, tiny_model

    data = char_corpus(texts)
    if len(data) <= n_ctx + 1:
        raise ValueError(f"the corpus has {len(data)} characters; need more than n_ctx + 1 = {n_ctx + 1}")
    torch.manual_seed(seed)
    hf = tiny_hf_model("gpt2", seed=seed, n_layers=n_layers, n_heads=n_heads, d_head=d_head, n_ctx=n_ctx)
    hf.train()
    opt = torch.optim.AdamW(hf.parameters(), lr=lr, weight_decay=0.01)
    g = torch.Generator().manual_seed(seed)
    hist, step, t0, loss = [], 0, time.perf_counter(), torch.tensor(float("nan"))
    while time.perf_counter() - t0 < seconds:
        idx = torch.randint(0, len(data) - n_ctx - 1, (batch,), generator=g)
        x = torch.stack([data[i:i + n_ctx] for i in idx])
        loss = hf(input_ids=x, labels=x).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % log_every == 0:
            hist.append((step, time.perf_counter() - t0, float(loss)))
            if progress:
                print(f"step {step:5d}  {hist[-1][1]:6.1f}s  loss {float(loss):.3f}", flush=True)
        step += 1
    hist.append((step, time.perf_counter() - t0, float(loss)))
    hf.eval()
    model = tiny_model("gpt2", backend=backend, hf_model=hf)
    model.interp_meta.update(name="char-gpt2-trained", source="trained", train_seconds=seconds, steps=step,
                             final_loss=float(loss))
    return model, hist


def position_embedding_grid(model, n_components: int = 6, first_position: int = 0) -> dict:
    """PC pairs of the learned position embeddings themselves (``W_pos[first_position:]``),
    by the same circularity measure as ``analysis.pc_grid`` (centred PCA)."""
    from .analysis import _pairs
    from .pca import pca_exact

    W = model.W_pos.detach().double().cpu().numpy()[first_position:]
    pca = pca_exact(W, min(n_components, *W.shape))
    coords = pca.transform(W, center=True)
    return {"point": "W_pos", "layers": [], "positions": np.arange(first_position, first_position + len(W)), "coords": coords,
            "explained_ratio": pca.explained_variance_ratio, "pairs": _pairs(coords)}
