"""Result of tracing one input (``TraceResult``): plain data on the shared result layer
(``core.Result``: versioned JSON files, figures, HTML report), and a text table."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from ..core import Page, Result, register_result
from . import plots
from .graph import EDGE_KINDS, EDGE_TYPES
from .report import trace_page

CONDITIONS = ("trace", "inverse", "random")
CONDITION_HELP = {
    "trace": "keep only the stratum (ablate every other edge)",
    "inverse": "ablate only the stratum",
    "random": "keep only a random connected subgraph with as many edges",
}


@register_result
@dataclass
class TraceResult(Result):
    """s-Trace of one prompt.

    Per-stratum lists follow ``sizes`` (increasing; the last stratum is the full graph).

    Attributes:
        prompt: the text traced (None when token ids were given).
        tokens, str_tokens: the prompt's tokens.
        n_layers, n_heads, n_pos: model and prompt sizes.
        n_edges, n_nodes: size of the pruned graph.
        sizes, counts: stratum sizes (fraction of edges) and edge counts ``int(s·E)``.
        mode: edge-importance mode; seed: seed of the random condition / random mode.
        conditions: evaluated conditions (see ``CONDITION_HELP``).
        tv, kl, nucleus: per condition, per stratum: total variation, KL(full ‖ stratum)
            (nats) and shared-nucleus score (%).
        auc_tv: per condition, ∫ TV d log10 s (trapezoid over the strata).
        required_size: nucleus target (%) → smallest stratum size reaching it (trace-only).
        entropy: entropy of the full model's next-token distribution (nats).
        full_top: the full model's top tokens ``[(id, text, prob), ...]``.
        stratum_top: top-1 token text per stratum (trace-only).
        composition_type: per stratum, shares of attention / MLP / residual edges.
        composition_depth: per stratum, shares of edges in each depth quartile of layers.
        unigram: per stratum (trace-only), unigram-frequency encoding (``metrics.unigram_encoding``).
        unigram_full: the same for the full model.
        subgraphs: stratum size → its edges (``src``, ``dst``, ``kind``, ``head``, ``weight``
            lists; node id = slot·n_pos + pos), kept for drawing.
        timings: seconds spent on graph, stratification, evaluation, metrics.
        meta: model metadata (``adapter.meta``), dtype, engine settings, versions.
    """

    prompt: str | None
    tokens: list[int]
    str_tokens: list[str]
    n_layers: int
    n_heads: int
    n_pos: int
    n_edges: int
    n_nodes: int
    sizes: list[float]
    counts: list[int]
    mode: str
    seed: int
    conditions: list[str]
    tv: dict[str, list[float]]
    kl: dict[str, list[float]]
    nucleus: dict[str, list[float]]
    auc_tv: dict[str, float]
    required_size: dict[int, float]
    entropy: float
    full_top: list[tuple[int, str, float]]
    stratum_top: list[str]
    composition_type: list[list[float]]
    composition_depth: list[list[float]]
    unigram: list[float]
    unigram_full: float
    subgraphs: dict[float, dict[str, list]] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    meta: dict = field(default_factory=dict)

    kind = "strace-trace"
    format_version = 1
    title = "s-Trace"
    edge_types = EDGE_TYPES
    edge_kinds = EDGE_KINDS

    # ------------------------------------------------------------------ io
    @classmethod
    def from_dict(cls, d: dict) -> "TraceResult":
        d = dict(d)
        d["required_size"] = {int(k): (math.nan if v is None else float(v)) for k, v in d["required_size"].items()}
        d["subgraphs"] = {float(k): v for k, v in d.get("subgraphs", {}).items()}
        d["full_top"] = [tuple(x) for x in d["full_top"]]
        for key in ("composition_type", "composition_depth"):
            d[key] = [[math.nan if v is None else v for v in row] for row in d[key]]
        d["unigram"] = [math.nan if v is None else v for v in d["unigram"]]
        if d.get("unigram_full") is None:
            d["unigram_full"] = math.nan
        return cls(**d)

    # ------------------------------------------------------------------ views
    def stratum(self, size: float) -> int:
        """Index of the stratum of the given size."""
        for i, s in enumerate(self.sizes):
            if math.isclose(s, size, rel_tol=1e-9):
                return i
        raise KeyError(f"no stratum of size {size}; sizes: {self.sizes}")

    def table(self) -> str:
        """Compact text table: one line per stratum."""
        conds = self.conditions
        head = f"{'size':>8} {'edges':>8} " + " ".join(f"{'TV ' + c:>11}" for c in conds) + \
            f" {'nucleus':>7} {'attn/mlp/res':>14}  top-1"
        lines = [head]
        for i, s in enumerate(self.sizes):
            comp = self.composition_type[i]
            comp_s = "/".join("  -" if math.isnan(c) else f"{100 * c:3.0f}" for c in comp)
            tvs = " ".join(f"{self.tv[c][i]:11.3f}" for c in conds)
            lines.append(f"{s:8.2g} {self.counts[i]:8d} {tvs} {self.nucleus['trace'][i]:7.0f} "
                         f"{comp_s:>14}  {self.stratum_top[i]!r}")
        auc = ", ".join(f"{c} {self.auc_tv[c]:.3f}" for c in conds)
        top = ", ".join(f"{t!r} {p:.3f}" for _, t, p in self.full_top[:3])
        lines.append(f"E={self.n_edges} edges, {self.n_nodes} nodes; entropy {self.entropy:.3f} nats; "
                     f"AUC-TV: {auc}; full top: {top}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return (f"TraceResult(pos={self.n_pos}, edges={self.n_edges}, strata={len(self.sizes)}, "
                f"auc_tv={self.auc_tv.get('trace', math.nan):.3f}, entropy={self.entropy:.3f})")

    def summary(self) -> str:
        return self.table()

    def _plots(self):
        return {"tv": plots.plot_tv_curve, "composition": plots.plot_composition,
                "subgraph": plots.plot_subgraph, "unigram": plots.plot_unigram}

    def report(self, subgraph_size: float | None = None) -> Page:
        """Offline HTML page: figures, the strata table, required sizes, settings."""
        return trace_page(self, subgraph_size)
