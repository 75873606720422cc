"""Players: the n input words whose presence or absence defines a subset S.

A player is a word of the prompt, given by its character span, so that the same subset S is
addressed in every model: each tokenizer maps the span to its own token positions (through the
fast tokenizer's offset mapping). Tokens that belong to no player (BOS, punctuation, words not
chosen) are never masked.

    words = Players.from_prompt("The capital of France is the city of", n=4)
    toks = words.tokens_for(adapter)          # PlayerTokens: token ids + positions per player
    toks.keep_matrix(subset_masks(4))         # [16, pos] keep masks for the engine
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Sequence

import numpy as np
from jaxtyping import Bool

from ..adapter import as_adapter

WORD_RE = re.compile(r"\w+(?:['’\-]\w+)*", re.UNICODE)

# Function words skipped by the default player choice (chosen only when the prompt has too few
# content words).
STOPWORDS = frozenset("""
a an the and or but if then so of to in on at by for with from into onto over under as is are
was were be been being am do does did has have had it its this that these those there here
which who whom whose what when where why how not no nor than too very can could will would
shall should may might must i me my we our you your he him his she her they them their
""".split())

MAX_PLAYERS = 20


class PlayerError(ValueError):
    """Players that cannot be chosen, found or aligned with a tokenizer."""


@dataclass(frozen=True)
class Word:
    """One player: a word of the prompt and its character span ``[start, end)``."""

    text: str
    start: int
    end: int


@dataclass
class Players:
    """The chosen words of one prompt (in prompt order; player i is ``words[i]``)."""

    prompt: str
    words: list[Word]

    @property
    def n(self) -> int:
        return len(self.words)

    @property
    def texts(self) -> list[str]:
        return [w.text for w in self.words]

    # ------------------------------------------------------------------ choosing
    @staticmethod
    def words_of(prompt: str) -> list[Word]:
        """Every word of the prompt (letters, digits, inner apostrophes and hyphens)."""
        return [Word(m.group(0), m.start(), m.end()) for m in WORD_RE.finditer(prompt)]

    @classmethod
    def from_prompt(cls, prompt: str, players: Sequence | None = None, *, n: int = 10,
                    max_players: int = MAX_PLAYERS) -> "Players":
        """Choose the players of ``prompt``.

        Args:
            prompt: the text.
            players: None (default choice), or a list of words (matched left to right, each
                after the previous match), word indices into ``words_of(prompt)``, or
                ``(start, end)`` character spans.
            n: number of players for the default choice: the content words (not in
                ``STOPWORDS``), keeping the last ``n`` if there are more; if there are fewer,
                function words nearest the end are added. Prompts with fewer than ``n`` words
                give all their words.
            max_players: guard against the 2^n blow-up (see ``check_n_players``).
        """
        all_words = cls.words_of(prompt)
        if players is None:
            if n < 1:
                raise PlayerError(f"n must be at least 1, got {n}")
            check_n_players(n, max_players)
            content = [i for i, w in enumerate(all_words) if w.text.lower() not in STOPWORDS]
            chosen = content[-n:]
            if len(chosen) < n:
                rest = [i for i in range(len(all_words)) if i not in set(chosen)]
                chosen += rest[::-1][: n - len(chosen)]
            if not chosen:
                raise PlayerError(f"no words found in the prompt {prompt!r}")
            return cls(prompt, [all_words[i] for i in sorted(chosen)])
        players = list(players)
        check_n_players(len(players), max_players)
        if not players:
            raise PlayerError("empty list of players")
        words: list[Word] = []
        pos = 0
        for p in players:
            if isinstance(p, str):
                w = _find_word(prompt, p, pos)
                if w is None:
                    found = [x.text for x in all_words]
                    raise PlayerError(f"player {p!r} not found in the prompt after character {pos} "
                                      f"(prompt words: {found})")
                pos = w.end
            elif isinstance(p, (int, np.integer)):
                if not 0 <= int(p) < len(all_words):
                    raise PlayerError(f"word index {p} out of range: the prompt has {len(all_words)} words")
                w = all_words[int(p)]
            elif isinstance(p, (tuple, list)) and len(p) == 2:
                s, e = int(p[0]), int(p[1])
                if not 0 <= s < e <= len(prompt):
                    raise PlayerError(f"character span {p} outside the prompt (length {len(prompt)})")
                w = Word(prompt[s:e], s, e)
            else:
                raise PlayerError(f"a player must be a word, a word index or a (start, end) span; got {p!r}")
            words.append(w)
        words.sort(key=lambda w: w.start)
        for a, b in zip(words, words[1:]):
            if b.start < a.end:
                raise PlayerError(f"players {a.text!r} and {b.text!r} overlap in the prompt")
        return cls(prompt, words)

    # ------------------------------------------------------------------ tokens
    def tokens_for(self, model) -> "PlayerTokens":
        """Token ids of the prompt in ``model``'s tokenizer and the positions of each player."""
        adapter = as_adapter(model)
        tok = adapter.tokenizer
        if tok is None:
            raise PlayerError("this model has no tokenizer: build PlayerTokens.from_positions instead")
        if not getattr(tok, "is_fast", False):
            raise PlayerError("word-to-token alignment needs a fast tokenizer (offset mapping)")
        tokens = adapter.to_tokens(self.prompt)[0].tolist()
        enc = tok(self.prompt, add_special_tokens=False, return_offsets_mapping=True)
        ids, offsets = list(enc["input_ids"]), list(enc["offset_mapping"])
        n_special = len(tokens) - len(ids)
        if n_special < 0 or tokens[n_special:] != ids:
            raise PlayerError(f"{adapter.name}: the tokenizer's offsets do not match the model's tokens "
                              f"for this prompt; cannot align players")
        positions: list[list[int]] = [[] for _ in self.words]
        for j, (a, b) in enumerate(offsets):
            if b <= a:
                continue
            owners = [i for i, w in enumerate(self.words) if a < w.end and b > w.start]
            if len(owners) > 1:
                names = [self.words[i].text for i in owners]
                raise PlayerError(f"{adapter.name}: token {self.prompt[a:b]!r} spans players {names}; "
                                  f"they cannot be masked separately (choose other players)")
            if owners:
                positions[owners[0]].append(n_special + j)
        for w, pos in zip(self.words, positions):
            if not pos:
                raise PlayerError(f"{adapter.name}: player {w.text!r} maps to no token")
        str_tokens = [tok.decode([t]) for t in tokens]
        return PlayerTokens(tokens=tokens, positions=positions, str_tokens=str_tokens,
                            model=adapter.name)

    def to_dict(self) -> dict:
        return {"prompt": self.prompt, "words": [asdict(w) for w in self.words]}

    @classmethod
    def from_dict(cls, d: dict) -> "Players":
        return cls(d["prompt"], [Word(**w) for w in d["words"]])


@dataclass
class PlayerTokens:
    """A prompt's tokens in one model and the token positions of each player."""

    tokens: list[int]
    positions: list[list[int]]
    str_tokens: list[str] = field(default_factory=list)
    model: str = ""

    @property
    def n(self) -> int:
        return len(self.positions)

    @classmethod
    def from_positions(cls, tokens: Sequence[int], positions: Sequence[Sequence[int]]) -> "PlayerTokens":
        """Players given directly as token positions (models without a tokenizer)."""
        tokens = [int(t) for t in tokens]
        pos = [[int(p) for p in ps] for ps in positions]
        check_n_players(len(pos))
        seen: set[int] = set()
        for i, ps in enumerate(pos):
            if not ps:
                raise PlayerError(f"player {i} has no token positions")
            for p in ps:
                if not 0 <= p < len(tokens):
                    raise PlayerError(f"player {i}: position {p} outside the prompt ({len(tokens)} tokens)")
                if p in seen:
                    raise PlayerError(f"token position {p} belongs to two players")
                seen.add(p)
        return cls(tokens, pos, [f"<{t}>" for t in tokens])

    def keep_matrix(self, subsets: np.ndarray) -> np.ndarray:
        """Keep masks ``[rows, pos]`` (bool): row r keeps player i iff ``subsets[r, i]``;
        tokens of no player are always kept."""
        subsets = np.asarray(subsets, dtype=bool)
        if subsets.ndim != 2 or subsets.shape[1] != self.n:
            raise PlayerError(f"subsets must be [rows, {self.n}], got {subsets.shape}")
        keep = np.ones((subsets.shape[0], len(self.tokens)), dtype=bool)
        for i, ps in enumerate(self.positions):
            keep[:, ps] = subsets[:, [i]]
        return keep

    def to_dict(self) -> dict:
        return asdict(self)


def check_n_players(n: int, max_players: int = MAX_PLAYERS) -> None:
    """Refuse more than ``max_players`` players: every subset is a forward pass."""
    if n > max_players:
        raise PlayerError(
            f"{n} players means 2^{n} = {2 ** n:,} masked forwards per prompt and model; the limit "
            f"is {max_players} (pass max_players={n} explicitly to run it anyway)")


def subset_masks(n: int) -> Bool[np.ndarray, "subsets n"]:
    """``[2^n, n]`` bool: row s holds the subset with bit mask s (bit i = player i)."""
    s = np.arange(2 ** n)[:, None]
    return ((s >> np.arange(n)[None, :]) & 1).astype(bool)


def _find_word(prompt: str, word: str, start: int) -> Word | None:
    word = word.strip()
    if not word:
        return None
    pat = re.compile(r"(?<!\w)" + re.escape(word) + r"(?!\w)")
    m = pat.search(prompt, start)
    return Word(m.group(0), m.start(), m.end()) if m else None
