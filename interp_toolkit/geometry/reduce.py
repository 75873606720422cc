"""Joint reductions of a capture: PCA (streamed over shards) and UMAP (cosine)."""

from __future__ import annotations

import numpy as np
from jaxtyping import Float

from .pca import PCAFit, fit_pca
from .select import Selection, collect, iter_rows


def pca_of_store(store, sel: Selection, n_components: int, method: str = "streaming",
                 seed: int = 0) -> PCAFit:
    """PCA of the rows of ``sel``; ``streaming`` (default) reads one shard at a time,
    ``exact``/``randomized`` load the selection into RAM first."""
    if method == "streaming":
        return fit_pca((X for X, _ in iter_rows(store, sel)), n_components, "streaming")
    return fit_pca(collect(store, sel)[0], n_components, method, seed=seed)


def project(store, sel: Selection, pca: PCAFit, center: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """``(coords [rows, k], labels [rows, 4])`` of every row of ``sel``, shard by shard."""
    out = [(pca.transform(X, center), lab) for X, lab in iter_rows(store, sel)]
    return np.concatenate([o[0] for o in out]), np.concatenate([o[1] for o in out])


def require_extra(module: str):
    """Import a module of the ``geometry`` extra, with an install hint when it is absent."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ImportError(f"{module} is needed here: pip install 'interp_toolkit[geometry]' ({exc})") from None


def fit_umap(X: Float[np.ndarray, "n d"], n_components: int = 2, n_neighbors: int = 15,
             min_dist: float = 0.1, metric: str = "cosine", seed: int = 0) -> Float[np.ndarray, "n k"]:
    """UMAP embedding (cosine metric by default, as the reference) of the rows of ``X``."""
    X = np.asarray(X, dtype=np.float32)
    if X.ndim != 2 or len(X) <= n_components + 1:
        raise ValueError(f"UMAP needs more than {n_components + 1} rows [n, d], got shape {X.shape}")
    umap = require_extra("umap")
    reducer = umap.UMAP(n_components=n_components, n_neighbors=min(n_neighbors, len(X) - 1),
                        min_dist=min_dist, metric=metric, random_state=seed, n_jobs=1)
    return reducer.fit_transform(X)
