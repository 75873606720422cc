"""Lenses: maps from an intermediate residual state to next-token logits.

A lens decodes the residual state ``h`` ``[..., d_model]`` read at ``site`` ∈ {resid_pre,
resid_mid, resid_post} of block ``layer`` into logits ``[..., d_vocab]``:

* ``LogitLens``: ``U(norm(h))`` — the model's own final norm, its scale recomputed on ``h``
  (never the scale cached for the last layer), then the unembedding (``adapter.logits_from_resid``).
  On ``resid_post`` of the last block this *is* the model's output.
* ``TunedLens`` (``tuned.py``): ``U(norm(h + h A_i + b_i))`` with a translator ``i`` chosen
  by the index convention.

Both expose ``logits(adapter, h, site, layer, vocab=None)``; ``vocab`` (token ids) restricts
the unembedding to those columns.
"""

from __future__ import annotations

from jaxtyping import Float, Int
from torch import Tensor

SITES = ("resid_pre", "resid_mid", "resid_post")


def check_site(adapter, site: str, layer: int) -> int:
    """Validate ``site``/``layer`` (no negative wrap-around) and return ``layer``."""
    if site not in SITES:
        raise ValueError(f"lens site must be one of {SITES}, got {site!r}")
    if not isinstance(layer, int) or not 0 <= layer < adapter.n_layers:
        raise ValueError(f"layer {layer!r} out of range: the model has layers 0..{adapter.n_layers - 1}")
    return layer


class LogitLens:
    """Final norm (recomputed on the state) + unembedding."""

    name = "logit"
    convention = None

    def logits(self, adapter, h: Float[Tensor, "... d_model"], site: str, layer: int,
               vocab: Int[Tensor, "v"] | None = None) -> Float[Tensor, "... d_vocab"]:
        check_site(adapter, site, layer)
        return adapter.unembed(adapter.final_norm(h), vocab)

    def check(self, adapter) -> None:
        """A logit lens fits every model."""

    def describe(self) -> dict:
        return {"lens": "logit"}
