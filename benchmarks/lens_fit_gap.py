"""Is the tuned-lens corpus large enough? Held-out KL against KL on text the lens was trained on.

    export INTERP_TOOLKIT_CACHE=/work/main/.cache
    python benchmarks/lens_fit_gap.py --model smollm2-135m --lenses clip5s1600,clip5s3200

A lens that fits its training text better than unseen text (train KL well below held-out KL)
would gain from more text; one whose train and held-out KL agree is limited by something
else (here: the number of clipped SGD steps). The split repeats ``lens_train.py``'s with
``--heldout-passages``: the corpus passages are shuffled with ``--seed`` and the last N held
out. The "train" set is the first ``--train-tokens`` tokens of the training passages (the
windows the lens trained on; the model samples that follow them in training are left out, so
both sets are the same kind of text). The logit lens's KL on both sets is the control for how
much the two sets differ by themselves: the tuned lens's train/held-out ratio is read against
the logit lens's. Writes ``benchmarks/lens/results/<model>_fit_gap.json``.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

import numpy as np
import torch

from interp_toolkit.core import atomic_write_text, dumps
from interp_toolkit.lens import LogitLens, lens_dir
from interp_toolkit.lens.corpus import load_corpus
from interp_toolkit.lens.train import collect_states, lens_kl
from interp_toolkit.lens.tuned import TunedLens
from interp_toolkit.models import load_model

RESULTS = Path(__file__).resolve().parent / "lens" / "results"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--lenses", required=True, help="comma-separated tags of lens folders (<model>-<tag>); '' = <model>")
    ap.add_argument("--heldout-passages", type=int, default=20)
    ap.add_argument("--train-tokens", type=int, default=4096)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model = load_model(args.model, progress=False)
    texts = load_corpus()
    random.Random(args.seed).shuffle(texts)
    train_texts, held_texts = texts[:-args.heldout_passages], texts[-args.heldout_passages:]
    t0 = time.perf_counter()
    sets = {"train": collect_states(model, train_texts, seq_len=args.seq_len, max_tokens=args.train_tokens,
                                    storage_dtype=torch.bfloat16),
            "heldout": collect_states(model, held_texts, seq_len=args.seq_len, storage_dtype=torch.bfloat16)}
    t_states = time.perf_counter() - t0
    lenses = {"logit": LogitLens()}
    for tag in args.lenses.split(","):
        folder = lens_dir(args.model) if not tag else lens_dir(args.model).with_name(f"{args.model}-{tag}")
        lenses[f"tuned:{tag or 'default'}"] = TunedLens.load(folder)
    kl = {name: {split: lens_kl(model, lens, st) for split, st in sets.items()} for name, lens in lenses.items()}
    rows = {}
    for name, d in kl.items():
        tr, he = float(d["train"].mean()), float(d["heldout"].mean())
        rows[name] = {"train_mean_kl": tr, "heldout_mean_kl": he, "train_over_heldout": tr / he,
                      "train_kl": np.round(d["train"], 4).tolist(), "heldout_kl": np.round(d["heldout"], 4).tolist()}
        print(f"{name:<28} train {tr:7.3f}  held-out {he:7.3f}  train/held-out {tr / he:.3f}")
    doc = {"model": args.model, "args": vars(args), "n_train_tokens": sets["train"].n_tokens,
           "n_heldout_tokens": sets["heldout"].n_tokens, "seconds_states": t_states, "lenses": rows,
           "training": {n: lens.training for n, lens in lenses.items() if isinstance(lens, TunedLens)}}
    RESULTS.mkdir(parents=True, exist_ok=True)
    atomic_write_text(RESULTS / f"{args.model}_fit_gap.json", dumps(doc, indent=1))
    print(json.dumps({"seconds_states": t_states}))


if __name__ == "__main__":
    main()
