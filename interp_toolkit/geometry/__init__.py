"""Latent-state geometry (Ning, Rangaraju, Kuo, arXiv 2511.21594): capture of the per-block
points streamed to disk, joint PCA (exact, randomized, streaming) and UMAP, and the
analyses — attention-vs-MLP separability, norms by layer and position, the positional helix.

    from interp_toolkit.geometry import run_geometry
    res = run_geometry(model, texts, seq_len=64)
    print(res.summary()); res.plot("pc_pairs"); res.write_html("geometry.html")
"""

from .analysis import attn_mlp_view, norm_table, pc_grid, separability, token_norms
from .capture import ResidualMismatchError, capture, check_residual
from .inputs import MODES, InputSet, make_inputs
from .pca import PCAFit, fit_pca, pca_exact, pca_randomized, pca_streaming
from .pipeline import analyze, quick_geometry, run_geometry
from .points import BLOCK_POINTS, MODEL_POINTS, POINTS
from .reduce import fit_umap, pca_of_store, project
from .result import GeometryResult
from .select import Selection, collect, iter_rows, selection
from .stats import circularity
from .store import GeometryStore

__all__ = ["capture", "check_residual", "ResidualMismatchError", "GeometryStore", "make_inputs", "InputSet", "MODES",
           "POINTS", "BLOCK_POINTS", "MODEL_POINTS", "fit_pca", "pca_exact", "pca_randomized", "pca_streaming",
           "PCAFit", "pca_of_store", "project", "fit_umap", "Selection", "selection", "iter_rows", "collect",
           "norm_table", "separability", "attn_mlp_view", "pc_grid", "token_norms", "circularity",
           "GeometryResult", "analyze", "run_geometry", "quick_geometry"]
