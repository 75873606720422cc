"""s-Trace: per-input computation graphs, best-first strata, masked evaluation (DESIGN §3)."""

from .evaluate import evaluate_strata, trace
from .graph import EDGE_KINDS, EDGE_TYPES, ComputationGraph, build_graph, expected_counts
from .importance import MODES
from .results import CONDITIONS, TraceResult
from .stratify import SIZE_GRID, Strata, stratify

__all__ = ["trace", "evaluate_strata", "build_graph", "ComputationGraph", "expected_counts", "stratify",
           "Strata", "SIZE_GRID", "MODES", "CONDITIONS", "TraceResult", "EDGE_KINDS", "EDGE_TYPES"]
