"""``AnalysisReport``: the per-section results of one ``analyze`` run, as one ``core.Result``."""

from __future__ import annotations

import dataclasses
import html
from dataclasses import dataclass, field

from ..core import Page, Result, ResultFormatError, html_table, register_result, to_jsonable
from ..core.report import meta_line
from ..core.result import registered_kinds
from . import sections  # noqa: F401  (imports, and so registers, the result kinds of the sections)


@register_result
@dataclass
class AnalysisReport(Result):
    """Several analyses of one prompt.

    Attributes:
        prompt: the text analysed.
        models: ``adapter.meta`` of each model (the first one runs every section).
        sections: section name → its result (a ``core.Result``), in report order.
        titles, guides: section name → heading and one-paragraph reading guide.
        skipped: section name → why it is not in the report (not installed, failed, ...).
        timings: section name → wall-clock seconds.
        options: the analysis settings used.
        meta: torch threads, toolkit version, date.
    """

    kind = "analyze"
    format_version = 1
    title = "Analysis report"

    prompt: str
    models: list[dict]
    sections: dict[str, Result]
    titles: dict[str, str]
    guides: dict[str, str]
    skipped: dict[str, str] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    options: dict = field(default_factory=dict)
    meta: dict = field(default_factory=dict)

    def __getitem__(self, name: str) -> Result:
        return self.sections[name]

    # ------------------------------------------------------------------ dict
    def to_dict(self) -> dict:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "sections"}
        d["sections"] = {name: {"kind": r.kind, "format_version": r.format_version, "data": r.to_dict()}
                         for name, r in self.sections.items()}
        return to_jsonable(d)

    @classmethod
    def from_dict(cls, d: dict) -> "AnalysisReport":
        kinds = registered_kinds()
        out = {}
        for name, doc in d["sections"].items():
            kind_cls = kinds.get(doc["kind"])
            if kind_cls is None:
                raise ResultFormatError(f"section {name!r} holds a {doc['kind']!r} result, which this "
                                        f"installation cannot read (known: {sorted(kinds)})")
            if doc["format_version"] != kind_cls.format_version:
                raise ResultFormatError(f"section {name!r}: {doc['kind']!r} format version {doc['format_version']}, "
                                        f"this version reads {kind_cls.format_version}; re-run the analysis")
            out[name] = kind_cls.from_dict(doc["data"])
        return cls(**{**d, "sections": out})

    # ------------------------------------------------------------------ text / HTML
    def summary(self) -> str:
        names = ", ".join(str(m.get("name")) for m in self.models)
        lines = [f"{self.prompt!r} on {names}"]
        for name, r in self.sections.items():
            lines.append(f"\n== {self.titles.get(name, name)} ({self.timings.get(name, float('nan')):.1f} s)")
            lines.append(r.summary())
        for name, why in self.skipped.items():
            lines.append(f"\n== {name}: not in this report: {why}")
        return "\n".join(lines)

    def report(self) -> Page:
        names = ", ".join(html.escape(str(m.get("name"))) for m in self.models)
        page = Page(f"{self.title}: {self.prompt}")
        rows = [[self.titles.get(n, n), "done", self.timings.get(n)] for n in self.sections]
        rows += [[self.titles.get(n, n), f"not included: {why}", None] for n, why in self.skipped.items()]
        page.add(f"<p><b>Prompt</b>: <code>{html.escape(self.prompt)}</code><br><b>Model</b>: {names}</p>",
                 html_table(["section", "status", "seconds"], rows, left=(0, 1)))
        if self.skipped:
            page.add("<p>Sections not available in this run: "
                     + "; ".join(f"<b>{html.escape(n)}</b> ({html.escape(w)})" for n, w in self.skipped.items())
                     + ".</p>")
        for name, r in self.sections.items():
            page.section(self.titles.get(name, name), guide=self.guides.get(name))
            page.extend(r.report())
        page.add(meta_line({**self.meta, **{f"option {k}": v for k, v in self.options.items()}}))
        return page
