"""Rows for a reduction: chosen points × layers × samples × positions from a capture.

Every row is one ``d_model`` vector labelled ``(point index, layer, sample, position)``
(``-1`` where that axis was averaged away). Options, applied in this order:

- ``positions``: a slice (e.g. ``slice(1, None)`` drops position 0, the outlier);
- ``unit_norm``: each vector divided by its L2 norm;
- ``average``: any of ``"samples"``, ``"positions"``, ``"layers"`` — the mean over that axis
  (``"samples"`` gives position-averaged states: one row per position, the helix view).

Rows come block by block (one shard at a time) so a streaming PCA never holds them all;
averaging over samples accumulates sums of size points × layers × positions × d_model.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator

import numpy as np

from .points import MODEL_POINTS, key

AVERAGES = ("samples", "positions", "layers")


@dataclass(frozen=True)
class Selection:
    points: tuple[str, ...]
    layers: tuple[int, ...]
    positions: slice = field(default_factory=lambda: slice(None))
    unit_norm: bool = False
    average: tuple[str, ...] = ()

    def __post_init__(self):
        avg = (self.average,) if isinstance(self.average, str) else tuple(self.average)
        bad = [x for x in avg if x not in AVERAGES]
        if bad:
            raise ValueError(f"unknown average axis {bad}; choose from {AVERAGES}")
        object.__setattr__(self, "average", avg)


def selection(store, points=None, layers=None, *, positions: slice | int | None = None,
              unit_norm: bool = False, average=()) -> Selection:
    """A validated ``Selection`` (``positions`` an int k means ``slice(k, None)``)."""
    points, layers = store.select(points, layers)
    if positions is None:
        positions = slice(None)
    elif isinstance(positions, int):
        positions = slice(positions, None)
    if not len(range(store.seq_len)[positions]):
        raise ValueError(f"positions {positions} select nothing of {store.seq_len}")
    return Selection(points, layers, positions, unit_norm, average)


def _layers_of(sel: Selection, point: str) -> tuple[int, ...]:
    return (-1,) if point in MODEL_POINTS else sel.layers


def iter_rows(store, sel: Selection) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """``(X [m, d_model] float64, labels [m, 4] int64)`` blocks, one per shard and point
    (and layer, unless averaged); labels are (point index into ``sel.points``, layer,
    sample, position). At most one shard's tensor of one point is held at a time."""
    pos_all = np.arange(store.seq_len)[sel.positions]
    sums: dict[tuple[int, int], np.ndarray] = {}
    start = 0
    for info, get in store.open_shards():
        n = info["n"]
        for i, p in enumerate(sel.points):
            for l, x in _point_arrays(get, sel, p):
                if "samples" in sel.average:
                    sums[(i, l)] = sums.get((i, l), 0) + x.sum(0)
                else:
                    yield _rows(x, sel, i, l, np.arange(start, start + n), pos_all)
        start += n
    for (i, l), s in sums.items():
        yield _rows((s / start)[None], sel, i, l, np.array([-1]), pos_all)


def _point_arrays(get, sel: Selection, point: str):
    """``(layer, [n, P, d] float64)`` for one point in one shard (layers averaged if asked)."""
    total = None
    layers = _layers_of(sel, point)
    for l in layers:
        x = get(key(point, l))[:, sel.positions].astype(np.float64)
        if sel.unit_norm:
            x /= np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-30)
        if "layers" in sel.average:
            total = x if total is None else total + x
        else:
            yield l, x
    if total is not None:
        yield -1, total / len(layers)


def _rows(x, sel, i, layer, samples, pos):
    """Flatten a ``[n, P, d]`` array to labelled rows (positions averaged if asked)."""
    if "positions" in sel.average:
        x, pos = x.mean(1, keepdims=True), np.array([-1])
    n, P, d = x.shape
    lab = np.empty((n, P, 4), dtype=np.int64)
    lab[..., 0], lab[..., 1] = i, layer
    lab[..., 2] = samples[:, None]
    lab[..., 3] = pos[None, :]
    return x.reshape(n * P, d), lab.reshape(-1, 4)


def collect(store, sel: Selection) -> tuple[np.ndarray, np.ndarray]:
    """All rows of ``sel`` in RAM (for small selections, exact PCA and UMAP)."""
    blocks = list(iter_rows(store, sel))
    return np.concatenate([b[0] for b in blocks]), np.concatenate([b[1] for b in blocks])
