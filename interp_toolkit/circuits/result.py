"""``CircuitResult``: edge scores, faithfulness curves, CPR/CMD, cost per method, and its report."""

from __future__ import annotations

import html
from dataclasses import dataclass, field

import numpy as np

from ..core import Page, Result, html_table, img_tag, register_result
from ..core.report import meta_line
from . import plots
from .evaluate import circuits_for
from .graph import CircuitGraph


@register_result
@dataclass
class CircuitResult(Result):
    """Circuit discovery on one task.

    Attributes:
        task: task name; ``task_summary`` its accuracy line; ``n_prompts`` prompts used.
        n_layers, n_heads: the model's sizes (the graph is ``CircuitGraph(n_layers, n_heads)``).
        methods: method names in run order.
        scores: ``{method: [E]}`` edge scores (circuits take the largest ``|score|``).
        sizes: circuit sizes (fractions of the edges).
        curves: ``{method: {"f", "m", "n_edges", "cpr", "cmd", "m_full", "m_empty"}}``.
        time_s, peak_mem_mb: scoring time and peak memory above the start, per method.
        selection, ablation, x_axis: how circuits were chosen / ablated / areas measured.
        attention: ``{"str_tokens", "heads", "patterns" [k, pos, pos]}`` of the top heads on one
            clean prompt (for the report).
        example: one clean and one corrupt prompt.
        meta: model identity, seed, steps, device.
    """

    kind = "circuit"
    format_version = 1
    title = "Circuit discovery"

    task: str
    task_summary: str
    n_prompts: int
    n_layers: int
    n_heads: int
    methods: list[str]
    scores: dict[str, list[float]]
    sizes: list[float]
    curves: dict[str, dict]
    time_s: dict[str, float]
    peak_mem_mb: dict[str, float]
    selection: str = "top_n"
    ablation: str = "corrupt"
    x_axis: str = "fraction of edges, linear, trapezoid over the sizes"
    attention: dict = field(default_factory=dict)
    example: dict = field(default_factory=dict)
    meta: dict = field(default_factory=dict)

    @property
    def graph(self) -> CircuitGraph:
        return CircuitGraph(self.n_layers, self.n_heads)

    def score_array(self, method: str) -> np.ndarray:
        if method not in self.scores:
            raise KeyError(f"no scores of method {method!r}; have {list(self.scores)}")
        return np.asarray(self.scores[method], dtype=np.float64)

    @property
    def best_method(self) -> str:
        """The method with the highest CPR."""
        return max(self.methods, key=lambda m: self.curves[m]["cpr"])

    def circuit(self, method: str | None = None, size: float = 0.01) -> np.ndarray:
        """Edge mask of the circuit of ``size`` from ``method``'s scores (default: best CPR)."""
        method = method or self.best_method
        return circuits_for(self.graph, self.score_array(method), [size], self.selection)[0].numpy()

    def top_edges(self, method: str | None = None, k: int = 10) -> list[tuple[str, float]]:
        method = method or self.best_method
        s = self.score_array(method)
        g = self.graph
        return [(g.edge_name(int(e)), float(s[e])) for e in np.argsort(-np.abs(s), kind="stable")[:k]]

    def head_importance(self, method: str | None = None) -> np.ndarray:
        """``[layer, head]``: Σ |score| over the edges a head sends or receives."""
        g, s = self.graph, np.abs(self.score_array(method or self.best_method))
        H = self.n_heads
        out = np.zeros((self.n_layers, H))
        for idx, col in ((g.sender, s), (g.receiver_node_ids, s)):
            valid = (idx > 0) & ((idx - 1) % (H + 1) < H)
            l, h = (idx[valid] - 1) // (H + 1), (idx[valid] - 1) % (H + 1)
            np.add.at(out, (l, h), col[valid])
        return out

    # ------------------------------------------------------------------ figures / text
    def _plots(self):
        return {"faithfulness": plots.faithfulness, "circuit": plots.circuit, "areas": plots.areas}

    def table(self) -> list[list]:
        return [[m, self.curves[m]["cpr"], self.curves[m]["cmd"], self.time_s.get(m), self.peak_mem_mb.get(m)]
                for m in self.methods]

    def summary(self) -> str:
        lines = [self.task_summary, f"{self.graph.n_edges} edges; ablation {self.ablation}; selection "
                 f"{self.selection}; areas over {self.x_axis}",
                 f"{'method':<20} {'CPR':>7} {'CMD':>7} {'time s':>8} {'mem MB':>8}"]
        for m, cpr, cmd, t, mem in self.table():
            lines.append(f"{m:<20} {cpr:7.3f} {cmd:7.3f} {t or 0:8.2f} {mem or 0:8.1f}")
        lines.append("top edges (" + self.best_method + "): " + ", ".join(
            f"{n} {v:+.3g}" for n, v in self.top_edges(k=5)))
        return "\n".join(lines)

    def report(self) -> Page:
        from ..core.widgets import attention_heads

        page = Page(f"Circuit discovery: {self.task}")
        page.section("Task", f"<pre>{html.escape(self.task_summary)}</pre>",
                     html_table(["", "prompt"], [["clean", self.example.get("clean", "")],
                                                 ["corrupt", self.example.get("corrupt", "")]], left=[0, 1]))
        page.section("Faithfulness", html_table(["method", "CPR ↑", "CMD ↓", "time (s)", "peak memory (MB)"],
                                                self.table(), left=[0]),
                     img_tag(self.plot("faithfulness"), "faithfulness curves"), img_tag(self.plot("areas"), "CPR and CMD"),
                     guide="f(C) = (m(C) − m(∅)) / (m(M) − m(∅)) with m the logit difference; edges outside the "
                           f"circuit are ablated ({self.ablation}). CPR = area under f (higher is better), CMD = area "
                           f"under |1 − f| (lower is better); x-axis: {self.x_axis}.")
        page.section(f"Circuit ({self.best_method}, 1 % of edges)", img_tag(self.plot("circuit"), "circuit"),
                     html_table(["edge", "score"], self.top_edges(k=15), left=[0]),
                     guide="Nodes by layer (heads left to right, then the MLP); edge width grows with |score|.")
        att = self.attention
        if att.get("patterns") is not None and len(att["patterns"]):
            page.section("Attention of the top heads", attention_heads(page, att["str_tokens"],
                                                                      np.asarray(att["patterns"]), att["heads"]),
                         guide="Heads with the largest summed |edge score|, on the first clean prompt.")
        page.add(meta_line(self.meta))
        return page
