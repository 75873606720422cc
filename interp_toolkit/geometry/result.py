"""``GeometryResult``: the numbers of one geometry analysis, with figures and a report."""

from __future__ import annotations

import html
from dataclasses import dataclass, field

import numpy as np

from ..core import Page, Result, html_table, img_tag, register_result
from ..core.report import meta_line
from ..core.widgets import plotly_html
from .analysis import pos0_ratio
from .interactive import plotly_available


@register_result
@dataclass
class GeometryResult(Result):
    """Latent geometry of one capture (see ``analysis`` for every definition).

    ``norms`` ``[len(norm_keys), seq_len]``: mean L2 norm of each (point, layer) by position.
    ``separability``, ``view``, ``grid``, ``token_norms``: the dicts of the ``analysis``
    functions (``None`` when not computed).
    """

    kind = "geometry"
    format_version = 1
    title = "Latent geometry"

    meta: dict
    mode: str
    n_seq: int
    seq_len: int
    layers: list
    points: list
    norm_keys: list
    norms: np.ndarray
    separability: dict | None = None
    view: dict | None = None
    grid: dict | None = None
    token_norms: dict | None = None
    sequence: dict | None = None
    str_tokens: list | None = None
    residual_error: dict = field(default_factory=dict)
    timing: dict = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: dict):
        d = dict(d)
        d["norms"] = np.asarray(d["norms"], dtype=np.float64)
        for name in ("separability", "view", "grid", "token_norms", "sequence"):
            if d.get(name) is not None:
                d[name] = {k: (np.asarray(v) if isinstance(v, list) and k not in ("layers", "pairs") else v)
                           for k, v in d[name].items()}
        return cls(**d)

    # ------------------------------------------------------------------ derived numbers
    def norm_by_layer(self, point: str = "resid_post", first_position: int = 1) -> np.ndarray:
        """Mean norm of ``point`` per layer over positions ≥ ``first_position``."""
        rows = self._rows(point)
        fp = first_position if self.seq_len > first_position else 0
        return self.norms[rows][:, fp:].mean(1)

    def pos0_ratio(self, point: str = "resid_post") -> np.ndarray:
        """``‖x_0‖ / mean_{p≥1} ‖x_p‖`` per layer."""
        return pos0_ratio(self.norms[self._rows(point)])

    def _rows(self, point: str) -> list[int]:
        rows = [i for i, k in enumerate(self.norm_keys) if k == point or k.startswith(point + ".")]
        if not rows:
            raise ValueError(f"point {point!r} was not captured; captured: {self.points}")
        return rows

    @property
    def helix(self) -> dict | None:
        """The most circular PC pair of the position-averaged states."""
        if not self.grid:
            return None
        best = max(self.grid["pairs"], key=lambda p: p["score"])
        return {**best, "n_circular": sum(p["circular"] for p in self.grid["pairs"])}

    # ------------------------------------------------------------------ text / figures
    def summary(self) -> str:
        lines = [f"{self.meta.get('name', '?')}: mode {self.mode}, {self.n_seq} × {self.seq_len} tokens, "
                 f"{len(self.layers)} layers"]
        if self.residual_error:
            lines.append("residual check: max relative error " +
                         ", ".join(f"{k} {v:.2g}" for k, v in self.residual_error.items()))
        if self.seq_len > 1 and "resid_post" in self.points:
            r = self.pos0_ratio("resid_post")
            lines.append(f"position-0 norm ratio (resid_post): median {np.median(r):.2f}, max {r.max():.2f} "
                         f"(layer {self.layers[int(r.argmax())]})")
        if self.separability:
            s = self.separability
            acc, sil = np.asarray(s["probe_accuracy"]), np.asarray(s["silhouette"])
            lines.append(f"attention vs MLP: probe accuracy {acc.min():.2f}–{acc.max():.2f} "
                         f"(mean {acc.mean():.2f}), silhouette {sil.min():.2f}–{sil.max():.2f}")
        if self.sequence:
            q = self.sequence
            lines.append(f"same-sequence neighbours ({q['point']}, k={q['k']}): {np.min(q['rate']):.2f}–"
                         f"{np.max(q['rate']):.2f} (chance {np.mean(q['chance']):.2f})")
        h = self.helix
        if h:
            lines.append(f"position PCs: most circular pair PC{h['i'] + 1}/PC{h['j'] + 1} score {h['score']:.2f} "
                         f"({h['turns']:.2f} turns); {h['n_circular']} of {len(self.grid['pairs'])} pairs circular")
        return "\n".join(lines)

    def _plots(self):
        from . import plots

        kinds = {"norms_by_layer": plots.norms_by_layer}
        if self.seq_len > 1:
            kinds["norms_by_position"] = plots.norms_by_position
        if self.separability:
            kinds["separability"] = plots.separability
        if self.sequence:
            kinds["sequence"] = plots.sequence
        if self.view:
            kinds["attn_mlp"] = plots.attn_mlp
        if self.grid:
            kinds["pc_pairs"] = plots.pc_pairs
        if self.token_norms:
            kinds["token_norms"] = plots.token_norms
        return kinds

    def report(self) -> Page:
        page = Page(f"{self.title}: {self.meta.get('name', '')}")
        page.section("Summary", f"<pre>{html.escape(self.summary())}</pre>")
        if self.separability:
            s = self.separability
            rows = [[l, a, b, c] for l, a, b, c in zip(s["layers"], s["probe_accuracy"], s["silhouette"],
                                                      s["silhouette_pca2"])]
            page.section("Attention vs MLP outputs", html_table(
                ["layer", "probe accuracy (held out)", "silhouette (cosine)", "silhouette (2 PCs)"], rows),
                guide=f"Positions ≥ {s['first_position']}, unit vectors. Probe accuracy 0.5 = chance; silhouette "
                      "near 0 = the two clouds overlap, near 1 = separate.")
        for name in self._plots():
            page.section(name.replace("_", " "), img_tag(self.plot(name), name), level=3)
        if plotly_available():
            # the 2-D scatter only: the 3-D PC curve (plot("pc_pairs", interactive=True)) needs WebGL,
            # which a page opened without a GPU cannot draw
            for kind in ("attn_mlp",):
                if kind in self.plot_kinds:
                    page.section(f"Interactive: {kind.replace('_', ' ')}",
                                 plotly_html(page, self.plot(kind, interactive=True)), level=3)
        page.add(meta_line({**self.meta, **{f"t_{k}": f"{v:.1f}s" for k, v in self.timing.items()}}))
        return page
