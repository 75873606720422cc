"""Task metrics over answer *sets* (engine ``Metric`` s: one value per row, differentiable).

``correct`` / ``incorrect``: ``[rows, k]`` token ids padded with -1 (one row per prompt).
"""

from __future__ import annotations

import torch
from jaxtyping import Float
from torch import Tensor

from ..engine.metrics import KLToClean, Metric

METRICS = ("logit_diff", "prob", "kl")


def _set_mean(logits: Float[Tensor, "rows vocab"], ids: Tensor) -> Float[Tensor, "rows"]:
    ids = ids.to(logits.device)
    valid = (ids >= 0).to(logits.dtype)
    vals = logits.gather(-1, ids.clamp_min(0)) * valid
    return vals.sum(-1) / valid.sum(-1).clamp_min(1)


class SetLogitDiff(Metric):
    """Mean logit of the correct set minus mean logit of the incorrect set (one answer row per
    batch row: the kernel narrows it to each chunk)."""

    per_row_targets = True

    def __init__(self, correct: Tensor, incorrect: Tensor):
        self.correct, self.incorrect = torch.as_tensor(correct), torch.as_tensor(incorrect)
        if self.correct.ndim != 2 or self.incorrect.ndim != 2:
            raise ValueError("correct / incorrect must be [rows, k] token ids padded with -1")

    def from_last(self, logits):
        return _set_mean(logits, self.correct) - _set_mean(logits, self.incorrect)

    def for_rows(self, idx):
        idx = idx.cpu()
        return type(self)(self.correct[idx], self.incorrect[idx])

    def repeat(self, k: int) -> "SetLogitDiff":
        """Each row repeated ``k`` times in a block (rows ``i·k … i·k + k − 1`` are prompt i)."""
        return type(self)(self.correct.repeat_interleave(k, 0), self.incorrect.repeat_interleave(k, 0))


class SetProb(SetLogitDiff):
    """Probability of the correct set (the incorrect set is not used)."""

    def from_last(self, logits):
        p = logits.float().softmax(-1)
        ids = self.correct.to(logits.device)
        return (p.gather(-1, ids.clamp_min(0)) * (ids >= 0)).sum(-1).to(logits.dtype)


def task_metric(kind: str, correct: Tensor, incorrect: Tensor, clean_logits: Tensor | None = None) -> Metric:
    """The metric ``kind`` (``METRICS``) for prompts with these answers (KL needs the clean
    run's last-position logits ``[rows, vocab]``)."""
    if kind == "logit_diff":
        return SetLogitDiff(correct, incorrect)
    if kind == "prob":
        return SetProb(correct, incorrect)
    if kind == "kl":
        if clean_logits is None:
            raise ValueError("the KL metric needs the clean logits")
        return KLToClean(clean_logits)
    raise ValueError(f"unknown metric {kind!r}; choose from {METRICS}")
