"""Circuit tasks: seeded generators of clean/corrupt prompt pairs, filtered to what the model solves.

Each example is a clean prompt, a corrupt prompt of the same token length, a set of correct
next tokens and a set of incorrect ones (one token each, with a leading space)::

    task            clean                                         corrupt                    correct / incorrect
    ioi             When Mary and John went ..., John gave a drink to   ..., Bob gave ... (ABC)  IO / S
    greater-than    The war lasted from the year 1742 to the year 17   ... 1702 ... 17      tens digits > 4 / < 4
    factual         The capital of France is                       The capital of Italy is    Paris / Rome
    induction       w1 w2 w3 w4 w5 w1 w2 w3 w4                     w1 w2 w3 w4 w5' w1 ... w4  w5 / w5'

The task metric ``m`` is the *logit difference* (mean logit of the correct set minus the
mean logit of the incorrect set, at the last position); also available: the *probability*
of the correct set and the *KL* divergence from the clean run's next-token distribution.
An example counts as solved when its clean logit difference is > 0. ``build_task`` keeps the
templates whose accuracy reaches ``template_accuracy`` and requires ``min_accuracy`` on the
kept examples (``TaskError`` otherwise). Examples are grouped by token length into
``PromptBatch`` es (one batched forward per group).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
from jaxtyping import Int
from torch import Tensor

from ..adapter import as_adapter
from . import vocab
from .metrics import SetLogitDiff

TASKS: dict[str, Callable] = {}


class TaskError(ValueError):
    """A task the model cannot solve, or prompts that cannot be batched."""


def _task(name):
    def register(fn):
        TASKS[name] = fn
        return fn
    return register


@dataclass
class Example:
    clean: str
    corrupt: str
    correct: list[str]
    incorrect: list[str]
    template: int


@dataclass
class PromptBatch:
    """Clean/corrupt prompts of one token length with their answer token sets.

    Attributes:
        clean, corrupt: ``[n, pos]`` token ids (same shape).
        correct, incorrect: ``[n, k]`` token ids, padded with -1.
        template: template index per prompt.
    """

    clean: Int[Tensor, "n pos"]
    corrupt: Int[Tensor, "n pos"]
    correct: Int[Tensor, "n kc"]
    incorrect: Int[Tensor, "n ki"]
    template: list[int] = field(default_factory=list)

    def __post_init__(self):
        if self.clean.ndim != 2 or self.clean.shape != self.corrupt.shape:
            raise TaskError(f"clean and corrupt prompts of one batch must all have one length: clean "
                            f"{tuple(self.clean.shape)}, corrupt {tuple(self.corrupt.shape)}; group prompts by "
                            f"length (build_task does)")
        n = self.clean.shape[0]
        if self.correct.shape[0] != n or self.incorrect.shape[0] != n:
            raise TaskError(f"{n} prompts but {self.correct.shape[0]} / {self.incorrect.shape[0]} answer rows")

    @property
    def n(self) -> int:
        return self.clean.shape[0]

    def metric(self) -> SetLogitDiff:
        return SetLogitDiff(self.correct, self.incorrect)

    def select(self, idx) -> "PromptBatch":
        idx = torch.as_tensor(idx, dtype=torch.long)
        return PromptBatch(self.clean[idx], self.corrupt[idx], self.correct[idx], self.incorrect[idx],
                           [self.template[i] for i in idx.tolist()])


@dataclass
class TaskData:
    """A task's kept examples in batches of equal length, and how well the model does."""

    name: str
    batches: list[PromptBatch]
    accuracy: float
    template_accuracy: dict[int, float]
    kept_templates: list[int]
    examples: list[Example]
    seed: int

    @property
    def n_prompts(self) -> int:
        return sum(b.n for b in self.batches)

    def summary(self) -> str:
        acc = ", ".join(f"t{t}: {a:.0%}" for t, a in self.template_accuracy.items())
        return (f"task {self.name}: {self.n_prompts} prompts in {len(self.batches)} length groups, accuracy "
                f"{self.accuracy:.0%} on the kept templates {self.kept_templates} (per template: {acc})")


# ---------------------------------------------------------------------------- generators
def _single_tokens(adapter, words) -> list[str]:
    """Words that are one token after a space."""
    out = []
    for w in words:
        if len(adapter.to_tokens(" " + w, prepend_bos=False)[0]) == 1:
            out.append(w)
    return out


@_task("ioi")
def ioi_examples(adapter, n: int, rng: random.Random) -> list[Example]:
    names = _single_tokens(adapter, vocab.NAMES)
    if len(names) < 3:
        raise TaskError("the tokenizer keeps fewer than 3 of the names as single tokens")
    out = []
    for i in range(n):
        t = i % len(vocab.IOI_TEMPLATES)
        io, s, c = rng.sample(names, 3)
        a, b = (io, s) if rng.random() < 0.5 else (s, io)  # ABBA or BABA order
        tpl = vocab.IOI_TEMPLATES[t]
        out.append(Example(tpl.format(A=a, B=b, S=s), tpl.format(A=a, B=b, S=c), [io], [s], t))
    return out


@_task("greater-than")
def greater_than_examples(adapter, n: int, rng: random.Random) -> list[Example]:
    out = []
    for i in range(n):
        t = i % len(vocab.GT_TEMPLATES)
        d, y = rng.randint(2, 7), rng.randint(0, 9)
        c, noun = rng.choice(vocab.GT_CENTURIES), rng.choice(vocab.GT_NOUNS)
        tpl = vocab.GT_TEMPLATES[t]
        clean = tpl.format(N=noun, C=c, X=f"{d}{y}")
        corrupt = tpl.format(N=noun, C=c, X=f"0{y}")
        out.append(Example(clean, corrupt, [str(k) for k in range(d + 1, 10)], [str(k) for k in range(0, d)], t))
    return out


@_task("factual")
def factual_examples(adapter, n: int, rng: random.Random) -> list[Example]:
    out = []
    for i in range(n):
        t = i % len(vocab.FACT_TEMPLATES)
        relation, tpl = vocab.FACT_TEMPLATES[t]
        col = 1 if relation == "capital" else 2
        a, b = rng.sample(vocab.COUNTRIES, 2)
        while a[col] == b[col]:
            a, b = rng.sample(vocab.COUNTRIES, 2)
        out.append(Example(tpl.format(S=a[0]), tpl.format(S=b[0]), [a[col]], [b[col]], t))
    return out


@_task("induction")
def induction_examples(adapter, n: int, rng: random.Random) -> list[Example]:
    words = _single_tokens(adapter, vocab.NOUNS)
    if len(words) < 7:
        raise TaskError(f"the tokenizer keeps {len(words)} of the nouns as single tokens; induction needs 7")
    out = []
    for i in range(n):
        k = 4 + i % 3  # three templates: sequences of 4, 5, 6 words
        seq = rng.sample(words, k + 1)
        first, other = seq[:k], seq[k]
        clean = " ".join(first + first[:-1])
        corrupt = " ".join(first[:-1] + [other] + first[:-1])
        out.append(Example(clean, corrupt, [first[-1]], [other], k - 4))
    return out


# ---------------------------------------------------------------------------- building
def _answer_ids(adapter, words: list[str]) -> list[int] | None:
    ids = []
    for w in words:
        t = adapter.to_tokens(" " + w if not w.isdigit() else w, prepend_bos=False)[0]
        if len(t) != 1:
            return None
        ids.append(int(t[0]))
    return ids


def _pad(rows: list[list[int]]) -> Tensor:
    k = max(len(r) for r in rows)
    return torch.tensor([r + [-1] * (k - len(r)) for r in rows], dtype=torch.long)


@torch.no_grad()
def clean_logit_diff(model, batch: PromptBatch, max_batch: int = 64) -> Tensor:
    """The task metric on the clean prompts: ``[n]`` (plain forwards, last position only)."""
    adapter = as_adapter(model)
    out = []
    for i in range(0, batch.n, max_batch):
        sub = batch.select(range(i, min(i + max_batch, batch.n)))
        resid = adapter.final_resid(sub.clean.to(adapter.device))
        out.append(sub.metric()(adapter.logits_from_resid(resid[:, -1])).float().cpu())
    return torch.cat(out)


def build_task(model, name: str, n_prompts: int = 64, seed: int = 0, min_accuracy: float = 0.8,
               template_accuracy: float = 0.6, oversample: float = 1.5) -> TaskData:
    """Generate ``name``'s examples (seeded), keep the templates the model solves and group the
    kept examples by length (see module docstring).

    Raises:
        TaskError: unknown task, no template solved, or accuracy below ``min_accuracy`` on the
            kept examples.
    """
    if name not in TASKS:
        raise TaskError(f"unknown task {name!r}; choose from {sorted(TASKS)}")
    if not 0 < min_accuracy <= 1:
        raise ValueError(f"min_accuracy must lie in (0, 1], got {min_accuracy}")
    adapter = as_adapter(model)
    rng = random.Random(seed)
    examples = TASKS[name](adapter, int(np.ceil(n_prompts * oversample)), rng)
    by_len: dict[int, list] = {}
    for ex in examples:
        c, k = adapter.to_tokens(ex.clean)[0], adapter.to_tokens(ex.corrupt)[0]
        good, bad = _answer_ids(adapter, ex.correct), _answer_ids(adapter, ex.incorrect)
        if len(c) != len(k) or good is None or bad is None:
            continue  # the pair does not tokenise into one length / single-token answers
        by_len.setdefault(len(c), []).append((ex, c, k, good, bad))
    if not by_len:
        raise TaskError(f"task {name!r}: no example tokenises into clean/corrupt prompts of one length")
    batches, kept = [], []
    for T, rows in sorted(by_len.items()):
        b = PromptBatch(torch.stack([r[1] for r in rows]).cpu(), torch.stack([r[2] for r in rows]).cpu(),
                        _pad([r[3] for r in rows]), _pad([r[4] for r in rows]), [r[0].template for r in rows])
        solved = clean_logit_diff(adapter, b) > 0
        batches.append(b)
        kept += [(r[0], bool(s), len(batches) - 1, i) for i, (r, s) in enumerate(zip(rows, solved))]
    templates = sorted({ex.template for ex, *_ in kept})
    acc = {t: float(np.mean([s for ex, s, *_ in kept if ex.template == t])) for t in templates}
    keep_t = [t for t in templates if acc[t] >= template_accuracy]
    if not keep_t:
        raise TaskError(f"the model solves no template of task {name!r} (accuracy per template: "
                        + ", ".join(f"{t}: {a:.0%}" for t, a in acc.items()) + f"; need {template_accuracy:.0%})")
    chosen = [k for k in kept if k[0].template in keep_t][:n_prompts]
    accuracy = float(np.mean([s for _, s, *_ in chosen]))
    if accuracy < min_accuracy:
        raise TaskError(f"the model cannot solve task {name!r}: accuracy {accuracy:.0%} on the kept templates "
                        f"{keep_t} is below the required {min_accuracy:.0%}")
    out = []
    for bi, b in enumerate(batches):
        idx = [i for _, _, j, i in chosen if j == bi]
        if idx:
            out.append(b.select(idx))
    return TaskData(name, out, accuracy, acc, keep_t, [k[0] for k in chosen], seed)
