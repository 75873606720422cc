"""Metric functions of a model's output, for patching and attribution.

A metric maps logits to one value per batch row. It accepts either the last position's
logits ``[rows, vocab]`` (what the kernel decodes by default: cheap) or full logits
``[rows, pos, vocab]`` (TransformerLens's patching convention), of which it reads the last
position. All are differentiable (attribution takes their gradients).

``metric_on = "last_logits"`` tells the patching functions that a metric needs only the
last position; a plain function is assumed to need full logits, as in TransformerLens.
"""

from __future__ import annotations

from typing import Sequence

import torch
from jaxtyping import Float
from torch import Tensor


def last_position(logits: Tensor) -> Float[Tensor, "rows vocab"]:
    """``[rows, vocab]`` from ``[rows, vocab]`` or ``[rows, pos, vocab]``."""
    if logits.ndim == 3:
        return logits[:, -1]
    if logits.ndim == 2:
        return logits
    if logits.ndim == 1:
        return logits[None]
    raise ValueError(f"logits must be [rows, vocab] or [rows, pos, vocab], got {tuple(logits.shape)}")


def _token_ids(ids) -> Tensor:
    t = torch.as_tensor(ids, dtype=torch.long)
    if t.ndim > 1:
        raise ValueError(f"token ids must be an int or one id per prompt, got shape {tuple(t.shape)}")
    return t


def _pick(logits: Float[Tensor, "rows vocab"], ids: Tensor) -> Float[Tensor, "rows"]:
    ids = ids.to(logits.device)
    if ids.ndim == 0:
        return logits[:, ids]
    if ids.shape[0] != logits.shape[0]:
        raise ValueError(f"{ids.shape[0]} target ids for {logits.shape[0]} rows")
    return logits.gather(-1, ids[:, None])[:, 0]


def kl_divergence(log_p: Float[Tensor, "*rows vocab"], log_q: Float[Tensor, "*rows vocab"]) -> Float[Tensor, "*rows"]:
    """KL(p ‖ q) = Σ_v p_v (log p_v − log q_v) in nats, from log-probabilities (broadcast over
    the leading axes). Terms with p_v = 0 (``log_p = −inf``) count 0. Differentiable in
    ``log_q``. The one KL of the toolkit: metrics, s-Trace and the greedy oracle use it."""
    p = log_p.exp()
    return torch.where(p > 0, p * (log_p - log_q), torch.zeros((), dtype=p.dtype, device=p.device)).sum(-1)


class Metric:
    """Base class: ``metric(logits) -> [rows]``; see the module docstring."""

    metric_on = "last_logits"
    per_row = True  # one value per row, rows independent (callable on a whole chunk at once)
    # targets given one per batch row: the kernel narrows the metric to each chunk's rows
    # (``for_rows``) before calling it
    per_row_targets = False

    def __call__(self, logits: Tensor) -> Float[Tensor, "rows"]:
        return self.from_last(last_position(logits))

    def from_last(self, logits: Float[Tensor, "rows vocab"]) -> Float[Tensor, "rows"]:
        raise NotImplementedError

    def for_rows(self, idx: Tensor) -> "Metric":
        """The metric for the batch rows ``idx`` (targets given one per row are indexed)."""
        return self


def _rows(t: Tensor, idx: Tensor) -> Tensor:
    return t[idx.to(t.device)] if t.ndim >= 1 else t


class LogitDiff(Metric):
    """``logit[correct] − logit[incorrect]`` at the last position (ids: int, or one per row;
    several incorrect ids per row are averaged when given as a list of lists)."""

    def __init__(self, correct, incorrect):
        self.correct = _token_ids(correct)
        if isinstance(incorrect, Sequence) and incorrect and isinstance(incorrect[0], Sequence):
            self.incorrect = torch.as_tensor(incorrect, dtype=torch.long)  # [rows, k]
        else:
            self.incorrect = _token_ids(incorrect)

    def from_last(self, logits):
        good = _pick(logits, self.correct)
        if self.incorrect.ndim == 2:
            bad = logits.gather(-1, self.incorrect.to(logits.device)).mean(-1)
        else:
            bad = _pick(logits, self.incorrect)
        return good - bad

    def for_rows(self, idx):
        new = LogitDiff.__new__(LogitDiff)
        new.correct, new.incorrect = _rows(self.correct, idx), _rows(self.incorrect, idx)
        return new

    def __repr__(self):
        return f"LogitDiff(correct={self.correct.tolist()}, incorrect={self.incorrect.tolist()})"


class LogProb(Metric):
    """``log p(target)`` at the last position."""

    def __init__(self, target):
        self.target = _token_ids(target)

    def from_last(self, logits):
        return _pick(logits.log_softmax(-1), self.target)

    def for_rows(self, idx):
        return LogProb(_rows(self.target, idx))

    def __repr__(self):
        return f"LogProb(target={self.target.tolist()})"


class KLToClean(Metric):
    """``KL(p_clean ‖ p)`` at the last position, in nats; 0 where the output equals the clean
    one. ``clean_logits``: ``[vocab]`` or one row per prompt ``[rows, vocab]``.

    Note: at the clean run itself this metric is at its minimum, so its gradient there is
    zero: attribution patching of KL in the noising direction is identically 0 (the
    first-order term vanishes); use denoising, or integrated gradients.
    """

    def __init__(self, clean_logits: Tensor):
        clean = torch.as_tensor(clean_logits).detach()
        self.clean_log_probs = last_position(clean if clean.ndim > 1 else clean[None]).log_softmax(-1)

    def from_last(self, logits):
        ref = self.clean_log_probs.to(device=logits.device, dtype=logits.dtype)
        return kl_divergence(ref, logits.log_softmax(-1))

    def for_rows(self, idx):
        new = KLToClean.__new__(KLToClean)
        lp = self.clean_log_probs
        new.clean_log_probs = lp if lp.shape[0] == 1 else lp[idx.to(lp.device)]
        return new

    def __repr__(self):
        return f"KLToClean(vocab={self.clean_log_probs.shape[-1]})"


def metric_value(metric, logits: Tensor, n_prompts: int) -> float:
    """One float from a metric's output: a scalar as is, one value per prompt averaged."""
    v = metric(logits)
    v = torch.as_tensor(v)
    if v.numel() == 1:
        return float(v)
    if v.numel() == n_prompts:
        return float(v.mean())
    raise ValueError(f"metric returned shape {tuple(v.shape)}; expected a scalar or one value per prompt")
