"""Baseline embeddings b for masked players (``e' = m·e + (1−m)·b`` at ``hook_embed``).

Fixed choices: ``"zero"``, ``"mean"`` (mean embedding over the vocabulary), ``"pad"``,
``"unk"``, ``"bos"`` or ``"token:<id>"``. All are taken at ``hook_embed`` (so any embedding
scale a model applies there is included).

``learn_baseline`` learns b (initialised from one of the fixed choices) to make the masked
inputs interact as little as possible where nothing should interact: it minimises

    E | v(S1∪S2∪S3) − v(S1∪S3) − v(S2∪S3) + v(S3) |

over random disjoint S1, S2 (1–3 players each) and S3 (the rest of the players with
probability 1/3, else a random part of it), ``draws`` draws per sentence and step, with SGD
(lr 1e-3, momentum 0.9 by default). The forward is the engine's ``masked_forward`` in
gradient mode (the token mask at ``hook_embed`` with the learnable b as baseline); model
weights are frozen for the duration.
"""

from __future__ import annotations

import contextlib
from typing import Sequence

import numpy as np
import torch

from ..adapter import as_adapter
from ..engine import MaskSpec, masked_forward
from .players import PlayerTokens
from .result import Baseline
from .values import log_odds

FIXED = ("zero", "mean", "pad", "unk", "bos")


def fixed_baseline(model, kind: str = "pad") -> Baseline:
    """A fixed baseline embedding (see module docstring for ``kind``)."""
    adapter = as_adapter(model)
    if kind == "zero":
        vec = torch.zeros(adapter.d_model, dtype=adapter.dtype, device=adapter.device)
    elif kind == "mean":
        vec = _mean_embedding(adapter)
    elif kind in ("pad", "unk", "bos") or kind.startswith("token:"):
        vec = adapter.embed(torch.tensor([[_token_id(adapter, kind)]], device=adapter.device))[0, 0]
    else:
        raise ValueError(f"unknown baseline {kind!r}; choose from {FIXED}, 'token:<id>' or 'learned'")
    return Baseline(kind=kind, vector=vec.detach().float().cpu())


def _token_id(adapter, kind: str) -> int:
    if kind.startswith("token:"):
        tid = int(kind.split(":", 1)[1])
        if not 0 <= tid < adapter.cfg.d_vocab:
            raise ValueError(f"baseline token id {tid} outside the vocabulary")
        return tid
    tok = adapter.tokenizer
    if tok is None:
        raise ValueError(f"baseline {kind!r} needs a tokenizer; use 'zero', 'mean' or 'token:<id>'")
    tid = getattr(tok, f"{kind}_token_id", None)
    if tid is None and kind == "pad":
        tid = tok.unk_token_id if tok.unk_token_id is not None else tok.eos_token_id
    if tid is None:
        raise ValueError(f"{adapter.name}'s tokenizer has no {kind} token; choose another baseline")
    return int(tid)


@torch.no_grad()
def _mean_embedding(adapter, chunk: int = 16384) -> torch.Tensor:
    total = torch.zeros(adapter.d_model, dtype=torch.float64, device=adapter.device)
    V = adapter.cfg.d_vocab
    for start in range(0, V, chunk):
        ids = torch.arange(start, min(start + chunk, V), device=adapter.device)[:, None]
        total += adapter.embed(ids)[:, 0].to(torch.float64).sum(0)
    return (total / V).to(adapter.dtype)


@contextlib.contextmanager
def _frozen(model):
    """Parameters stop requiring grad inside the block (restored afterwards)."""
    params = list(model.parameters())
    before = [p.requires_grad for p in params]
    try:
        for p in params:
            p.requires_grad_(False)
        yield
    finally:
        for p, r in zip(params, before):
            p.requires_grad_(r)


def draw_subsets(n: int, draws: int, rng: np.random.Generator) -> np.ndarray:
    """``[draws, 4, n]`` bool rows S1∪S2∪S3, S1∪S3, S2∪S3, S3 for random disjoint S1, S2, S3."""
    if n < 2:
        raise ValueError("learning a baseline needs at least 2 players")
    out = np.zeros((draws, 4, n), dtype=bool)
    for d in range(draws):
        perm = rng.permutation(n)
        k1 = int(rng.integers(1, min(3, n - 1) + 1))
        k2 = int(rng.integers(1, min(3, n - k1) + 1))
        s1, s2, rest = perm[:k1], perm[k1:k1 + k2], perm[k1 + k2:]
        if rng.random() < 1 / 3:
            s3 = rest
        else:
            s3 = rest[rng.random(len(rest)) < 0.5]
        for row, parts in enumerate(((s1, s2, s3), (s1, s3), (s2, s3), (s3,))):
            for p in parts:
                out[d, row, p] = True
    return out


def interaction_loss(model, tokens: PlayerTokens, target: int, b: torch.Tensor,
                     subsets: np.ndarray) -> torch.Tensor:
    """Mean |v(S1∪S2∪S3) − v(S1∪S3) − v(S2∪S3) + v(S3)| for ``subsets`` ``[draws, 4, n]``
    (differentiable in ``b``)."""
    adapter = as_adapter(model)
    draws = subsets.shape[0]
    keep = torch.from_numpy(tokens.keep_matrix(subsets.reshape(draws * 4, -1)))
    prompt = torch.tensor([tokens.tokens], device=adapter.device)
    v = masked_forward(adapter, prompt, MaskSpec.from_tokens(keep), baseline=b, grad=True, prefix_reuse=False,
                       output=lambda logits: log_odds(logits, target), max_batch_tokens=keep.numel(),
                       progress=False).reshape(draws, 4)
    return (v[:, 0] - v[:, 1] - v[:, 2] + v[:, 3]).abs().mean()


def learn_baseline(model, samples: Sequence[tuple[PlayerTokens, int]], *, init: str = "pad",
                   epochs: int = 100, lr: float = 1e-3, momentum: float = 0.9, draws: int = 10,
                   seed: int = 0, eval_draws: int = 0, progress: bool = True) -> Baseline:
    """Learn one baseline embedding for ``model`` over ``samples`` (player tokens, target id).

    Each epoch visits every sample once (shuffled) with ``draws`` random subset triples and one
    SGD step. The training loss per epoch (mean over its steps, each on fresh random draws) is
    kept in ``Baseline.history``. With ``eval_draws`` > 0, the loss on one fixed set of
    ``eval_draws`` triples per sample (drawn once from ``seed + 1``) is measured before the
    first step and after every epoch, in ``Baseline.eval_history`` (``epochs + 1`` values): a
    curve whose changes come from b alone, not from the draws.
    """
    adapter = as_adapter(model)
    if not samples:
        raise ValueError("learn_baseline needs at least one (PlayerTokens, target) sample")
    start = fixed_baseline(adapter, init).vector.to(device=adapter.device, dtype=adapter.dtype)
    b = torch.nn.Parameter(start.clone())
    opt = torch.optim.SGD([b], lr=lr, momentum=momentum)
    rng = np.random.default_rng(seed)
    history: list[float] = []
    eval_history: list[float] = []
    eval_rng = np.random.default_rng(seed + 1)
    fixed = [draw_subsets(tokens.n, eval_draws, eval_rng) for tokens, _ in samples] if eval_draws else []

    def evaluate() -> None:
        if fixed:
            with torch.no_grad():
                eval_history.append(float(np.mean([interaction_loss(adapter, tokens, target, b, subs).item()
                                                   for (tokens, target), subs in zip(samples, fixed)])))
    epochs_iter = range(epochs)
    if progress:
        from tqdm.auto import tqdm

        epochs_iter = tqdm(epochs_iter, desc=f"baseline {adapter.name}", unit="epoch")
    with _frozen(adapter.model):
        evaluate()
        for _ in epochs_iter:
            total = 0.0
            for idx in rng.permutation(len(samples)):
                tokens, target = samples[idx]
                subsets = draw_subsets(tokens.n, draws, rng)
                loss = interaction_loss(adapter, tokens, target, b, subsets)
                opt.zero_grad()
                loss.backward()
                opt.step()
                total += loss.item()
            history.append(total / len(samples))
            evaluate()
            if progress and hasattr(epochs_iter, "set_postfix"):
                epochs_iter.set_postfix(loss=f"{history[-1]:.4f}")
    return Baseline(kind="learned", vector=b.detach().float().cpu(), init=init, seed=seed, epochs=epochs,
                    lr=lr, momentum=momentum, draws=draws, history=history,
                    eval_history=eval_history)


def bundled_prompts() -> list[str]:
    """The bundled cloze prompts (``interp_toolkit/data/interaction_prompts.txt``)."""
    from importlib import resources

    text = resources.files("interp_toolkit.data").joinpath("interaction_prompts.txt").read_text()
    return [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]


def dataset_samples(model, prompts: Sequence[str], *, n: int = 10, exclude: str | None = None,
                    max_prompts: int | None = 16) -> list[tuple[PlayerTokens, int]]:
    """(player tokens, argmax target) for a dataset of prompts in ``model``, leaving out the
    prompt being explained (``exclude``) and prompts whose players cannot be aligned."""
    from .players import PlayerError, Players
    from .values import resolve_target

    adapter = as_adapter(model)
    out = []
    for text in prompts:
        if exclude is not None and text.strip() == exclude.strip():
            continue
        try:
            toks = Players.from_prompt(text, n=n).tokens_for(adapter)
        except PlayerError:
            continue
        out.append((toks, resolve_target(adapter, toks, None)))
        if max_prompts is not None and len(out) >= max_prompts:
            break
    return out


def get_baseline(model, baseline, samples=None, *, prompts=None, n: int = 10, exclude: str | None = None,
                 max_prompts: int | None = 16, **learn_kwargs) -> Baseline:
    """A ``Baseline`` from a name (fixed kinds or ``"learned"``), a tensor, or a Baseline.

    ``"learned"`` is learned as in the reference — one baseline per model, over a dataset of
    prompts, not on the prompt being explained: over ``samples`` ((PlayerTokens, target)
    pairs) if given, else over ``prompts`` (default: the bundled prompt set; the first
    ``max_prompts`` usable ones, ``exclude`` — the explained prompt — left out), ``n`` players each.
    """
    if isinstance(baseline, Baseline):
        return baseline
    if isinstance(baseline, torch.Tensor):
        return Baseline(kind="given", vector=baseline.detach().float().cpu())
    if baseline == "learned":
        if not samples:
            samples = dataset_samples(model, bundled_prompts() if prompts is None else prompts, n=n,
                                      exclude=exclude, max_prompts=max_prompts)
        if not samples:
            raise ValueError("a learned baseline needs a dataset of prompts other than the one explained "
                             "(pass baseline_options={'prompts': [...]} or {'samples': [...]}, or a Baseline)")
        return learn_baseline(model, samples, **learn_kwargs)
    return fixed_baseline(model, baseline)
