"""End-to-end interaction studies: one prompt in one model, or the same prompt in two models.

    res = compute_interactions(model, "The capital of France is the city of", n=6)
    res.top(5); res.save("france.json")
    cmp = compare_models([smollm2, gemma3], prompt, n=8)      # sharing + joint extraction
"""

from __future__ import annotations

import time
from typing import Sequence

import numpy as np
import torch

from ..adapter import as_adapter
from . import analysis
from .baselines import get_baseline
from .joint import joint_sparsify
from .players import MAX_PLAYERS, PlayerError, Players, PlayerTokens, Word
from .result import Baseline, Comparison, InteractionResult
from .sparsify import sparsify
from .values import resolve_target, subset_values


def _players_and_tokens(adapter, prompt, players, n, max_players) -> tuple[Players, PlayerTokens]:
    if isinstance(players, PlayerTokens):
        words = [Word(f"p{i}", -1, -1) for i in range(players.n)]
        return Players(prompt if isinstance(prompt, str) else "", words), players
    if not isinstance(prompt, str):
        raise PlayerError("prompt must be a string (or pass players=PlayerTokens for token ids)")
    chosen = players if isinstance(players, Players) else Players.from_prompt(prompt, players, n=n,
                                                                              max_players=max_players)
    return chosen, chosen.tokens_for(adapter)


def _target_text(adapter, target_id: int) -> str:
    tok = adapter.tokenizer
    return tok.decode([target_id]) if tok is not None else f"<{target_id}>"


def compute_interactions(model, prompt, *, players=None, n: int = 10, target=None,
                         baseline="pad", baseline_options: dict | None = None, method: str = "auto",
                         relative: bool = True, max_batch_tokens: int | None = None,
                         progress: bool = False, sparsify_options: dict | None = None,
                         max_players: int = MAX_PLAYERS) -> InteractionResult:
    """AND-OR interactions between the players of ``prompt`` in ``model``.

    Args:
        prompt: text (players are words) — or anything when ``players`` is a ``PlayerTokens``
            (models without a tokenizer).
        players: None (default choice of ``n`` words), words / word indices / char spans, a
            ``Players`` or a ``PlayerTokens``.
        target: None (the model's argmax next token), a token id, or a one-token string.
        baseline: "pad" (default), "unk", "zero", "mean", "bos", "token:<id>", "learned"
            (one baseline per model learned over a dataset of other prompts — ``prompts``
            (default: the bundled set) or ``samples`` in ``baseline_options``, with the
            ``learn_baseline`` options; see ``baselines.get_baseline``), a tensor or a ``Baseline``.
        method: sparsification method (``sparsify``): "auto", "lp", "pdhg", "adam", "sgd".
        relative: report v(S) − v(∅) (default) rather than raw log-odds.
        max_batch_tokens: engine memory budget (rows × tokens per forward).
    """
    adapter = as_adapter(model)
    chosen, toks = _players_and_tokens(adapter, prompt, players, n, max_players)
    return _interactions(adapter, chosen, toks, resolve_target(adapter, toks, target), baseline=baseline,
                         baseline_options=baseline_options, method=method, relative=relative,
                         max_batch_tokens=max_batch_tokens, progress=progress,
                         sparsify_options=sparsify_options, max_players=max_players)


def _interactions(adapter, chosen: Players, toks: PlayerTokens, target_id: int, *, baseline,
                  baseline_options, method, relative, max_batch_tokens, progress, sparsify_options,
                  max_players) -> InteractionResult:
    """``compute_interactions`` once the players are aligned and the target resolved."""
    t0 = time.perf_counter()
    opts = dict(baseline_options or {})
    if baseline == "learned":  # over a dataset of other prompts, never the explained one
        opts.setdefault("exclude", chosen.prompt)
        opts.setdefault("n", toks.n)
    base = get_baseline(adapter, baseline, **opts)
    t1 = time.perf_counter()
    reuse: dict = {}
    v_raw = subset_values(adapter, toks, target_id, base.vector, max_batch_tokens=max_batch_tokens,
                          progress=progress, max_players=max_players, reuse_plan=reuse)
    t2 = time.perf_counter()
    v = v_raw - v_raw[0] if relative else v_raw
    sp = sparsify(v, method=method, **(sparsify_options or {}))
    t3 = time.perf_counter()
    return InteractionResult(
        players=chosen, tokens=toks, target_id=target_id, target=_target_text(adapter, target_id),
        model=adapter.meta, baseline=base, v=v, v_empty=float(v_raw[0]), relative=relative,
        sparsification=sp,
        timings={"baseline_s": t1 - t0, "values_s": t2 - t1, "sparsify_s": t3 - t2,
                 "n_forward_rows": int(2 ** toks.n), "n_tokens": len(toks.tokens),
                 # causal prefix reuse: token positions computed vs the dense 2^n × n_tokens
                 "computed_positions": reuse.get("computed_positions", int(2 ** toks.n) * len(toks.tokens)),
                 "dense_positions": int(2 ** toks.n) * len(toks.tokens),
                 "position_reuse": reuse.get("mode", "dense"),
                 "threads": torch.get_num_threads()})


def reusable(result, adapter, toks: PlayerTokens, target_id: int, baseline, method: str) -> bool:
    """Does ``result`` (an ``InteractionResult`` or None) hold what ``compare_models`` would
    compute for this model: same model identity, player tokens and positions, target id,
    relative values, sparsification method (``auto`` takes any) and baseline vector (a fixed
    kind, a tensor or a ``Baseline``; a baseline still to be learned is never matched)?"""
    if not isinstance(result, InteractionResult) or not result.relative or result.model != adapter.meta:
        return False
    if result.tokens.tokens != toks.tokens or result.tokens.positions != toks.positions:
        return False
    if result.target_id != target_id or method not in ("auto", result.sparsification.method):
        return False
    if isinstance(baseline, str) and baseline == "learned":
        return False
    vector = get_baseline(adapter, baseline).vector
    return torch.equal(vector.float().cpu(), result.baseline.vector.float().cpu())


def same_word(a: str, b: str) -> bool:
    return a.strip().lower() == b.strip().lower() and a.strip() != ""


def compare_models(models: Sequence, prompt: str, *, players=None, n: int = 10, target=None,
                   baselines="pad", method: str = "auto", joint: bool = True,
                   joint_method: str = "auto", tau_rel: float = analysis.TAU_REL,
                   max_batch_tokens: int | None = None, progress: bool = False,
                   baseline_options: dict | None = None, known: Sequence = ()) -> Comparison:
    """The same players and target word in several models, with sharing metrics.

    Players are chosen once (as words) and mapped to each tokenizer; the models must predict
    the same next word (compared without surrounding spaces, case-insensitively) unless
    ``target`` (a string, one token in every model) is given. ``baselines`` is one choice for
    all models or one per model. Sharing metrics compare the first two models.
    ``known``: ``InteractionResult`` s already computed for the leading models (``None`` for
    none); one is reused instead of recomputing its 2^n values where it is of the same model,
    token positions, target id, fixed baseline vector and relative values (``reusable``), and
    recomputed otherwise.
    """
    adapters = [as_adapter(m) for m in models]
    if len(adapters) < 2:
        raise ValueError("compare_models needs at least two models")
    chosen = players if isinstance(players, Players) else Players.from_prompt(prompt, players, n=n)
    tokens = []
    for a in adapters:
        try:
            tokens.append(chosen.tokens_for(a))
        except PlayerError as exc:
            raise PlayerError(f"players {chosen.texts} cannot be aligned in {a.name}: {exc}") from exc
    if target is not None and not isinstance(target, str):
        raise PlayerError("across models the target must be a string (token ids differ between tokenizers)")
    target_ids = [resolve_target(a, t, target) for a, t in zip(adapters, tokens)]
    words = [_target_text(a, t) for a, t in zip(adapters, target_ids)]
    if not all(same_word(words[0], w) for w in words[1:]):
        raise PlayerError(f"the models predict different next words {words}; pass target=' word' "
                          f"(one token in each model) to compare them on a given word")
    if isinstance(baselines, (str, torch.Tensor, Baseline)):
        baselines = [baselines] * len(adapters)
    if len(baselines) != len(adapters):
        raise ValueError(f"{len(baselines)} baselines for {len(adapters)} models")
    known = list(known) + [None] * (len(adapters) - len(known))
    results = [r if reusable(r, a, toks, t, b, method) else
               _interactions(a, chosen, toks, t, baseline=b, baseline_options=baseline_options, method=method,
                             relative=True, max_batch_tokens=max_batch_tokens, progress=progress,
                             sparsify_options=None, max_players=MAX_PLAYERS)
               for a, toks, t, b, r in zip(adapters, tokens, target_ids, baselines, known)]
    sharing = analysis.sharing(results[0], results[1], tau_rel)
    joint_res = joint_sharing = None
    if joint:
        joint_res = joint_sparsify(np.stack([r.v for r in results]), method=joint_method)
        joint_sharing = analysis.sharing(joint_res[0], joint_res[1], tau_rel)
    return Comparison(results=results, sharing=sharing, joint=joint_res, joint_sharing=joint_sharing,
                      settings={"tau_rel": tau_rel, "method": method, "joint_method": joint_method,
                                "n": chosen.n})
