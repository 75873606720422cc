"""The tuned-lens training corpus and the frequency-table corpus.

The 200 self-written English passages of ``data/strace_eval_en.jsonl`` (CC0; about 10k
SmolLM2 tokens): the only sizeable English text that is available offline here with a clear
licence. Text sampled from the model itself was tried as a second source, but sampling on
two shared CPU cores ran at a few tokens per second, so it was left out (see
``data/lens_cases_en.md``).
"""

from __future__ import annotations

CORPUS_FILE = "strace_eval_en.jsonl"


def load_corpus() -> list[str]:
    """The corpus texts (one passage each)."""
    from ..strace.dataset import load_eval_set

    texts = load_eval_set()
    if not texts:
        raise ValueError(f"{CORPUS_FILE} holds no text")
    return texts
