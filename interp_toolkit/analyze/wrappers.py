"""``core.Result`` views of the s-Trace and interaction results, for the analysis report.

``TraceResult``, ``InteractionResult`` and ``Comparison`` keep their own files and reports;
these thin wrappers hold one of them and give it what a report section needs (a ``Page``,
``summary()``, ``_repr_html_``, a kind for ``AnalysisReport.save``). Once those classes are
``core.Result`` themselves the section functions can return them directly.
"""

from __future__ import annotations

import html
from dataclasses import dataclass

from ..core import Page, Result, html_table, img_tag, register_result
from ..core.report import meta_line
from ..interactions.plots import plot_comparison, plot_strength_by_order
from ..interactions.report import _prompt_html, _result_section, _sharing_table
from ..interactions.result import Comparison, InteractionResult
from ..strace import plots as strace_plots
from ..strace.results import TraceResult


@register_result
@dataclass
class TraceSection(Result):
    """s-Trace of the prompt (``trace``: the ``TraceResult``)."""

    kind = "analyze.strace"
    format_version = 1
    title = "s-Trace"

    trace: TraceResult

    def to_dict(self) -> dict:
        return {"trace": self.trace.to_dict()}

    @classmethod
    def from_dict(cls, d: dict) -> "TraceSection":
        return cls(TraceResult.from_dict(d["trace"]))

    @property
    def meta(self) -> dict:
        return self.trace.meta

    def summary(self) -> str:
        return self.trace.table()

    def _plots(self):
        return {"subgraph": lambda r, **kw: strace_plots.plot_subgraph(r.trace, **kw),
                "tv": lambda r, **kw: strace_plots.plot_tv_curve(r.trace, **kw),
                "composition": lambda r, **kw: strace_plots.plot_composition(r.trace, **kw)}

    def report(self) -> Page:
        t = self.trace
        top = ", ".join(f"{tok!r} {p:.3f}" for _, tok, p in t.full_top[:3])
        page = Page(self.title).add(
            f"<p>Graph of {t.n_edges} edges and {t.n_nodes} nodes over {t.n_pos} positions; the full model "
            f"predicts {html.escape(top)} (entropy {t.entropy:.3f} nats). AUC-TV: "
            + ", ".join(f"{c} {t.auc_tv[c]:.3f}" for c in t.conditions) + ".</p>")
        figs = [img_tag(self.plot(name), name) for name in self._plots() if name != "subgraph" or t.subgraphs]
        page.add(*figs)
        header = ["size s", "edges"] + [f"TV {c}" for c in t.conditions] + ["nucleus %", "top-1"]
        rows = [[f"{s:g}", t.counts[i], *[t.tv[c][i] for c in t.conditions], t.nucleus["trace"][i],
                 repr(t.stratum_top[i])] for i, s in enumerate(t.sizes)]
        page.add(html_table(header, rows, left=(len(header) - 1,)), meta_line(t.meta))
        return page


@register_result
@dataclass
class InteractionsSection(Result):
    """AND-OR interactions of the prompt in one model (``InteractionResult``) or the same
    players in several models (``Comparison``)."""

    kind = "analyze.interactions"
    format_version = 1
    title = "AND-OR interactions"

    result: InteractionResult | Comparison

    def to_dict(self) -> dict:
        return {"comparison": isinstance(self.result, Comparison), "result": self.result.to_dict()}

    @classmethod
    def from_dict(cls, d: dict) -> "InteractionsSection":
        return cls((Comparison if d["comparison"] else InteractionResult).from_dict(d["result"]))

    @property
    def results(self) -> list[InteractionResult]:
        return self.result.results if isinstance(self.result, Comparison) else [self.result]

    @property
    def meta(self) -> dict:
        return {"models": ", ".join(str(r.model.get("name")) for r in self.results)}

    def summary(self, k: int = 5) -> str:
        lines = []
        for r in self.results:
            lines.append(f"{r.model.get('name')}: {r.n} players {r.players.texts} -> {r.target!r}, "
                         f"v(N) - v(empty) = {r.v[-1] - r.v[0]:+.3f}, L1 = {r.sparsification.l1:.3f}")
            lines += [f"  {row['kind']:<3} {row['value']:+8.3f}  {row['words']}" for row in r.top(k)]
        if isinstance(self.result, Comparison):
            lines.append("sharing: " + ", ".join(f"{key} {v:.3f}" for key, v in self.result.sharing.items()
                                                 if isinstance(v, float)))
        return "\n".join(lines)

    def _plots(self):
        plots = {"strength_by_order": lambda r, model=0: plot_strength_by_order(r.results[model])}
        if isinstance(self.result, Comparison):
            plots["comparison"] = lambda r: plot_comparison(r.result)
        return plots

    def report(self) -> Page:
        page = Page(self.title)
        if isinstance(self.result, Comparison):
            cmp = self.result
            page.add(f"<p>{_prompt_html(cmp.results[0])} → <b>{html.escape(repr(cmp.results[0].target))}</b></p>",
                     _sharing_table(cmp.sharing, "Sharing (separate extraction)"))
            if cmp.joint_sharing is not None:
                page.add(_sharing_table(cmp.joint_sharing, "Sharing (joint extraction)"))
            page.add(img_tag(plot_comparison(cmp), "comparison"))
        page.add(*(_result_section(r) for r in self.results))
        return page
