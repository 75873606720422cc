"""Capture + analyses in one call: ``run_geometry``, ``analyze`` and ``quick_geometry``."""

from __future__ import annotations

import tempfile
import time
from typing import Sequence

from ..adapter import as_adapter
from . import analysis
from .capture import capture
from .inputs import make_inputs
from .result import GeometryResult


def _middle(layers: Sequence[int]) -> list[int]:
    """The middle half of the blocks (where the paper sees attention and MLP separate)."""
    n = len(layers)
    return list(layers[n // 4: max(n // 4 + 1, n - n // 4)])


def analyze(store, *, separability_layers: Sequence[int] | None = None, grid_point: str = "resid_post",
            grid_layers: Sequence[int] | None = None, view_layers: Sequence[int] | None = None,
            str_tokens: list | None = None, seed: int = 0, progress: bool = False) -> GeometryResult:
    """Every analysis the capture allows (``GeometryResult``).

    Separability needs attn_out and mlp_out and ≥ 2 sequences; the PC grid needs ≥ 3
    positions; per-token norms are computed in vocab mode."""
    t0 = time.perf_counter()
    keys, norms = analysis.norm_table(store)
    res = GeometryResult(meta=store.meta, mode=store.mode, n_seq=store.n_seq, seq_len=store.seq_len,
                         layers=list(store.layers), points=list(store.points), norm_keys=keys, norms=norms,
                         residual_error=store.residual_error(), str_tokens=str_tokens,
                         timing={"capture": store.manifest.get("capture_seconds", 0.0)})
    has_pair = {"attn_out", "mlp_out"} <= set(store.points)
    if has_pair and store.n_seq * max(store.seq_len - 1, 1) >= 8:
        res.separability = analysis.separability(store, separability_layers, seed=seed)
        res.view = analysis.attn_mlp_view(store, view_layers or _middle(store.layers), seed=seed)
    if "resid_post" in store.points and store.n_seq >= 2 and store.n_seq * max(store.seq_len - 1, 1) > 20:
        res.sequence = analysis.sequence_pattern(store, seed=seed)
    if store.seq_len >= 3 and grid_point in store.points:
        res.grid = analysis.pc_grid(store, grid_point, grid_layers)
    if store.mode == "vocab" and "resid_post" in store.points:
        res.token_norms = analysis.token_norms(store)
    res.timing["analysis"] = time.perf_counter() - t0
    return res


def run_geometry(model, texts: Sequence[str] | None = None, *, mode: str = "text", out_dir=None,
                 seq_len: int | None = None, token_ids: Sequence[int] | None = None, points=None, layers=None,
                 max_batch_tokens: int = 2048, dtype: str = "float16", block_size: int = 8, seed: int = 0,
                 progress: bool = True, **analyze_kwargs) -> GeometryResult:
    """Build the inputs of ``mode``, capture them into ``out_dir`` (a temporary folder when
    None, removed afterwards) and analyse the capture."""
    a = as_adapter(model)
    inputs = make_inputs(a, mode, texts=texts, seq_len=seq_len, token_ids=token_ids, block_size=block_size,
                         seed=seed)
    str_tokens = None
    if mode == "vocab" and a.tokenizer is not None:
        str_tokens = [a.to_str_tokens(t)[0] for t in inputs.tokens]
    with tempfile.TemporaryDirectory(prefix="itk-geometry-") as tmp:
        store = capture(a, inputs, out_dir or tmp, points=points, layers=layers, max_batch_tokens=max_batch_tokens,
                        dtype=dtype, progress=progress)
        return analyze(store, str_tokens=str_tokens, seed=seed, **analyze_kwargs)


def quick_geometry(model, prompt: str, max_tokens: int = 20) -> GeometryResult:
    """Geometry of one prompt (its first ``max_tokens`` tokens; a few seconds on SmolLM2):
    norms by layer and position, the attention/MLP PCA view and its separability (positions
    as samples), and the PC pairs of the residual stream by position."""
    a = as_adapter(model)
    n = a.to_tokens(prompt).shape[-1]
    return run_geometry(a, [prompt], seq_len=min(n, max_tokens, a.n_ctx), points=["attn_out", "mlp_out", "resid_post"],
                        dtype="float32", progress=False)
