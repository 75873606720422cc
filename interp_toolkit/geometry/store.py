"""Reading a capture folder (``manifest.json`` + safetensors shards) shard by shard."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np

from .points import MODEL_POINTS, check_layers, check_points, key

MANIFEST = "manifest.json"


class GeometryStore:
    """A finished capture. Tensors are read lazily, one shard (and only the keys asked
    for) at a time, so nothing needs all points in RAM."""

    def __init__(self, path):
        self.path = Path(path)
        mpath = self.path / MANIFEST
        if not mpath.exists():
            raise FileNotFoundError(f"{self.path} holds no capture ({MANIFEST} missing)")
        self.manifest = json.loads(mpath.read_text())
        if not self.manifest.get("complete"):
            raise ValueError(f"the capture in {self.path} is incomplete; run capture() again to resume it")
        c = self.manifest["config"]
        self.config = c
        self.points: tuple[str, ...] = tuple(c["points"])
        self.layers: tuple[int, ...] = tuple(c["layers"])
        self.n_seq: int = c["n_seq"]
        self.seq_len: int = c["seq_len"]
        self.d_model: int = c["d_model"]
        self.mode: str = c["mode"]
        self.meta: dict = c["model"]
        self.shards: list[dict] = self.manifest["shards"]

    def __repr__(self) -> str:
        return (f"GeometryStore({str(self.path)!r}, mode={self.mode}, {self.n_seq}×{self.seq_len} tokens, "
                f"points={list(self.points)}, layers={len(self.layers)})")

    def select(self, points=None, layers=None) -> tuple[tuple[str, ...], tuple[int, ...]]:
        """Validate a (points, layers) choice against what was captured."""
        points = self.points if points is None else check_points(points)
        layers = self.layers if layers is None else check_layers(layers, self.config["n_layers"])
        missing = [p for p in points if p not in self.points]
        missing += [f"layer {l}" for l in layers if l not in self.layers]
        if missing:
            raise ValueError(f"not captured: {missing}; this capture holds {list(self.points)} "
                             f"at layers {list(self.layers)}")
        return points, layers

    def open_shards(self) -> Iterator[tuple[dict, Callable[[str], np.ndarray]]]:
        """Per shard: its manifest entry and ``get(name)`` reading one tensor (float32
        ``[n, pos, d_model]``; ``"tokens"`` int64) — only what is asked is read."""
        from safetensors import safe_open

        for s in self.shards:
            with safe_open(str(self.path / s["file"]), framework="pt") as f:
                yield s, (lambda n, f=f: f.get_tensor(n).numpy() if n == "tokens" else f.get_tensor(n).float().numpy())

    def iter_shards(self, names: Sequence[str]) -> Iterator[dict[str, np.ndarray]]:
        """Per shard: ``{name: array}`` for ``names``."""
        for _, get in self.open_shards():
            yield {n: get(n) for n in names}

    def load(self, point: str, layer: int | None = None) -> np.ndarray:
        """One point at one layer for every sequence, ``[n_seq, pos, d_model]`` float32."""
        self.select([point], None if point in MODEL_POINTS else [layer])
        k = key(point, layer)
        return np.concatenate([s[k] for s in self.iter_shards([k])])

    def tokens(self) -> np.ndarray:
        """``[n_seq, seq_len]`` token ids."""
        return np.concatenate([s["tokens"] for s in self.iter_shards(["tokens"])])

    def residual_error(self) -> dict[str, float]:
        """Worst relative residual-check error over the shards (empty if unchecked)."""
        errs = [s["residual_error"] for s in self.shards if s.get("residual_error")]
        return {k: max(e[k] for e in errs) for k in errs[0]} if errs else {}
