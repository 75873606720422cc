"""Is the tuned-lens corpus large enough? Held-out KL against KL on text the lens was trained on.

    export INTERP_TOOLKIT_CACHE=/work/main/.cache
    python benchmarks/lens_fit_gap.py --model smollm2-135m --lenses clip5s1600,b1024,adam800 --train-tokens 2048 \
        --subset 2048

A lens that fits its training text better than unseen text (train KL well below held-out KL)
would gain from more text; one whose train and held-out KL agree is limited by its training
instead (steps, optimiser, loss). The split repeats ``lens_train.py``'s with
``--heldout-passages``: the corpus passages are shuffled with ``--seed`` and the last N held
out. The "train" set is the first ``--train-tokens`` tokens of the training passages (the
windows the lens trained on; the model samples that follow them in training are left out, so
both sets are the same kind of text). The logit lens's KL on both sets is the control for how
much the two sets differ by themselves: the tuned lens's train/held-out ratio is read against
the logit lens's. ``--subset K`` also reports the probability mass each lens puts outside
the K likeliest output tokens of the train set (about the vocabulary the training loss was
restricted to, ``--vocab-subset``), against the output's own mass there. Writes
``benchmarks/lens/results/<model>_fit_gap.json``.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

import numpy as np
import torch

from interp_toolkit.adapter import as_adapter
from interp_toolkit.core import atomic_write_text, dumps
from interp_toolkit.lens import LogitLens, lens_dir
from interp_toolkit.lens.corpus import load_corpus
from interp_toolkit.lens.train import collect_states, lens_kl, lens_layer_means, top_vocab
from interp_toolkit.lens.tuned import TunedLens
from interp_toolkit.models import load_model

RESULTS = Path(__file__).resolve().parent / "lens" / "results"


def mass_outside(model, lens, states, vocab) -> tuple[np.ndarray, float]:
    """Mean probability mass outside ``vocab``: per layer for the lens (resid_pre), and for the output."""
    adapter = as_adapter(model)
    outside = torch.ones(adapter.d_vocab, dtype=torch.bool)
    outside[vocab] = False
    per_layer = lens_layer_means(model, lens, states, lambda log_f, log_q: log_q[:, outside].exp().sum(-1))
    with torch.no_grad():
        output = sum(float(adapter.logits_from_resid(states.final[s:s + 256].to(adapter.device, adapter.dtype))
                           .float().softmax(-1)[:, outside].sum()) for s in range(0, states.n_tokens, 256))
    return per_layer, output / states.n_tokens


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--lenses", required=True, help="comma-separated tags of lens folders (<model>-<tag>); '' = <model>")
    ap.add_argument("--heldout-passages", type=int, default=20)
    ap.add_argument("--train-tokens", type=int, default=4096)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--subset", type=int, default=0, help="also report the mass outside the K likeliest tokens")
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
    if args.subset:
        vocab = top_vocab(as_adapter(model), sets["train"], args.subset)
        for name, lens in lenses.items():
            per_layer, out_mass = mass_outside(model, lens, sets["heldout"], vocab)
            rows[name].update(heldout_mass_outside_subset=np.round(per_layer, 5).tolist(),
                              heldout_output_mass_outside_subset=out_mass)
            print(f"{name:<28} held-out mass outside the top {args.subset}: lens {per_layer.mean():.4f} "
                  f"(mean over layers), output {out_mass:.4f}")
    doc = {"model": args.model, "args": vars(args), "n_train_tokens": sets["train"].n_tokens,
           "n_heldout_tokens": sets["heldout"].n_tokens, "seconds_states": t_states, "lenses": rows,
           "training": {n: lens.training for n, lens in lenses.items() if isinstance(lens, TunedLens)}}
    RESULTS.mkdir(parents=True, exist_ok=True)
    atomic_write_text(RESULTS / f"{args.model}_fit_gap.json", dumps(doc, indent=1))
    print(json.dumps({"seconds_states": t_states}))


if __name__ == "__main__":
    main()
