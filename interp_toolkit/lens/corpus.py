"""The tuned-lens training corpus and the frequency-table corpus.

The 200 self-written English passages of ``data/strace_eval_en.jsonl`` (CC0; about 10k
SmolLM2 tokens): the only sizeable English text that is available offline here with a clear
licence. ``sample_continuations`` adds text sampled from the model itself (batched, with a
key/value cache), a second source for training a tuned lens beyond the passages' size.
"""

from __future__ import annotations

from typing import Sequence

import torch

CORPUS_FILE = "strace_eval_en.jsonl"


def load_corpus() -> list[str]:
    """The corpus texts (one passage each)."""
    from ..strace.dataset import load_eval_set

    texts = load_eval_set()
    if not texts:
        raise ValueError(f"{CORPUS_FILE} holds no text")
    return texts


@torch.no_grad()
def sample_continuations(model, prompts: Sequence[str], new_tokens: int, *, seed: int = 0,
                         temperature: float = 1.0, batch: int = 64, progress: bool = True) -> list[str]:
    """Texts sampled from the model: each prompt (cut to the shortest prompt's token length, so
    a batch is one tensor) continued by ``new_tokens`` tokens drawn from softmax(logits / T).

    The tuned lens is fitted to the model's own output distribution, so text the model writes
    is a legitimate training corpus (tuned-lens trains on any text; samples add volume where
    offline human text is scarce). Draws use one seeded ``torch.Generator`` per batch, in
    order, so the texts depend only on (model, prompts, seed, T, batch). With a key/value cache
    (HookedTransformer) each step runs one position; otherwise the whole sequence is rerun.
    Returns the decoded prompt + continuation of every prompt.
    """
    from tqdm.auto import tqdm

    from ..adapter import as_adapter

    adapter = as_adapter(model)
    if new_tokens < 1 or temperature <= 0 or batch < 1:
        raise ValueError("new_tokens and batch must be >= 1 and temperature > 0")
    if not prompts:
        raise ValueError("no prompts to continue")
    rows = [adapter.to_tokens(p)[0] for p in prompts]
    width = min(len(r) for r in rows)
    if width < 1:
        raise ValueError("a prompt has no tokens")
    if width + new_tokens > adapter.n_ctx:
        raise ValueError(f"{width} prompt tokens + {new_tokens} new ones exceed the context ({adapter.n_ctx})")
    out = []
    with adapter.lean_cached_forward():  # weight layouts made once for every batch and step
        for a in tqdm(range(0, len(rows), batch), desc="sampling", disable=not progress):
            toks = torch.stack([r[:width] for r in rows[a:a + batch]]).to(adapter.device)
            g = torch.Generator(device=adapter.device).manual_seed(seed + a)
            cache = adapter.kv_cache(batch=len(toks)) if adapter.supports_kv_cache else None
            logits = adapter.forward(toks, past_kv_cache=cache)[:, -1]
            for _ in range(new_tokens):
                probs = (logits.double() / temperature).softmax(-1)
                nxt = torch.multinomial(probs, 1, generator=g)
                toks = torch.cat([toks, nxt], 1)
                logits = (adapter.forward(nxt, past_kv_cache=cache) if cache is not None
                          else adapter.forward(toks))[:, -1]
            out += [adapter.to_string(t) for t in toks.cpu()]
    return out
