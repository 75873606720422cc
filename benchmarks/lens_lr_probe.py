"""Learning-rate probe for the tuned-lens recipe on one model: a short run per learning rate.

    python benchmarks/lens_lr_probe.py --model gemma3-270m --lrs 1,0.3,0.1,0.03,0.01

Hidden states of the first --max-tokens corpus tokens are computed once; for each learning
rate the recipe (SGD Nesterov 0.9, weight decay 1e-3, linear decay to 0 over --steps, clip
1.0, loss on the --vocab-subset likeliest tokens) runs --steps steps of --batch-tokens tokens
from zero translators. Prints and writes the mean training KL per layer at the first and the
last step and the mean residual norm per layer (benchmarks/lens/results/<model>_lr_probe.json).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from interp_toolkit.core import atomic_write_text, dumps
from interp_toolkit.lens.corpus import load_corpus
from interp_toolkit.lens.train import collect_states, train_tuned_lens
from interp_toolkit.models import load_model

RESULTS = Path(__file__).resolve().parent / "lens" / "results"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="gemma3-270m")
    ap.add_argument("--lrs", default="1,0.3,0.1,0.03,0.01")
    ap.add_argument("--max-tokens", type=int, default=2048)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--batch-tokens", type=int, default=64)
    ap.add_argument("--vocab-subset", type=int, default=2048)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--optimizer", choices=("sgd", "adam"), default="sgd")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model = load_model(args.model, progress=False)
    states = collect_states(model, load_corpus(), seq_len=128, max_tokens=args.max_tokens)
    norms = states.pre.float().norm(dim=-1).mean(0).tolist()
    rows = {}
    for lr in [float(x) for x in args.lrs.split(",")]:
        t0 = time.perf_counter()
        lens = train_tuned_lens(model, states, steps=args.steps, batch_tokens=args.batch_tokens, lr=lr,
                                optimizer=args.optimizer, vocab_subset=args.vocab_subset, progress=False)
        rows[lr] = {"first_step_kl": lens.training["first_mean_kl"], "last_step_kl": lens.training["final_mean_kl"],
                    "seconds": time.perf_counter() - t0}
        print(f"lr {lr:g}: training KL per layer {rows[lr]['first_step_kl']:.2f} (step 1) -> "
              f"{rows[lr]['last_step_kl']:.2f} (step {args.steps})", flush=True)
    doc = {"command": " ".join(sys.argv), "model": args.model, "tokens": states.n_tokens, "steps": args.steps,
           "optimizer": args.optimizer, "batch_tokens": args.batch_tokens, "vocab_subset": args.vocab_subset,
           "mean_resid_pre_norm_per_layer": [round(x, 2) for x in norms], "runs": rows}
    suffix = "" if args.optimizer == "sgd" else f"_{args.optimizer}"
    atomic_write_text(RESULTS / f"{args.model}_lr_probe{suffix}.json", dumps(doc, indent=1))


if __name__ == "__main__":
    main()
