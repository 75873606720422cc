"""The numbers of the geometry analysis, computed from a capture shard by shard.

- ``norm_table``: mean L2 norm of every captured (point, layer) at every position
  (mean over sequences) → ``[keys, pos]``; by layer and the position-0 ratio
  ``‖x_0‖ / mean_{p≥1} ‖x_p‖`` follow from it.
- ``separability``: per layer, how well attention outputs and MLP outputs separate
  (positions ≥ ``first_position``, unit-normalised rows):
  ``probe_accuracy`` — held-out accuracy of a logistic-regression probe (test sequences
  unseen in training; 0.5 = chance); ``silhouette`` — mean silhouette of the two classes
  (Euclidean on unit vectors, i.e. cosine geometry; 1 = far apart, 0 = overlapping);
  ``silhouette_pca2`` — the same in that layer's first two principal components, the view
  in which the paper saw the separation.
- ``attn_mlp_view``: one joint PCA (2-D) of attention and MLP outputs over the chosen
  layers, for the depth-shaded scatter.
- ``pc_grid``: the position-averaged states (mean over sequences, and over the chosen
  layers) → first 6 PCs → circularity of each of the 15 PC pairs (``stats.circularity``).
- ``token_norms``: per-token norms (vocab mode: one row per token).
- ``sequence_pattern``: per layer, how much states group by sequence — the fraction of each
  ``resid_post`` state's 10 nearest neighbours (cosine, positions ≥ 1) that come from the
  same sequence, beside the chance rate (1 would mean each sequence forms its own cluster).
"""

from __future__ import annotations

from itertools import combinations

import numpy as np

from .pca import pca_exact
from .points import MODEL_POINTS, key
from .reduce import pca_of_store, project
from .select import collect, selection
from .stats import circularity, probe_accuracy, same_group_neighbour_rate, silhouette


def norm_table(store, points=None, layers=None) -> tuple[list[str], np.ndarray]:
    """``(keys, mean norms [len(keys), seq_len])``, one key per (point, layer)."""
    points, layers = store.select(points, layers)
    names = [key(p, l) for p in points for l in ((None,) if p in MODEL_POINTS else layers)]
    out = np.zeros((len(names), store.seq_len))
    for _, get in store.open_shards():
        for k, name in enumerate(names):
            out[k] += np.linalg.norm(get(name), axis=-1).sum(0)
    return names, out / store.n_seq


def pos0_ratio(norms: np.ndarray) -> np.ndarray:
    """``norm[..., 0] / mean(norm[..., 1:])`` (NaN for 1-token sequences)."""
    if norms.shape[-1] < 2:
        return np.full(norms.shape[:-1], np.nan)
    return norms[..., 0] / norms[..., 1:].mean(-1)


def _two_class(store, layer: int, first_position: int, max_rows: int, seed: int):
    sel = selection(store, ["attn_out", "mlp_out"], [layer], positions=first_position, unit_norm=True)
    X, lab = collect(store, sel)
    if len(X) > 2 * max_rows:
        idx = np.random.default_rng(seed).choice(len(X), 2 * max_rows, replace=False)
        X, lab = X[idx], lab[idx]
    return X, lab[:, 0], lab[:, 2]


def separability(store, layers=None, first_position: int = 1, max_rows: int = 2000, seed: int = 0) -> dict:
    """Per-layer attention-vs-MLP separability (see the module docstring)."""
    _, layers = store.select(["attn_out", "mlp_out"], layers)
    if store.seq_len <= first_position:
        first_position = 0
    acc, sil, sil2 = [], [], []
    for l in layers:
        X, y, groups = _two_class(store, l, first_position, max_rows, seed)
        acc.append(probe_accuracy(X, y, groups, seed=seed))
        sil.append(silhouette(X, y, seed=seed))
        k = min(2, X.shape[1], len(X))
        sil2.append(silhouette(pca_exact(X, k).transform(X, center=True), y, seed=seed))
    return {"layers": list(layers), "first_position": first_position, "probe_accuracy": np.array(acc),
            "silhouette": np.array(sil), "silhouette_pca2": np.array(sil2)}


def attn_mlp_view(store, layers=None, first_position: int = 1, max_rows_per_layer: int = 400,
                  seed: int = 0) -> dict:
    """Joint 2-D PCA (fitted with centring, streamed; transform without centring) of unit
    attention and MLP outputs over ``layers``; a random subset of rows per layer is kept."""
    _, layers = store.select(["attn_out", "mlp_out"], layers)
    if store.seq_len <= first_position:
        first_position = 0
    sel = selection(store, ["attn_out", "mlp_out"], layers, positions=first_position, unit_norm=True)
    pca = pca_of_store(store, sel, 2)
    coords, lab = project(store, sel, pca)
    rng = np.random.default_rng(seed)
    keep = np.concatenate([rng.permutation(np.flatnonzero((lab[:, 1] == l) & (lab[:, 0] == i)))[:max_rows_per_layer // 2]
                           for l in layers for i in (0, 1)])
    return {"coords": coords[keep], "is_mlp": lab[keep, 0], "layer": lab[keep, 1], "layers": list(layers),
            "explained_ratio": pca.explained_variance_ratio}


def pc_grid(store, point: str = "resid_post", layers=None, n_components: int = 6, first_position: int = 0) -> dict:
    """First PCs of position-averaged states and the circularity of every PC pair."""
    sel = selection(store, [point], None if point in MODEL_POINTS else layers, positions=first_position,
                    average=("samples", "layers"))
    X, lab = collect(store, sel)
    k = min(n_components, X.shape[1], len(X))
    if k < 2:
        raise ValueError(f"the PC grid needs at least 3 positions, the capture has {store.seq_len}")
    pca = pca_exact(X, k)
    coords = pca.transform(X, center=True)
    return {"point": point, "layers": list(sel.layers) if point not in MODEL_POINTS else [],
            "positions": lab[:, 3], "coords": coords, "explained_ratio": pca.explained_variance_ratio,
            "pairs": _pairs(coords)}


def _pairs(coords: np.ndarray) -> list[dict]:
    """``circularity`` of every pair of coordinate columns (positions in order)."""
    return [{"i": i, "j": j, **circularity(coords[:, [i, j]])} for i, j in combinations(range(coords.shape[1]), 2)]


def token_norms(store, point: str = "resid_post", layers=None) -> dict:
    """Norm of ``point`` at the last position of every sequence, ``[n_seq, layers]`` (vocab
    mode: one row per token)."""
    points, layers = store.select([point], None if point in MODEL_POINTS else layers)
    ls = (None,) if point in MODEL_POINTS else layers
    rows, toks = [], []
    for _, get in store.open_shards():
        rows.append(np.stack([np.linalg.norm(get(key(point, l))[:, -1], axis=-1) for l in ls], 1))
        toks.append(get("tokens")[:, -1])
    return {"point": point, "layers": [] if point in MODEL_POINTS else list(layers),
            "tokens": np.concatenate(toks), "norms": np.concatenate(rows)}


def sequence_pattern(store, point: str = "resid_post", layers=None, first_position: int = 1, k: int = 10,
                     seed: int = 0) -> dict:
    """Same-sequence nearest-neighbour rate per layer (see the module docstring)."""
    _, layers = store.select([point], layers)
    if store.seq_len <= first_position:
        first_position = 0
    rate, chance = [], []
    for l in layers:
        X, lab = collect(store, selection(store, [point], [l], positions=first_position))
        r, c = same_group_neighbour_rate(X, lab[:, 2], k=k, seed=seed)
        rate.append(r)
        chance.append(c)
    return {"point": point, "layers": list(layers), "k": k, "rate": np.array(rate), "chance": np.array(chance)}
