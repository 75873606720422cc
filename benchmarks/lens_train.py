"""Train a tuned lens for a real model on CPU and measure held-out KL of each lens.

    export INTERP_TOOLKIT_CACHE=/work/main/.cache
    python benchmarks/lens_train.py --model smollm2-135m --heldout-passages 20 --samples 192 --steps 400 \
        --batch-tokens 128 --eval-every 50

Hidden states of the corpus (the CC0 passages, interp_toolkit.lens.corpus) are computed
once (windows of --seq-len tokens, bfloat16). With --heldout-passages N, the last N passages
(after a seeded shuffle) are held out and never seen in training, and --samples M adds, for
every training passage, M tokens sampled from the model after its first six words
(``sample_continuations``, temperature 1, cached in $INTERP_TOOLKIT_CACHE/lens_corpus/);
without it the last --heldout tokens are held out. --keep-every K trains on every K-th
training window only (the corpus-size control). Held-out KL is measured every
--eval-every steps (the curve shows whether training has stopped improving). The
translators are trained with the tuned-lens recipe (SGD Nesterov 0.9, lr 1, wd 1e-3, linear
decay, clip 1; ``--optimizer adam`` swaps SGD for Adam) for --steps steps of --batch-tokens
tokens, the loss restricted to the --vocab-subset most probable output tokens (held-out KL is
over the full vocabulary). The lens is written to $INTERP_TOOLKIT_CACHE/lenses/<model>/ (not
committed: ~40 MB for SmolLM2); a rerun resumes from the checkpoint there. Writes
benchmarks/lens/results/<model>_train.json.
"""

from __future__ import annotations

import argparse
import random
import json
import time
from pathlib import Path

import numpy as np
import torch

from interp_toolkit.core import atomic_write_text, dumps
from interp_toolkit.lens import LogitLens, lens_dir
from interp_toolkit.lens.corpus import CORPUS_FILE, load_corpus
from interp_toolkit.lens.train import collect_states, lens_kl, train_tuned_lens
from interp_toolkit.models import load_model

RESULTS = Path(__file__).resolve().parent / "lens" / "results"


def cached_samples(model, args, train_texts) -> list[str]:
    """Model samples after the first six words of each training passage, cached by settings."""
    from interp_toolkit.core.serialize import atomic_write_text as write
    from interp_toolkit.lens.corpus import sample_continuations
    from interp_toolkit.models.cache import cache_root

    prompts = [" ".join(t.split()[:6]) for t in train_texts]
    path = cache_root() / "lens_corpus" / f"{args.model}_n{len(prompts)}_t{args.samples}_seed{args.seed}.jsonl"
    if path.exists():
        return [json.loads(line)["text"] for line in path.read_text().splitlines()]
    texts = sample_continuations(model, prompts, args.samples, seed=args.seed, batch=args.sample_batch)
    write(path, "".join(json.dumps({"text": t, "model": args.model, "seed": args.seed, "temperature": 1.0}) + "\n"
                        for t in texts))
    return texts


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--max-tokens", type=int, default=8192, help="corpus tokens to use")
    ap.add_argument("--heldout", type=int, default=256)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--batch-tokens", type=int, default=64)
    ap.add_argument("--lr", type=float, default=1.0, help="SGD learning rate (the recipe's: 1.0)")
    ap.add_argument("--optimizer", choices=("sgd", "adam"), default="sgd",
                    help="the recipe's SGD, or Adam (a second optimiser to check where SGD is heading)")
    ap.add_argument("--clip", type=float, default=1.0, help="gradient-norm clip (the recipe's: 1.0)")
    ap.add_argument("--vocab-subset", type=int, default=2048)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--heldout-passages", type=int, default=0,
                    help="hold out the last N shuffled passages (default: the last --heldout tokens)")
    ap.add_argument("--samples", type=int, default=0, help="model-sampled tokens per training passage")
    ap.add_argument("--sample-batch", type=int, default=50)
    ap.add_argument("--eval-every", type=int, default=0, help="held-out KL every N steps")
    ap.add_argument("--keep-every", type=int, default=1,
                    help="train on every K-th window of the training text only (a 1/K corpus, same mix)")
    ap.add_argument("--keep-denormals", action="store_true",
                    help="train without flushing subnormal floats to zero (slower; the results differ below 1e-38)")
    ap.add_argument("--tag", default="", help="suffix of the results file and the lens folder")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    model = load_model(args.model, progress=False)
    t_load = time.perf_counter() - t0
    texts = load_corpus()
    random.Random(args.seed).shuffle(texts)
    t_sample, corpus = 0.0, CORPUS_FILE
    t0 = time.perf_counter()
    if args.heldout_passages:
        train_texts, held_texts = texts[:-args.heldout_passages], texts[-args.heldout_passages:]
        if args.samples:
            t1 = time.perf_counter()
            samples = cached_samples(model, args, train_texts)
            t_sample = time.perf_counter() - t1
            train_texts = train_texts + samples
            corpus = f"{CORPUS_FILE} ({len(texts) - args.heldout_passages} passages) + {len(samples)} model samples"
        train = collect_states(model, train_texts, seq_len=args.seq_len, max_tokens=args.max_tokens,
                               storage_dtype=torch.bfloat16)
        held = collect_states(model, held_texts, seq_len=args.seq_len, storage_dtype=torch.bfloat16)
        n_tokens = train.n_tokens + held.n_tokens
    else:
        states = collect_states(model, texts, seq_len=args.seq_len, max_tokens=args.max_tokens,
                                storage_dtype=torch.bfloat16)
        train, held = states.split(args.heldout)
        n_tokens = states.n_tokens
    if args.keep_every > 1:
        train = train.every_kth_window(args.keep_every)
    t_states = time.perf_counter() - t0 - t_sample
    out = lens_dir(args.model) if not args.tag else lens_dir(args.model).with_name(f"{args.model}-{args.tag}")
    t0 = time.perf_counter()
    lens = train_tuned_lens(model, train, steps=args.steps, batch_tokens=args.batch_tokens, lr=args.lr, clip=args.clip,
                            optimizer=args.optimizer,
                            vocab_subset=args.vocab_subset, seed=args.seed, checkpoint_dir=out / "checkpoint",
                            checkpoint_every=10, corpus=f"{corpus} ({train.n_tokens} training tokens)",
                            eval_states=held if args.eval_every else None, eval_every=args.eval_every,
                            flush_denormals=not args.keep_denormals)
    t_train = time.perf_counter() - t0
    lens.save(out)
    t0 = time.perf_counter()
    kl = {"logit": lens_kl(model, LogitLens(), held, "resid_pre"),
          "tuned": lens_kl(model, lens, held, "resid_pre"),
          "reference (resid_post[l] with translator l)": lens_kl(model, lens.with_convention("reference"), held,
                                                                 "resid_post"),
          "logit on resid_post": None}
    kl["logit on resid_post"] = np.append(kl["logit"][1:], 0.0)
    t_eval = time.perf_counter() - t0
    doc = {"model": args.model, "args": vars(args), "n_tokens": n_tokens, "n_train": train.n_tokens,
           "n_heldout": held.n_tokens, "training": lens.training, "lens_dir": str(out),
           "seconds": {"load": t_load, "sample": t_sample, "states": t_states, "train": t_train, "eval": t_eval},
           "heldout_kl": {k: np.round(v, 4).tolist() for k, v in kl.items()}}
    RESULTS.mkdir(parents=True, exist_ok=True)
    atomic_write_text(RESULTS / f"{args.model}_train{'_' + args.tag if args.tag else ''}.json", dumps(doc, indent=1))
    for k, v in kl.items():
        print(f"{k:<45} " + " ".join(f"{x:.2f}" for x in v))
    print("held-out curve (step, mean KL):", lens.training.get("heldout_curve"))
    print(json.dumps(doc["seconds"]))


if __name__ == "__main__":
    main()
