"""Input sets for the four capture modes; each is a ``[n_seq, seq_len]`` token tensor.

- ``text``: each text tokenised and cut to ``seq_len`` tokens (default: the shortest text).
- ``vocab``: every token of the vocabulary (or the ids given) alone, a 1-token sequence.
- ``repeat``: one token repeated ``seq_len`` times, one sequence per token id.
- ``permute``: the text sequences with their blocks of ``block_size`` tokens shuffled
  (one random permutation per sequence, from ``seed``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import torch
from jaxtyping import Int
from torch import Tensor

from ..adapter import as_adapter

MODES = ("text", "vocab", "repeat", "permute")


@dataclass
class InputSet:
    """Token sequences of equal length and how they were made."""

    tokens: Int[Tensor, "n_seq seq_len"]
    mode: str
    info: dict = field(default_factory=dict)

    @property
    def n_seq(self) -> int:
        return self.tokens.shape[0]

    @property
    def seq_len(self) -> int:
        return self.tokens.shape[1]


def _check_len(adapter, seq_len: int) -> None:
    if seq_len < 1:
        raise ValueError(f"seq_len must be >= 1, got {seq_len}")
    if seq_len > adapter.n_ctx:
        raise ValueError(f"sequences of {seq_len} tokens are longer than the model's context "
                         f"({adapter.n_ctx} tokens); pass seq_len <= {adapter.n_ctx}")


def text_tokens(adapter, texts: Sequence[str], seq_len: int | None = None,
                prepend_bos: bool | None = None) -> Int[Tensor, "n_seq seq_len"]:
    """Each text's first ``seq_len`` tokens (default: the length of the shortest text)."""
    if isinstance(texts, str):
        texts = [texts]
    texts = [t for t in texts]
    if not texts:
        raise ValueError("the text list is empty")
    if any(not isinstance(t, str) or not t.strip() for t in texts):
        raise ValueError("texts must be non-empty strings")
    ids = [adapter.to_tokens(t, prepend_bos=prepend_bos)[0].cpu() for t in texts]
    shortest = min(len(i) for i in ids)
    if seq_len is None:
        seq_len = shortest
    _check_len(adapter, seq_len)
    short = [k for k, i in enumerate(ids) if len(i) < seq_len]
    if short:
        raise ValueError(f"{len(short)} text(s) have fewer than seq_len={seq_len} tokens "
                         f"(first: #{short[0]}, {len(ids[short[0]])} tokens); pass a smaller seq_len")
    return torch.stack([i[:seq_len] for i in ids])


def make_inputs(model, mode: str = "text", *, texts: Sequence[str] | None = None,
                seq_len: int | None = None, token_ids: Sequence[int] | None = None,
                block_size: int = 8, seed: int = 0, prepend_bos: bool | None = None) -> InputSet:
    """The ``InputSet`` of ``mode`` (see the module docstring)."""
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; choose from {MODES}")
    adapter = as_adapter(model)
    d_vocab = adapter.cfg.d_vocab
    if mode in ("text", "permute"):
        if texts is None:
            raise ValueError(f"mode {mode!r} needs texts")
        tokens = text_tokens(adapter, texts, seq_len, prepend_bos)
        info = {"n_texts": len(tokens)}
        if mode == "permute":
            if block_size < 1:
                raise ValueError(f"block_size must be >= 1, got {block_size}")
            tokens, info["block_size"], info["seed"] = permute_blocks(tokens, block_size, seed), block_size, seed
        return InputSet(tokens, mode, info)
    ids = torch.arange(d_vocab) if token_ids is None else torch.as_tensor(list(token_ids), dtype=torch.long)
    if ids.numel() == 0:
        raise ValueError("the token list is empty")
    if int(ids.min()) < 0 or int(ids.max()) >= d_vocab:
        raise ValueError(f"token ids must lie in [0, {d_vocab})")
    if mode == "vocab":
        return InputSet(ids[:, None].clone(), mode, {"n_tokens": ids.numel()})
    seq_len = 16 if seq_len is None else seq_len
    _check_len(adapter, seq_len)
    return InputSet(ids[:, None].repeat(1, seq_len), mode, {"n_tokens": ids.numel()})


def permute_blocks(tokens: Int[Tensor, "n seq"], block_size: int, seed: int = 0) -> Int[Tensor, "n seq"]:
    """Shuffle each row's consecutive blocks of ``block_size`` tokens (a last short block
    takes part too); every token is kept, only block order changes."""
    g = torch.Generator().manual_seed(seed)
    out = torch.empty_like(tokens)
    for r, row in enumerate(tokens):
        blocks = list(row.split(block_size))
        order = torch.randperm(len(blocks), generator=g).tolist()
        out[r] = torch.cat([blocks[i] for i in order])
    return out
