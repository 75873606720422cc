"""Tuned lens: one affine translator per layer, saved as safetensors + config JSON.

Translator ``i`` maps the residual state entering block ``i`` (``resid_pre[i]``, the
``hidden_states[i]`` of Hugging Face, i = 0..L-1) towards the final state::

    T_i(h) = h + h A_i + b_i,     A_i [d_model, d_model], b_i [d_model], zero at initialisation
    logits = U(norm(T_i(h)))      (final norm recomputed on T_i(h), then the unembedding)

Index conventions (which translator decodes which state):

* ``"tuned"`` (correct): ``resid_pre[i]`` → ``T_i``; ``resid_post[l]`` = ``resid_pre[l+1]``
  → ``T_{l+1}``, and the last ``resid_post`` (the final state) → identity.
* ``"reference"`` (the paper's code): ``resid_post[l]`` → ``T_l``, one layer late;
  ``resid_pre`` is not defined under it.

A saved lens records the model identity (``adapter.meta``) and a SHA-256 of the
unembedding (``W_U``, ``b_U`` and the final norm's gain); using it on a model whose hash
differs raises ``LensMismatchError``.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from jaxtyping import Float, Int
from torch import Tensor

from ..core import atomic_write_bytes, atomic_write_text, dumps
from .lenses import check_site

CONVENTIONS = ("tuned", "reference")
FORMAT_VERSION = 1


class LensMismatchError(ValueError):
    """A tuned lens used with a model it was not trained for."""


def unembed_hash(adapter) -> str:
    """SHA-256 over the float32 bytes of ``W_U``, ``b_U`` and the final norm's gain."""
    h = hashlib.sha256()
    gain = adapter.norm_gain("final")
    for t in (adapter.W_U, adapter.b_U) + ((gain,) if gain is not None else ()):
        h.update(t.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return h.hexdigest()


class TunedLens:
    """Translators ``A`` ``[L, d, d]`` and ``b`` ``[L, d]`` plus the identity they were fitted to."""

    name = "tuned"

    def __init__(self, A: Float[Tensor, "L d d"], b: Float[Tensor, "L d"], *, convention: str = "tuned",
                 model_meta: dict | None = None, unembed_sha256: str | None = None, training: dict | None = None):
        if A.ndim != 3 or A.shape[1] != A.shape[2] or b.shape != A.shape[:2]:
            raise ValueError(f"translator shapes do not fit: A {tuple(A.shape)}, b {tuple(b.shape)}")
        self.A, self.b = A, b
        self.convention = _check_convention(convention)
        self.model_meta = dict(model_meta or {})
        self.unembed_sha256 = unembed_sha256
        self.training = dict(training or {})

    @classmethod
    def zeros(cls, adapter, **kwargs) -> "TunedLens":
        """Identity translators (a tuned lens that equals the logit lens) for ``adapter``."""
        L, d = adapter.n_layers, adapter.d_model
        return cls(torch.zeros(L, d, d), torch.zeros(L, d), model_meta=adapter.meta,
                   unembed_sha256=unembed_hash(adapter), **kwargs)

    @property
    def n_layers(self) -> int:
        return self.A.shape[0]

    def with_convention(self, convention: str) -> "TunedLens":
        """The same translators under another index convention."""
        return TunedLens(self.A, self.b, convention=convention, model_meta=self.model_meta,
                         unembed_sha256=self.unembed_sha256, training=self.training)

    # ------------------------------------------------------------------ decoding
    def translator_index(self, site: str, layer: int, n_layers: int | None = None) -> int | None:
        """Which translator decodes ``site`` of block ``layer`` (None: identity)."""
        L = self.n_layers if n_layers is None else n_layers
        if site == "resid_mid":
            raise ValueError("a tuned lens has translators for resid_pre/resid_post only, not resid_mid")
        if self.convention == "reference":
            if site != "resid_post":
                raise ValueError("the 'reference' convention decodes resid_post only (translator l on resid_post[l])")
            return layer
        if site == "resid_pre":
            return layer
        return layer + 1 if layer + 1 < L else None

    def translate(self, h: Float[Tensor, "... d"], i: int | None) -> Float[Tensor, "... d"]:
        """``T_i(h) = h + h A_i + b_i`` (identity for ``i`` None)."""
        if i is None:
            return h
        A, b = self.A[i].to(h), self.b[i].to(h)
        return h + h @ A + b

    def logits(self, adapter, h: Float[Tensor, "... d_model"], site: str, layer: int,
               vocab: Int[Tensor, "v"] | None = None) -> Float[Tensor, "... d_vocab"]:
        check_site(adapter, site, layer)
        i = self.translator_index(site, layer, adapter.n_layers)
        return adapter.unembed(adapter.final_norm(self.translate(h, i)), vocab)

    def check(self, adapter) -> None:
        """Raise ``LensMismatchError`` unless this lens was trained for ``adapter``'s model."""
        if self.A.shape[0] != adapter.n_layers or self.A.shape[1] != adapter.d_model:
            raise LensMismatchError(
                f"lens has {self.A.shape[0]} translators of width {self.A.shape[1]}; the model "
                f"{adapter.name!r} has {adapter.n_layers} layers of width {adapter.d_model}")
        if self.unembed_sha256 is not None:
            got = unembed_hash(adapter)
            if got != self.unembed_sha256:
                raise LensMismatchError(
                    f"this tuned lens was trained for {self.model_meta.get('name', '?')!r} (unembedding "
                    f"{self.unembed_sha256[:12]}…), not for {adapter.name!r} (unembedding {got[:12]}…)")

    def describe(self) -> dict:
        return {"lens": "tuned", "convention": self.convention, "unembed_sha256": self.unembed_sha256,
                "training": self.training}

    # ------------------------------------------------------------------ files
    def save(self, directory) -> Path:
        """Write ``lens.safetensors`` (A, b in float32) and ``config.json`` into ``directory``."""
        from safetensors.torch import save

        directory = Path(directory)
        data = save({"A": self.A.detach().cpu().float().contiguous(), "b": self.b.detach().cpu().float().contiguous()})
        atomic_write_bytes(directory / "lens.safetensors", data)
        config = {"format_version": FORMAT_VERSION, "kind": "tuned_lens", "n_layers": self.n_layers,
                  "d_model": self.A.shape[1], "convention": self.convention, "model": self.model_meta,
                  "unembed_sha256": self.unembed_sha256, "training": self.training}
        atomic_write_text(directory / "config.json", dumps(config, indent=2))
        return directory

    @classmethod
    def load(cls, directory, adapter=None, convention: str | None = None) -> "TunedLens":
        """Read a lens written by ``save``; with ``adapter``, check it belongs to that model."""
        from safetensors.torch import load_file

        directory = Path(directory)
        cfg_path, w_path = directory / "config.json", directory / "lens.safetensors"
        if not cfg_path.exists() or not w_path.exists():
            raise FileNotFoundError(f"{directory} holds no tuned lens (config.json + lens.safetensors)")
        config = json.loads(cfg_path.read_text())
        if config.get("kind") != "tuned_lens" or config.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"{cfg_path}: not a tuned lens in format version {FORMAT_VERSION}")
        w = load_file(str(w_path))
        lens = cls(w["A"], w["b"], convention=convention or config["convention"], model_meta=config["model"],
                   unembed_sha256=config["unembed_sha256"], training=config.get("training"))
        if adapter is not None:
            from ..adapter import as_adapter

            lens.check(as_adapter(adapter))
        return lens


def _check_convention(convention: str) -> str:
    if convention not in CONVENTIONS:
        raise ValueError(f"convention must be one of {CONVENTIONS}, got {convention!r}")
    return convention
