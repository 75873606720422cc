"""Values v(x_S) for every subset S of the players, through the batched masked forward.

Row s of the batch keeps the players in the subset with bit mask s (see
``players.subset_masks``); masked player tokens take the baseline embedding at ``hook_embed``
(``e' = m·e + (1−m)·b``, engine site ``embed``). All 2^n rows share the prompt, so they run as
chunked batches of ``masked_forward``.

The value is the log-odds of the target token at the last position, in float64:

    v = log p / (1 − p) = logit_y − logsumexp_{j≠y} logit_j

which equals ``log p − log(−expm1(log p))`` but loses no precision when p is near 0 or 1.

Causal prefix reuse (``engine.causal``): the activations at a position depend only on the
masks at positions up to it, so subsets that agree on the players before position p share
every activation there. The engine sorts the rows by their masks position by position (the
earliest player most significant, i.e. later players vary fastest), which gives the smallest
trie whatever the subset order; the values come back indexed by bit mask as before. With n
one-token players at positions p_1 < … < p_n of an N-token prompt it computes
Σ_i 2^i (p_{i+1} − p_i) token positions (p_0 = 0, p_{n+1} = N) instead of 2^n · N.
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
    """log(p/(1−p)) of ``target`` under softmax(logits) along the last axis, in float64:
    ``z_t − logsumexp_{j≠t} z_j`` (no 1 − p is formed, so it stays exact as p → 1). Computed
    row block by row block (each row on its own, so the result does not depend on the blocks)."""
    flat = logits.reshape(-1, logits.shape[-1])
    out = torch.empty(flat.shape[0], dtype=torch.float64, device=logits.device)
    block = max(1, 2**21 // max(1, flat.shape[1]))  # 16 MB of float64 at a time
    for a in range(0, flat.shape[0], block):
        x = flat[a:a + block].to(torch.float64, copy=True)
        y = x[:, target].clone()
        x[:, target] = -torch.inf
        out[a:a + block] = y - torch.logsumexp(x, dim=-1)
    return out.reshape(logits.shape[:-1])


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
                  max_players: int | None = None, position_reuse: bool | str = "auto",
                  reuse_plan: dict | None = None) -> Float[np.ndarray, "subsets"]:
    """Raw values v(x_S) (float64, ``[2^n]``, index = bit mask of S) in batched forwards.

    ``position_reuse``: the engine's causal prefix reuse (default ``"auto"``: where it saves
    work and the model class allows); ``reuse_plan`` is filled with the computed and dense
    token positions (``engine.causal.ReusePlan``)."""
    check_n_players(tokens.n, *(() if max_players is None else (max_players,)))
    adapter = as_adapter(model)
    prompt, spec = _prompt_and_spec(adapter, tokens)
    out = masked_forward(adapter, prompt, spec, baseline=baseline,
                         output=lambda last: log_odds(last, target),
                         max_batch_tokens=max_batch_tokens, progress=progress,
                         position_reuse=position_reuse, reuse_plan=reuse_plan)
    return out.detach().cpu().numpy().astype(np.float64)


def subset_values_loop(model, tokens: PlayerTokens, target: int,
                       baseline: Float[Tensor, "d_model"]) -> Float[np.ndarray, "subsets"]:
    """The same values with one forward per subset (the slow reference)."""
    check_n_players(tokens.n)
    adapter = as_adapter(model)
    prompt, spec = _prompt_and_spec(adapter, tokens)
    logits = masked_forward_loop(adapter, prompt, spec, baseline=baseline, output="last_logits")
    return log_odds(logits, target).cpu().numpy().astype(np.float64)
