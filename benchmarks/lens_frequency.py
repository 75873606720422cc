"""Frequency tables of the offline models' tokenizers (tokenizers only: no model is loaded).

    export INTERP_TOOLKIT_CACHE=/work/main/.cache
    python benchmarks/lens_frequency.py

For each tokenizer: Top-10/100/1000 shares of (a) token counts over the CC0 passages and
(b) wordfreq English frequencies (top 50k words) mapped to tokens. The paper's Llama-2 table:
23 / 46 / 69 %. Writes benchmarks/lens/results/frequency.json.
"""

from __future__ import annotations

from pathlib import Path

from transformers import AutoTokenizer

from interp_toolkit.core import atomic_write_text, dumps
from interp_toolkit.lens import from_corpus, from_wordfreq
from interp_toolkit.lens.corpus import load_corpus
from interp_toolkit.models.cache import converted_dir


def main() -> None:
    texts = load_corpus()
    doc = {}
    for name in ("smollm2-135m", "gemma3-270m"):
        path = converted_dir(name)
        if not (path / "tokenizer.json").exists():
            print(f"{name}: no converted copy in {path} (load the model once)")
            continue
        tok = AutoTokenizer.from_pretrained(str(path))
        d_vocab = len(tok)
        corpus = from_corpus(tok, texts, "strace_eval_en passages", d_vocab=d_vocab)
        wf = from_wordfreq(tok, d_vocab=d_vocab)
        doc[name] = {"d_vocab": d_vocab, "corpus_tokens": corpus.n_tokens,
                     "corpus_types": int((corpus.counts > 0).sum()), "corpus_shares": corpus.shares(),
                     "wordfreq_shares": wf.shares()}
        print(f"{name}: {corpus.summary()}\n{' ' * len(name)}  {wf.summary()}")
    atomic_write_text(Path(__file__).resolve().parent / "lens" / "results" / "frequency.json", dumps(doc, indent=1))


if __name__ == "__main__":
    main()
