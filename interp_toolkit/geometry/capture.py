"""Streamed capture of the geometry points to safetensors shards (resumable, memory bounded).

``capture(model, inputs, out_dir)`` runs plain observation forwards
(``adapter.run_with_cache``) over chunks of at most ``max_batch_tokens`` tokens. For every
chunk it

1. checks the residual bookkeeping at every block (``check_residual``): the stream rebuilt
   as previous + attn_out equals the model's own ``resid_mid``, and + mlp_out its
   ``resid_post`` (and ``embed`` the sum of token and position embeddings) — a hook that is
   not what the block adds to the stream raises ``ResidualMismatchError``;
2. writes the chosen points as ``shard-00000.safetensors`` (tensors ``"attn_out.3"``
   ``[chunk, pos, d_model]``, plus ``"tokens"``), atomically, then updates
   ``manifest.json``.

Only one chunk's activations are held at a time. A second call with the same settings
resumes: shards listed in the manifest are skipped; other settings are refused.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Iterator, Mapping, Sequence

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor
from tqdm.auto import tqdm

from ..adapter import as_adapter
from ..core import atomic_write_text, dumps
from .inputs import InputSet
from .store import MANIFEST, GeometryStore
from .points import BLOCK_SOURCE, MODEL_POINTS, NORM_OF, check_layers, check_points, key

FORMAT = 1
_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}


class ResidualMismatchError(RuntimeError):
    """The captured block outputs do not add up to the model's own residual stream."""


def check_residual(cache: Mapping[str, Tensor], adapter, sites: Mapping[str, str] | None = None,
                   rtol: float = 1e-4) -> dict[str, float]:
    """Rebuild the residual stream from the captured sublayer outputs and compare it with
    the model's hidden states, block by block.

    With ``x_l`` = resid_pre of block l (``x_0`` = embed + pos_embed)::

        x_l + attn_out[l]     == resid_mid[l]
        resid_mid[l] + mlp_out[l] == resid_post[l]   (== x_{l+1})

    Errors are relative: ``max |rebuilt - model| / max |model|`` per block. Returns the
    worst relative error per check (``"embed"``, ``"mid"``, ``"post"``) and raises
    ``ResidualMismatchError`` naming the first block whose error exceeds ``rtol``.
    """
    a = adapter
    sites = {**_DEFAULT_SITES, **(sites or {})}
    get = lambda s, l=None: cache[a.hook_name(sites.get(s, s), l)].float()  # noqa: E731
    worst = {"embed": 0.0, "mid": 0.0, "post": 0.0}

    def compare(what: str, rebuilt: Tensor, model: Tensor, where: str) -> None:
        err = ((rebuilt - model).abs().max() / model.abs().max().clamp_min(1e-30)).item()
        worst[what] = max(worst[what], err)
        if not err <= rtol:  # NaN fails too
            raise ResidualMismatchError(
                f"{where}: the residual rebuilt from the captured outputs differs from the model's own "
                f"hidden state by {err:.3g} (relative; tolerance {rtol:g}). The hooks read are not what the "
                f"block adds to the stream (sites {dict(sites)}).")

    start = get("embed") + (get("pos_embed") if a.positional == "standard" else 0)
    compare("embed", start, get("resid_pre", 0), "block 0 input (embed + pos_embed vs resid_pre)")
    prev = get("resid_pre", 0)
    for l in range(a.n_layers):
        mid = get("resid_mid", l)
        compare("mid", prev + get("attn_out", l), mid, f"block {l} (previous + attn_out vs resid_mid)")
        post = get("resid_post", l)
        compare("post", mid + get("mlp_out", l), post, f"block {l} (resid_mid + mlp_out vs resid_post)")
        prev = post
    return worst


_DEFAULT_SITES = {"embed": "embed", "pos_embed": "pos_embed", "resid_pre": "resid_pre",
                  "resid_mid": "resid_mid", "resid_post": "resid_post", "attn_out": "attn_out",
                  "mlp_out": "mlp_out"}


def _names(adapter, sites: Mapping[str, str]) -> dict[str, None]:
    """Hook names the check and the points need (ordered set)."""
    a = adapter
    names = {a.hook_name(sites["embed"]): None}
    if a.positional == "standard":
        names[a.hook_name(sites["pos_embed"])] = None
    for l in range(a.n_layers):
        for s in ("resid_pre", "resid_mid", "resid_post", "attn_out", "mlp_out"):
            names[a.hook_name(sites[s], l)] = None
    return names


def points_from_cache(cache: Mapping[str, Tensor], adapter, points: Sequence[str], layers: Sequence[int],
                      sites: Mapping[str, str] | None = None) -> Iterator[tuple[str, Float[Tensor, "batch pos d_model"]]]:
    """``(name, tensor)`` of each chosen point from a forward's cache, one at a time; norm
    points are the norm applied to the cached norm input (``adapter.norm_output``)."""
    a = adapter
    sites = {**_DEFAULT_SITES, **(sites or {})}
    get = lambda s, l=None: cache[a.hook_name(sites.get(s, s), l)]  # noqa: E731
    with torch.no_grad():
        for p in points:
            if p == "embed":
                yield key(p), get("resid_pre", 0)
            elif p == "final_norm":
                yield key(p), a.norm_output(get("resid_post", a.n_layers - 1), "final")
            else:
                for l in layers:
                    src = get(BLOCK_SOURCE[p], l)
                    yield key(p, l), (a.norm_output(src, NORM_OF[p], l) if p in NORM_OF else src)


def _digest(inputs: InputSet) -> str:
    return hashlib.sha1(inputs.tokens.cpu().numpy().astype(np.int64).tobytes()).hexdigest()[:16]


def capture(model, inputs: InputSet, out_dir, *, points: Sequence[str] | None = None,
            layers: Sequence[int] | None = None, max_batch_tokens: int = 2048, dtype: str = "float16",
            check: bool = True, rtol: float = 1e-4, sites: Mapping[str, str] | None = None,
            progress: bool = True) -> "GeometryStore":
    """Capture ``points`` × ``layers`` for every sequence of ``inputs`` into ``out_dir``.

    Args:
        inputs: from ``make_inputs`` (equal-length token sequences).
        points: subset of ``POINTS`` (default all); layers: blocks (default all).
        max_batch_tokens: sequences × positions per forward; one shard per forward.
        dtype: storage dtype (float16 halves the disk; a value beyond its range raises).
        check: verify the residual bookkeeping (``check_residual``) on every chunk.
        sites: adapter sites to read instead of the defaults (e.g. ``{"attn_out": "ln2"}``;
            for testing that a wrong hook is caught).
    Returns the ``GeometryStore`` reading ``out_dir``.
    """
    a = as_adapter(model)
    points, layers = check_points(points), check_layers(layers, a.n_layers)
    if dtype not in _DTYPES:
        raise ValueError(f"dtype must be one of {list(_DTYPES)}, got {dtype!r}")
    if inputs.n_seq == 0:
        raise ValueError("no sequences to capture")
    if inputs.seq_len > a.n_ctx:
        raise ValueError(f"sequences of {inputs.seq_len} tokens are longer than the model's context ({a.n_ctx})")
    if max_batch_tokens < 1:
        raise ValueError("max_batch_tokens must be >= 1")
    chunk = max(1, max_batch_tokens // inputs.seq_len)
    starts = list(range(0, inputs.n_seq, chunk))
    sites_all = {**_DEFAULT_SITES, **(sites or {})}
    config = {"format": FORMAT, "model": a.meta, "mode": inputs.mode, "info": inputs.info,
              "n_seq": inputs.n_seq, "seq_len": inputs.seq_len, "tokens_sha1": _digest(inputs),
              "points": list(points), "layers": list(layers), "dtype": dtype, "chunk": chunk,
              "d_model": a.d_model, "n_layers": a.n_layers, "sites": sites or {}}
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    manifest = _open_manifest(out, config)
    done = {s["start"] for s in manifest["shards"]}
    names = list(_names(a, sites_all))
    t0 = time.perf_counter()
    bar = tqdm(total=len(starts), desc="capture", unit="shard", disable=not progress)
    for i, start in enumerate(starts):
        if start in done:
            bar.update()
            continue
        toks = inputs.tokens[start:start + chunk].to(a.device)
        with torch.no_grad():
            _, cache = a.run_with_cache(toks, names, return_type=None)
        err = check_residual(cache, a, sites, rtol) if check else None
        shard = {k: _cast(v, dtype, k) for k, v in points_from_cache(cache, a, points, layers, sites)}
        del cache
        shard["tokens"] = toks.cpu().contiguous()
        fname = f"shard-{i:05d}.safetensors"
        _save_atomic(shard, out / fname)
        del shard
        manifest["shards"].append({"file": fname, "start": start, "n": int(toks.shape[0]),
                                   "residual_error": err})
        manifest["shards"].sort(key=lambda s: s["start"])
        atomic_write_text(out / MANIFEST, dumps(manifest, indent=1))
        bar.update()
    bar.close()
    manifest["complete"] = True
    manifest["capture_seconds"] = manifest.get("capture_seconds", 0.0) + time.perf_counter() - t0
    atomic_write_text(out / MANIFEST, dumps(manifest, indent=1))
    return GeometryStore(out)


def _cast(x: Tensor, dtype: str, name: str) -> Tensor:
    y = x.detach().to(_DTYPES[dtype]).cpu().contiguous()
    if dtype != "float32" and not torch.isfinite(y).all() and torch.isfinite(x).all():
        raise OverflowError(f"{name} has values beyond the range of {dtype} (max |x| = "
                            f"{x.abs().max().item():.4g}); capture with dtype='float32'")
    return y


def _save_atomic(tensors: dict[str, Tensor], path: Path) -> None:
    from safetensors.torch import save_file

    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        save_file(tensors, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _open_manifest(out: Path, config: dict) -> dict:
    path = out / MANIFEST
    if not path.exists():
        return {"config": json.loads(dumps(config)), "shards": [], "complete": False}
    manifest = json.loads(path.read_text())
    if manifest.get("config") != json.loads(dumps(config)):
        old = manifest.get("config", {})
        diff = sorted(k for k in set(old) | set(config) if old.get(k) != json.loads(dumps(config)).get(k))
        raise ValueError(f"{out} holds a capture with other settings (differs in {diff}); "
                         f"use another folder or delete it")
    manifest["shards"] = [s for s in manifest["shards"] if (out / s["file"]).exists()]
    manifest["complete"] = False
    return manifest
