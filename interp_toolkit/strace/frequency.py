"""Unigram token frequencies in a model's vocabulary, from the ``wordfreq`` package.

Source: ``wordfreq`` (Robyn Speer; data from Wikipedia, subtitles, news, books, web text,
Twitter and Reddit; code Apache-2.0, data CC-BY-SA 4.0) — its English list of the
``n_words`` most frequent words with their frequencies (``get_frequency_dict``). Each word is tokenised as it appears
in running text (with a leading space) and its frequency is added to every token of its
tokenisation: ``f(v) = Σ_w freq(w) · count(v in tokens(" " + w))``, normalised to sum 1.
Tokens never produced this way (punctuation, code, rare pieces) get 0 and are left out of
the unigram-frequency encoding.
"""

from __future__ import annotations

import numpy as np

_CACHE: dict[tuple, np.ndarray] = {}


def token_frequencies(tokenizer, d_vocab: int, n_words: int = 50_000) -> np.ndarray | None:
    """Unigram frequency per token id ``[d_vocab]`` (None without a tokenizer)."""
    if tokenizer is None:
        return None
    key = (getattr(tokenizer, "name_or_path", ""), len(tokenizer), d_vocab, n_words)
    if key in _CACHE:
        return _CACHE[key]
    import wordfreq

    words = wordfreq.top_n_list("en", n_words)
    table = wordfreq.get_frequency_dict("en")  # unrounded frequencies (word_frequency rounds)
    freqs = np.array([table.get(w, 0.0) for w in words])
    texts = [" " + w for w in words]
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:  # the Rust tokenizer directly: same ids, a fraction of the time
        ids = [e.ids for e in backend.encode_batch(texts, add_special_tokens=False)]
    else:
        ids = tokenizer(texts, add_special_tokens=False)["input_ids"]
    f = np.zeros(d_vocab)
    lengths = np.array([len(x) for x in ids])
    flat = np.fromiter((t for x in ids for t in x), dtype=np.int64, count=int(lengths.sum()))
    flat_freq = np.repeat(freqs, lengths)
    ok = flat < d_vocab
    np.add.at(f, flat[ok], flat_freq[ok])
    if f.sum() > 0:
        f /= f.sum()
    _CACHE[key] = f
    return f
