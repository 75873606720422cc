"""Values v(x_S) for every subset S of the players, through the batched masked forward.

Row s of the batch keeps the players in the subset with bit mask s (see
``players.subset_masks``); masked player tokens take the baseline embedding at ``hook_embed``
(``e' = m·e + (1−m)·b``, engine site ``embed``). All 2^n rows share the prompt, so they run as
chunked batches of ``masked_forward``.

The value is the log-odds of the target token at the last position, in float64:

    v = log p / (1 − p) = logit_y − logsumexp_{j≠y} logit_j

which equals ``log p − log(−expm1(log p))`` but loses no precision when p is near 0 or 1.
"""

from __future__ import annotations

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

from ..adapter import as_adapter
from ..engine import MaskSpec, masked_forward, masked_forward_loop
from .players import PlayerError, PlayerTokens, check_n_players, subset_masks


def log_odds(logits: Float[Tensor, "*rows vocab"], target: int) -> Float[Tensor, "*rows"]:
    """log(p/(1−p)) of ``target`` under softmax(logits) along the last axis, in float64."""
    x = logits.to(torch.float64)
    y = x[..., target]
    others = x.clone()
    others[..., target] = -torch.inf
    return y - torch.logsumexp(others, dim=-1)


def resolve_target(model, tokens: PlayerTokens, target=None) -> int:
    """The target token id: the model's argmax next token on the unmasked prompt (default), a
    given id, or a string that must be exactly one token."""
    adapter = as_adapter(model)
    if target is None:
        with torch.no_grad():
            logits = adapter.forward(torch.tensor([tokens.tokens], device=adapter.device))
        return int(logits[0, -1].argmax())
    try:
        return adapter.token_id(target)
    except (ValueError, TypeError) as exc:
        raise PlayerError(str(exc)) from None


def _prompt_and_spec(adapter, tokens: PlayerTokens) -> tuple[Tensor, MaskSpec]:
    """The prompt ``[1, pos]`` and one input-token mask row per subset (row s = bit mask s)."""
    keep = torch.from_numpy(tokens.keep_matrix(subset_masks(tokens.n)))
    return torch.tensor([tokens.tokens], device=adapter.device), MaskSpec.from_tokens(keep)


def subset_values(model, tokens: PlayerTokens, target: int, baseline: Float[Tensor, "d_model"], *,
                  max_batch_tokens: int | None = None, progress: bool | None = False,
                  max_players: int | None = None) -> Float[np.ndarray, "subsets"]:
    """Raw values v(x_S) (float64, ``[2^n]``, index = bit mask of S) in batched forwards."""
    check_n_players(tokens.n, *(() if max_players is None else (max_players,)))
    adapter = as_adapter(model)
    prompt, spec = _prompt_and_spec(adapter, tokens)
    out = masked_forward(adapter, prompt, spec, baseline=baseline,
                         output=lambda last: log_odds(last, target),
                         max_batch_tokens=max_batch_tokens, progress=progress)
    return out.detach().cpu().numpy().astype(np.float64)


def subset_values_loop(model, tokens: PlayerTokens, target: int,
                       baseline: Float[Tensor, "d_model"]) -> Float[np.ndarray, "subsets"]:
    """The same values with one forward per subset (the slow reference)."""
    check_n_players(tokens.n)
    adapter = as_adapter(model)
    prompt, spec = _prompt_and_spec(adapter, tokens)
    logits = masked_forward_loop(adapter, prompt, spec, baseline=baseline, output="last_logits")
    return log_odds(logits, target).cpu().numpy().astype(np.float64)
