"""The shipped tuned-lens training corpus ``data/lens_corpus_en.jsonl`` (see ``data/lens_corpus_en.md``).

One JSON object per line, ``{"source": "passage" | "sample", "text"}``: the 200 self-written
CC0 passages of the s-Trace set and continuations sampled from SmolLM2-135M-Instruct
(released CC0). ``load_corpus(sources)`` returns the texts.
"""

from __future__ import annotations

import json
from importlib import resources

CORPUS_FILE = "lens_corpus_en.jsonl"


def load_corpus(sources: tuple[str, ...] = ("passage", "sample")) -> list[str]:
    """Texts of the shipped corpus whose ``source`` is in ``sources``."""
    text = resources.files("interp_toolkit.data").joinpath(CORPUS_FILE).read_text(encoding="utf-8")
    rows = [json.loads(line) for line in text.splitlines() if line.strip()]
    out = [r["text"] for r in rows if r["source"] in sources]
    if not out:
        raise ValueError(f"no text with source in {sources} in {CORPUS_FILE}")
    return out
