"""``PatchingResult``: the metric after patching each component, with its axes and metric.

TransformerLens-compatible ``get_act_patch_*`` functions return bare tensors (as their
namesakes do); ``activation_patch`` returns this result, whose ``scores`` is that tensor.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from jaxtyping import Float
from torch import Tensor

from ..core import Result, new_figure, register_result


def plot_patching(result: "PatchingResult", ax=None):
    """Heatmap of the scores: layer × the next axis (further axes summed), centred colours
    around the unpatched metric."""
    scores = result.scores.detach().double().cpu()
    while scores.ndim > 2:
        scores = scores.sum(-1)
    if scores.ndim == 1:
        scores = scores[:, None]
    if ax is None:
        fig, ax = new_figure(figsize=(1.4 + 0.35 * scores.shape[1], 1.2 + 0.25 * scores.shape[0]))
    else:
        fig = ax.figure
    centre = result.unpatched_value if result.unpatched_value is not None else 0.0
    lim = float((scores - centre).abs().max()) or 1.0
    im = ax.imshow(scores.numpy(), cmap="RdBu", vmin=centre - lim, vmax=centre + lim, aspect="auto")
    ax.set_yticks(range(len(result.layers)), [str(l) for l in result.layers])
    ax.set(ylabel="layer", xlabel=result.axes[1] if len(result.axes) > 1 else "",
           title=f"patching {result.site} — {result.metric}")
    fig.colorbar(im, ax=ax, shrink=0.8)
    return fig


@register_result
@dataclass
class PatchingResult(Result):
    """Activation patching of one site.

    Attributes:
        scores: the metric after patching each component, ``[layer, ...]`` shaped like ``axes``.
        site: the patched site (``z``, ``mlp_out``, ``pattern`` ...).
        axes: axis names of ``scores`` (first ``"layer"``).
        layers: the model layers along the first axis.
        metric: a description of the metric.
        unpatched_value: the metric on the corrupted run (None when not computed).
        meta: model identity (``adapter.meta``).
    """

    kind = "patching"
    format_version = 1
    title = "Activation patching"

    scores: Float[Tensor, "layer ..."]
    site: str
    axes: tuple[str, ...]
    layers: list[int]
    metric: str
    unpatched_value: float | None = None
    meta: dict = field(default_factory=dict)

    def summary(self) -> str:
        flat = self.scores.reshape(-1).double().cpu()
        ref = self.unpatched_value if self.unpatched_value is not None else 0.0
        top = (flat - ref).abs().topk(min(5, flat.numel())).indices.tolist()
        items = ", ".join(f"{tuple(int(i) for i in torch.unravel_index(torch.tensor(k), self.scores.shape))}: "
                          f"{float(flat[k]):+.4g}" for k in top)
        return f"patching {self.site} over {self.axes} with {self.metric}; largest changes: {items}"

    def _plots(self):
        return {"heatmap": plot_patching}

    @classmethod
    def from_dict(cls, d: dict) -> "PatchingResult":
        d = dict(d)
        d["scores"] = torch.tensor(d["scores"], dtype=torch.float32)
        d["axes"] = tuple(d["axes"])
        return cls(**d)
