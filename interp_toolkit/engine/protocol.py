"""The adapter surface the engine uses, as a ``typing.Protocol``.

``ModelAdapter`` implements it for HookedTransformer and TransformerBridge (tests check both);
anything else with these members can drive the engine. Backend differences (how the final
residual is reached, whether ``hook_resid_mid`` is on the residual path) live behind these
methods, never in the engine.
"""

from __future__ import annotations

from typing import Callable, Protocol, Sequence, runtime_checkable

import torch
from jaxtyping import Float, Int
from torch import Tensor

Hook = tuple[str, Callable]


@runtime_checkable
class EngineAdapter(Protocol):
    n_layers: int
    n_heads: int
    n_kv_heads: int

    @property
    def device(self) -> torch.device: ...

    @property
    def dtype(self) -> torch.dtype: ...

    @property
    def resid_mid_on_residual_path(self) -> bool: ...

    def hook_name(self, site: str, layer: int | None = None) -> str: ...

    def as_tokens(self, tokens_or_text, prepend_bos: bool | None = None) -> Int[Tensor, "batch pos"]: ...

    def forward(self, input, *, fwd_hooks: Sequence[Hook] = (), start_at_layer: int | None = None,
                stop_at_layer: int | None = None, return_type: str | None = "logits") -> Tensor: ...

    def forward_to(self, input, stop: int, *, fwd_hooks: Sequence[Hook] = (),
                   start_at_layer: int | None = None) -> Float[Tensor, "batch pos d_model"]: ...

    def final_resid(self, input, *, fwd_hooks: Sequence[Hook] = (),
                    start_at_layer: int | None = None) -> Float[Tensor, "batch pos d_model"]: ...

    def logits_from_resid(self, resid: Float[Tensor, "... d_model"]) -> Float[Tensor, "... vocab"]: ...
