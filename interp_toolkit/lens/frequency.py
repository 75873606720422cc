"""Token frequency tables per tokenizer and the paper's frequency buckets.

A table holds one weight per token id: either the count of the token in a tokenised corpus
(``from_corpus``; the corpus name and token count are recorded) or the ``wordfreq`` English
word frequencies mapped onto tokens (``from_wordfreq``; see ``strace.frequency``). Tokens are
ranked by weight (1 = most frequent; ties by id; unseen tokens after every seen one) and
bucketed as in the paper: Top 1–10, 11–100, 101–1000, rest.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..core import Result, new_figure, register_result

BUCKETS = ("Top 1-10", "Top 11-100", "Top 101-1000", "Rest")
BUCKET_EDGES = (10, 100, 1000)


def bucket_of_rank(rank: np.ndarray) -> np.ndarray:
    """Bucket index 0..3 of 1-based frequency ranks."""
    return np.searchsorted(np.array(BUCKET_EDGES), np.asarray(rank), side="left")


@register_result
@dataclass
class FrequencyTable(Result):
    """Per-token frequency weights ``counts[d_vocab]`` and their ranks and buckets."""

    kind = "lens_frequency"
    format_version = 1
    title = "Token frequency table"

    tokenizer: str
    source: str
    n_tokens: int
    counts: np.ndarray

    @classmethod
    def from_dict(cls, d: dict) -> "FrequencyTable":
        return cls(**{**d, "counts": np.asarray(d["counts"], dtype=np.float64)})

    @property
    def ranks(self) -> np.ndarray:
        """``[d_vocab]`` 1-based rank of each token (stable: ties by id)."""
        order = np.argsort(-self.counts, kind="stable")
        r = np.empty(len(order), np.int64)
        r[order] = np.arange(1, len(order) + 1)
        return r

    @property
    def buckets(self) -> np.ndarray:
        """``[d_vocab]`` bucket index (0 = Top 1-10 … 3 = rest)."""
        return bucket_of_rank(self.ranks)

    def bucket(self, ids) -> np.ndarray:
        return self.buckets[np.asarray(ids)]

    def shares(self, tops: Sequence[int] = (10, 100, 1000)) -> dict[int, float]:
        """Share of all weight (all corpus tokens) held by the ``top`` most frequent token types."""
        s = np.sort(self.counts)[::-1]
        total = s.sum()
        return {t: float(s[:t].sum() / total) for t in tops}

    def summary(self) -> str:
        sh = self.shares()
        return (f"{self.tokenizer}: {self.source}, {self.n_tokens} tokens, {int((self.counts > 0).sum())} types; "
                + ", ".join(f"Top-{t}: {v:.1%}" for t, v in sh.items()))

    def _plots(self):
        return {"cumulative": _cumulative}


def _cumulative(t: FrequencyTable):
    s = np.sort(t.counts)[::-1]
    s = s[s > 0]
    fig, ax = new_figure(figsize=(5, 3))
    ax.plot(np.arange(1, len(s) + 1), np.cumsum(s) / s.sum())
    for e in BUCKET_EDGES:
        ax.axvline(e, color="grey", lw=0.6, ls="--")
    ax.set_xscale("log")
    ax.set_xlabel("token rank")
    ax.set_ylabel("share of tokens")
    ax.set_title(f"{t.tokenizer}: {t.source}", fontsize=8)
    return fig


def _tokenizer_of(model_or_tokenizer):
    tok = getattr(model_or_tokenizer, "tokenizer", model_or_tokenizer)
    if hasattr(tok, "tokenizer") and not callable(getattr(tok, "encode", None)):
        tok = tok.tokenizer
    if tok is None:
        raise ValueError("a frequency table needs a tokenizer")
    return tok


def from_corpus(model_or_tokenizer, texts: Sequence[str], name: str, d_vocab: int | None = None) -> FrequencyTable:
    """Count every token of ``texts`` (tokenised one by one, no special tokens)."""
    tok = _tokenizer_of(model_or_tokenizer)
    texts = [t for t in texts if t and t.strip()]
    if not texts:
        raise ValueError("the corpus is empty: no text to count")
    d_vocab = d_vocab or getattr(getattr(model_or_tokenizer, "cfg", None), "d_vocab", None) or len(tok)
    ids = tok(list(texts), add_special_tokens=False)["input_ids"]
    flat = np.fromiter((i for row in ids for i in row), dtype=np.int64)
    if flat.size == 0:
        raise ValueError("the corpus tokenises to nothing")
    counts = np.bincount(flat, minlength=d_vocab).astype(np.float64)[:d_vocab]
    return FrequencyTable(getattr(tok, "name_or_path", type(tok).__name__), f"corpus {name}", int(flat.size), counts)


def from_wordfreq(model_or_tokenizer, d_vocab: int | None = None, n_words: int = 50_000) -> FrequencyTable:
    """``wordfreq`` English frequencies of the ``n_words`` commonest words, spread onto their tokens."""
    from ..strace.frequency import token_frequencies

    tok = _tokenizer_of(model_or_tokenizer)
    d_vocab = d_vocab or getattr(getattr(model_or_tokenizer, "cfg", None), "d_vocab", None) or len(tok)
    f = token_frequencies(tok, d_vocab, n_words)
    return FrequencyTable(getattr(tok, "name_or_path", type(tok).__name__),
                          f"wordfreq en, top {n_words} words", 0, np.asarray(f, np.float64))
