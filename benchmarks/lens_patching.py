"""Activation patching of the decision layer (``interp_toolkit.lens.patching``) on a real model.

    python benchmarks/lens_patching.py --model smollm2-135m --lengths 8,12,16 --per-length 40

Prompts: the first T tokens of the bundled CC0 passages (decoded back to text), for each T in
--lengths, --per-length passages each; pairs within each length (target i ← source i + 1).
Writes benchmarks/lens/results/<model>_decision_patching_<site>.json (the full result, reloadable
with ``load_result``) and a figure in benchmarks/lens/figures/.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from interp_toolkit.adapter import as_adapter
from interp_toolkit.core.figures import figure_bytes
from interp_toolkit.core.serialize import atomic_write_bytes
from interp_toolkit.lens.corpus import load_corpus
from interp_toolkit.lens.patching import decision_patching
from interp_toolkit.models import load_model

HERE = Path(__file__).resolve().parent / "lens"


def token_prefixes(adapter, texts, lengths, per_length):
    out = []
    for T in lengths:
        for text in texts[:per_length]:
            toks = adapter.to_tokens(text, prepend_bos=False)[0]
            if len(toks) >= T:
                out.append(adapter.to_string(toks[:T]))
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--site", default="resid_post", choices=("resid_pre", "resid_post"))
    ap.add_argument("--lengths", default="8,12,16")
    ap.add_argument("--per-length", type=int, default=40)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model = load_model(args.model, progress=False)
    adapter = as_adapter(model)
    prompts = token_prefixes(adapter, load_corpus(), [int(x) for x in args.lengths.split(",")], args.per_length)
    t0 = time.perf_counter()
    r = decision_patching(model, prompts, site=args.site, progress=True)
    seconds = time.perf_counter() - t0
    r.extra.update({"seconds": seconds, "threads": args.threads, "lengths": args.lengths,
                    "per_length": args.per_length, "command": "python benchmarks/lens_patching.py " +
                    f"--model {args.model} --site {args.site} --lengths {args.lengths} --per-length {args.per_length}"})
    print(r.summary())
    L = len(r.layers)
    if r.n_pairs:
        print(f"causal − lens layer: mean {np.mean(r.causal_layer - r.lens_layer):.2f}, "
              f"causal ≤ lens in {(r.causal_layer <= r.lens_layer).mean():.0%}; "
              f"transfer at the first quarter {r.transfer_rate()[:max(1, L // 4)].mean():.2f}")
    print(f"{seconds:.0f} s for {r.n_pairs} pairs × {L} layers")
    r.save(HERE / "results" / f"{args.model}_decision_patching_{args.site}.json")
    atomic_write_bytes(HERE / "figures" / f"{args.model}_decision_patching_{args.site}.png",
                       figure_bytes(r.plot("transfer"), "png", 80))


if __name__ == "__main__":
    main()
