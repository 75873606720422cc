"""``AttributionResult``: scores per site on the shared result layer (see ``common`` for the
layouts and the package docstring for sign conventions)."""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import torch
from torch import Tensor

from ..core import Result, register_result
from .plot import plot_attribution


@register_result
@dataclass
class AttributionResult(Result):
    """Scores per site (see the module docstring for layouts and sign conventions).

    Attributes:
        method: ``"attribution_patching"``, ``"integrated_gradients"`` or ``"exact"``.
        direction: ``"denoising"`` or ``"noising"``.
        scores: site -> tensor ``[layer, ...]`` (layers as in ``layers``).
        axes: site -> axis names of its scores.
        layers: the model layers along each score's first axis.
        base_value / other_value: the metric on the base run / on the other run.
        metric: a description of the metric.
        steps / path: integrated-gradients settings (None otherwise).
        meta: model identity (name, dtype, ...).
    """

    method: str
    direction: str
    scores: dict[str, Tensor]
    axes: dict[str, tuple[str, ...]]
    layers: list[int]
    base_value: float
    other_value: float
    metric: str
    steps: int | None = None
    path: str | None = None
    meta: dict = field(default_factory=dict)

    kind = "attribution"
    format_version = 1
    title = "Attribution"

    @property
    def total_effect(self) -> float:
        """``M(other run) − M(base run)``: the effect of patching everything."""
        return self.other_value - self.base_value

    def top(self, k: int = 10, site: str | None = None) -> list[tuple[str, tuple[int, ...], float]]:
        """The ``k`` components with the largest |score|: ``(site, (layer, ...), score)``."""
        items = []
        for s, t in self.scores.items():
            if site is not None and s != site:
                continue
            flat = t.reshape(-1)
            n = min(k, flat.numel())
            idx = flat.abs().topk(n).indices
            for i in idx.tolist():
                index = list(torch.unravel_index(torch.tensor(i), t.shape))
                index[0] = torch.tensor(self.layers[int(index[0])])
                items.append((s, tuple(int(j) for j in index), float(flat[i])))
        return sorted(items, key=lambda x: -abs(x[2]))[:k]

    def summary(self) -> str:
        lines = [f"{self.method} ({self.direction}), metric {self.metric}: base {self.base_value:.4g}, "
                 f"other {self.other_value:.4g}, total effect {self.total_effect:+.4g}"]
        lines += [f"  {site:<10} {index}  {score:+.4g}" for site, index, score in self.top(10)]
        return "\n".join(lines)

    def _plots(self):
        """One heatmap per site (``plot(site)``)."""
        return {s: functools.partial(plot_attribution, site=s) for s in self.scores}

    def to_dict(self) -> dict:
        d = super().to_dict()
        d["axes"] = {s: list(a) for s, a in self.axes.items()}
        d["dtypes"] = {s: str(t.dtype).replace("torch.", "") for s, t in self.scores.items()}
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "AttributionResult":
        d = dict(d)
        dtypes = d.pop("dtypes", {})
        d["scores"] = {s: torch.tensor(v, dtype=getattr(torch, dtypes.get(s, "float32"))) for s, v in d["scores"].items()}
        d["axes"] = {s: tuple(a) for s, a in d["axes"].items()}
        return cls(**d)
