"""Attention patterns of one prompt, from one observation forward (``adapter.run_with_cache``).

For layer l and head h the pattern is A[l, h, q, k] = softmax_k(q_h(q)·k_h(k)/√d_head + causal
mask), post-softmax as cached at ``blocks.l.attn.hook_pattern`` (one row per query position,
each row sums to 1, zero above the diagonal). The report shows them as circuitsvis
``AttentionHeads`` widgets (bundle inlined once per page) plus a static figure of the last
position's attention per head.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from jaxtyping import Float

from ..adapter import as_adapter
from ..core import Page, Result, html_table, img_tag, new_figure, register_result
from ..core.report import meta_line
from ..core.widgets import attention_heads


def default_layers(n_layers: int, k: int = 3) -> list[int]:
    """``k`` layers spread over the depth, always the first and the last: [0, ..., L−1]."""
    if n_layers < 1:
        raise ValueError("the model has no layer")
    return sorted({round(i * (n_layers - 1) / max(k - 1, 1)) for i in range(k)})


@register_result
@dataclass
class AttentionResult(Result):
    """Attention patterns of one prompt at a few layers.

    Attributes:
        prompt: the text (None when token ids were given).
        str_tokens: the prompt's tokens as text, length T.
        layers: the layers shown, length K.
        patterns: float32 ``[K, head, T, T]`` (query, key), rows summing to 1.
        meta: model identity (``adapter.meta``).
    """

    kind = "analyze.attention"
    format_version = 1
    title = "Attention patterns"

    prompt: str | None
    str_tokens: list[str]
    layers: list[int]
    patterns: np.ndarray
    meta: dict = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: dict) -> "AttentionResult":
        return cls(**{**d, "patterns": np.asarray(d["patterns"], dtype=np.float32)})

    def last_token(self) -> Float[np.ndarray, "layer head key"]:
        """Attention from the last position to every key, per layer and head."""
        return self.patterns[:, :, -1, :]

    def top_attended(self, k: int = 3) -> list[list[tuple[str, float]]]:
        """Per layer: the ``k`` tokens the last position attends to most (mean over heads)."""
        out = []
        for mean in self.last_token().mean(1):  # [layer, key]
            top = np.argsort(-mean, kind="stable")[:k]
            out.append([(self.str_tokens[j], float(mean[j])) for j in top])
        return out

    def summary(self) -> str:
        return "\n".join(f"layer {layer}: the last token attends most to "
                         + ", ".join(f"{t!r} {w:.2f}" for t, w in top)
                         for layer, top in zip(self.layers, self.top_attended()))

    def _plots(self):
        return {"last_token": plot_last_token}

    def report(self) -> Page:
        page = Page(self.title)
        heads = self.patterns.shape[1]
        for i, layer in enumerate(self.layers):
            widget = attention_heads(page, self.str_tokens, self.patterns[i],
                                     head_names=[f"L{layer}H{h}" for h in range(heads)])
            page.section(f"Layer {layer}", widget, level=3)
        page.section("Last position, every head", img_tag(plot_last_token(self), "last-token attention"), level=3)
        rows = [[layer, ", ".join(f"{t!r} {w:.2f}" for t, w in top)]
                for layer, top in zip(self.layers, self.top_attended())]
        page.add(html_table(["layer", "most attended from the last position (mean over heads)"], rows, left=(1,)))
        page.add(meta_line(self.meta))
        return page


def plot_last_token(result: AttentionResult):
    """Heatmaps, one per layer: heads (rows) × key positions (columns), attention from the
    last position."""
    att = result.last_token()
    k, heads, t = att.shape
    fig, axes = new_figure(k, 1, figsize=(max(5.0, 0.32 * t + 1.5), 0.32 * heads * k + 1.2 * k))
    axes = np.atleast_1d(axes)
    for i, ax in enumerate(axes):
        im = ax.imshow(att[i], aspect="auto", cmap="Blues", vmin=0, vmax=1)
        ax.set_ylabel(f"L{result.layers[i]} head", fontsize=8)
        ax.set_yticks(range(heads))
        ax.tick_params(labelsize=6)
        ax.set_xticks(range(t))
        ax.set_xticklabels([s.replace("\n", "\\n") for s in result.str_tokens] if i == k - 1 else [],
                           rotation=90, fontsize=6)
    fig.colorbar(im, ax=axes.tolist(), shrink=0.8, label="attention")
    return fig


def attention_patterns(model, prompt, layers=None) -> AttentionResult:
    """Cache the attention patterns of ``prompt`` at ``layers`` (default: first, middle,
    last) in one forward.

    Args:
        model: HookedTransformer, TransformerBridge or ModelAdapter.
        prompt: text or token ids ``[pos]`` / ``[1, pos]``.
        layers: layer indices (negative counts from the end); default ``default_layers``.
    """
    adapter = as_adapter(model)
    tokens = adapter.as_tokens(prompt)
    if tokens.shape[0] != 1:
        raise ValueError(f"one prompt expected, got a batch of {tokens.shape[0]}")
    layers = default_layers(adapter.n_layers) if layers is None else [adapter._layer(int(l)) for l in layers]
    if not layers:
        raise ValueError("no layer to show")
    names = adapter.hook_names("pattern", layers)
    with torch.no_grad():
        _, cache = adapter.run_with_cache(tokens, names)
    patterns = torch.stack([cache[n][0] for n in names]).float().cpu().numpy()
    return AttentionResult(prompt=prompt if isinstance(prompt, str) else None,
                           str_tokens=adapter.to_str_tokens(tokens[0]), layers=list(layers), patterns=patterns,
                           meta=adapter.meta)
