"""Train a tuned lens for a real model on CPU and measure held-out KL of each lens.

    export INTERP_TOOLKIT_CACHE=/work/main/.cache
    flock /tmp/itk-real.lock python benchmarks/lens_train.py --model smollm2-135m

Hidden states of the corpus (the CC0 passages, interp_toolkit.lens.corpus) are computed
once (windows of --seq-len tokens, bfloat16), the last --heldout tokens are held out, and the
translators are trained with the tuned-lens recipe (SGD Nesterov 0.9, lr 1, wd 1e-3, linear
decay, clip 1) for --steps steps of --batch-tokens tokens, the loss restricted to the
--vocab-subset most probable output tokens (held-out KL is over the full vocabulary). The lens
is written to $INTERP_TOOLKIT_CACHE/lenses/<model>/ (not committed: ~40 MB for SmolLM2); a
rerun resumes from the checkpoint there. Writes benchmarks/lens/results/<model>_train.json.
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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--max-tokens", type=int, default=8192, help="corpus tokens to use")
    ap.add_argument("--heldout", type=int, default=256)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--batch-tokens", type=int, default=64)
    ap.add_argument("--vocab-subset", type=int, default=2048)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    model = load_model(args.model, progress=False)
    t_load = time.perf_counter() - t0
    texts = load_corpus()
    random.Random(args.seed).shuffle(texts)  # passages and samples mixed; the held-out tail is both
    t0 = time.perf_counter()
    states = collect_states(model, texts, seq_len=args.seq_len, max_tokens=args.max_tokens,
                            storage_dtype=torch.bfloat16)
    t_states = time.perf_counter() - t0
    train, held = states.split(args.heldout)
    out = lens_dir(args.model)
    t0 = time.perf_counter()
    lens = train_tuned_lens(model, train, steps=args.steps, batch_tokens=args.batch_tokens,
                            vocab_subset=args.vocab_subset, seed=args.seed, checkpoint_dir=out / "checkpoint",
                            checkpoint_every=10, corpus=f"{CORPUS_FILE} ({states.n_tokens} tokens)")
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
    doc = {"model": args.model, "args": vars(args), "n_tokens": states.n_tokens, "n_train": train.n_tokens,
           "n_heldout": held.n_tokens, "training": lens.training, "lens_dir": str(out),
           "seconds": {"load": t_load, "states": t_states, "train": t_train, "eval": t_eval},
           "heldout_kl": {k: np.round(v, 4).tolist() for k, v in kl.items()}}
    RESULTS.mkdir(parents=True, exist_ok=True)
    atomic_write_text(RESULTS / f"{args.model}_train.json", dumps(doc, indent=1))
    for k, v in kl.items():
        print(f"{k:<45} " + " ".join(f"{x:.2f}" for x in v))
    print(json.dumps(doc["seconds"]))


if __name__ == "__main__":
    main()
