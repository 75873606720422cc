"""``LensResult``: what a lens read off every layer of a batch of prompts.

Shapes (``n`` prompts, ``L`` decoded layers, ``P`` positions — the longest prompt for
``positions="all"``, 1 for ``"last"`` — and ``k`` kept tokens); padding holds -1 / 0 / NaN::

    top_ids, top_probs        [n, L, P, k]   lens top-k at each layer and position
    out_top_ids, out_top_probs[n, P, k]      the model's output top-k
    kl                        [n, L, P]      KL(output ‖ lens), nats
    out_rank                  [n, L, P]      rank (1 = top) of the output's top-1 under the lens
    target_rank, target_prob  [n, L + 1]     per target at the last position; column L = output
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field

import numpy as np

from ..core import Page, html_table, img_tag, register_result, Result
from ..core.report import meta_line
from . import plots

_ARRAYS = {"top_ids": np.int64, "top_probs": np.float32, "out_top_ids": np.int64, "out_top_probs": np.float32,
           "kl": np.float32, "out_rank": np.int64, "target_rank": np.int64, "target_prob": np.float32}


@register_result
@dataclass
class LensResult(Result):
    """Per layer × position top tokens and probabilities, KL to the output, target ranks."""

    kind = "lens"
    format_version = 1
    title = "Lens: what each layer predicts"

    meta: dict
    lens: dict
    site: str
    layers: list
    n_layers: int
    positions: str
    prompts: list | None
    tokens: list
    str_tokens: list | None
    targets: list | None
    token_text: dict
    top_ids: np.ndarray
    top_probs: np.ndarray
    out_top_ids: np.ndarray
    out_top_probs: np.ndarray
    kl: np.ndarray
    out_rank: np.ndarray
    target_rank: np.ndarray | None = None
    target_prob: np.ndarray | None = None
    extra: dict = field(default_factory=dict)

    # ------------------------------------------------------------------ dict
    @classmethod
    def from_dict(cls, d: dict) -> "LensResult":
        d = dict(d)
        for key, dtype in _ARRAYS.items():
            if d.get(key) is not None:
                d[key] = json_array(d[key], dtype)
        d["token_text"] = {int(k): v for k, v in d["token_text"].items()}
        return cls(**d)

    # ------------------------------------------------------------------ views
    @property
    def n(self) -> int:
        return self.top_ids.shape[0]

    @property
    def lens_name(self) -> str:
        name = self.lens.get("lens", "?")
        conv = self.lens.get("convention")
        return f"{name} ({conv})" if conv else name

    @property
    def top1(self) -> np.ndarray:
        """``[n, L, P]`` the lens's top-1 token id."""
        return self.top_ids[..., 0]

    @property
    def layer_labels(self) -> list[str]:
        return [f"{self.site}[{l}]" for l in self.layers]

    def text(self, token_id: int) -> str:
        return self.token_text.get(int(token_id), f"<{int(token_id)}>")

    def last_index(self, prompt: int = 0) -> int:
        return 0 if self.positions == "last" else len(self.tokens[prompt]) - 1

    def table(self, prompt: int = 0, position: int | None = None) -> str:
        """Terminal table: per layer the lens's top-1 token, its probability, KL to the output."""
        pos = self.last_index(prompt) if position is None else position
        rows = [f"{'layer':<18} {'top-1':<16} {'p':>6}  {'KL':>7}" + ("  target rank" if self.targets else "")]
        for li, label in enumerate(self.layer_labels):
            tok = self.text(self.top_ids[prompt, li, pos, 0])
            line = f"{label:<18} {tok!r:<16} {self.top_probs[prompt, li, pos, 0]:6.3f}  {self.kl[prompt, li, pos]:7.3f}"
            if self.targets:
                line += f"  {self.target_rank[prompt, li]:>11d}"
            rows.append(line)
        out = f"{'output':<18} {self.text(self.out_top_ids[prompt, pos, 0])!r:<16} {self.out_top_probs[prompt, pos, 0]:6.3f}"
        rows.append(out + ("" if not self.targets else f"  {'':>7}  {self.target_rank[prompt, -1]:>11d}"))
        return "\n".join(rows)

    def summary(self) -> str:
        kl = np.nanmean(self.kl, axis=(0, 2))
        head = (f"{self.lens_name} lens at {self.site} of {self.meta.get('name', '?')}: {self.n} prompt(s), "
                f"{len(self.layers)} layers, positions={self.positions}")
        lines = [head, "mean KL(output ‖ lens) per layer: " + " ".join(f"{x:.2f}" for x in kl)]
        if self.n == 1:
            lines.append(self.table(0))
        return "\n".join(lines)

    def _plots(self):
        figs = {"heatmap": plots.heatmap, "kl": plots.kl_curve}
        figs["rank"] = plots.rank_curve
        return figs

    def report(self) -> Page:
        page = Page(self.title)
        page.section("Summary", f"<pre>{html.escape(self.summary())}</pre>")
        page.section("Top token per layer and position", img_tag(self.plot("heatmap"), "heatmap"),
                     guide="Each cell is the lens's most probable next token at that layer (row) and "
                           "position (column); colour is its probability. The bottom row is the model's output.")
        what = "the target" if self.targets else "the output's top-1 token"
        page.section("Rank per layer", img_tag(self.plot("rank"), "rank"),
                     guide=f"Rank (1 = top) of {what} under the lens at each layer, and KL to the output.")
        page.add(img_tag(self.plot("kl"), "kl"))
        rows = [[lab, self.text(self.top_ids[0, li, self.last_index(), 0]),
                 float(self.top_probs[0, li, self.last_index(), 0]), float(self.kl[0, li, self.last_index()])]
                for li, lab in enumerate(self.layer_labels)]
        page.section("Last position of the first prompt", html_table(["layer", "top-1", "p", "KL"], rows, left=(0, 1)))
        page.add(meta_line({**self.meta, **self.lens}))
        return page


def json_array(x, dtype) -> np.ndarray:
    """A (nested) JSON list back to an array; None (a saved NaN) becomes NaN."""
    a = np.array(x, dtype=object)
    return np.where(a == None, np.nan, a).astype(np.float64).astype(dtype)  # noqa: E711
