"""Guess-then-Refine figures for one model and its lenses (logit, tuned, and tuned in the
paper's "reference" index convention), decoded from the same forwards.

    export INTERP_TOOLKIT_CACHE=/work/main/.cache
    flock /tmp/itk-real.lock python benchmarks/lens_depth.py --model smollm2-135m --lenses logit,tuned,reference

Prompts: --n-prompts prefixes (5 words to the whole text, seeded) of the shipped corpus texts,
last position. Frequency buckets from token counts of the shipped corpus under the model's
tokenizer (the wordfreq table's shares are recorded too). Case studies: part of speech,
teacher-forced facts, multiple choice (interp_toolkit.lens.cases). Writes
benchmarks/lens/results/<model>_<lens>.json and figures in benchmarks/lens/figures/.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

from interp_toolkit.core import atomic_write_text, dumps
from interp_toolkit.core.figures import figure_bytes
from interp_toolkit.core.serialize import atomic_write_bytes
from interp_toolkit.lens import DepthMetrics, from_corpus, from_wordfreq, get_lens, lens_dir, run_lenses
from interp_toolkit.lens.cases import run_cases
from interp_toolkit.lens.corpus import load_corpus
from interp_toolkit.models import load_model

HERE = Path(__file__).resolve().parent / "lens"


def prefixes(texts, n, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for i in rng.choice(len(texts), n, replace=len(texts) < n):
        words = texts[i].split()
        out.append(" ".join(words[: int(rng.integers(5, max(6, len(words))))]))
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--lenses", default="logit,tuned,reference",
                    help="comma-separated subset of logit,tuned,reference (decoded from the same forwards)")
    ap.add_argument("--n-prompts", type=int, default=300, help="0: case studies only")
    ap.add_argument("--cases", default="pos,facts,mc")
    ap.add_argument("--n-per-class", type=int, default=150)
    ap.add_argument("--max-items", type=int, default=None, help="first N items of each case")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--figures", action="store_true", help="also write PNG figures")
    ap.add_argument("--tuned-dir", default=None,
                    help="tuned lens directory (default: $INTERP_TOOLKIT_CACHE/lenses/<model>)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    model = load_model(args.model, progress=False)
    names = [x for x in args.lenses.split(",") if x]
    tuned = args.tuned_dir or "tuned"
    lenses = [get_lens(model, "logit" if x == "logit" else tuned,
                       convention="reference" if x == "reference" else "tuned") for x in names]
    texts = load_corpus()
    freq = from_corpus(model, texts, "strace_eval_en passages")
    wf = from_wordfreq(model)
    results = run_lenses(model, prefixes(texts, args.n_prompts), lenses, positions="last",
                         progress=True) if args.n_prompts else []
    docs = {name: {"model": args.model, "lens": name, "cases": {}} for name in names}
    figs = HERE / "figures"
    for name, r in zip(names, results):
        m = DepthMetrics.from_lens(r, freq)
        L = len(m.layers)
        q = max(1, L // 4)
        docs[name] = {
            "model": args.model, "lens": name, "n_layers": L, "n_prompts": m.n,
            "frequency": {"corpus": freq.summary(), "corpus_shares": freq.shares(), "corpus_tokens": freq.n_tokens,
                          "wordfreq_shares": wf.shares()},
            "bucket_share_first_quarter": m.bucket_share[:q].mean(0).tolist(),
            "bucket_share_output": m.bucket_share[-1].tolist(),
            "bucket_share_per_layer": m.bucket_share.tolist(),
            "flip_rate_top10_first_quarter": m.early_flip_rate(),
            "flip_rate_per_layer": m.flip_rate.tolist(), "flip_count_per_layer": m.flip_count.tolist(),
            "depth_first": {k: m.depth_at(k) for k in (1, 10, 100, 1000)},
            "depth_persistent": {k: m.depth_at(k, persistent=True) for k in (1, 10, 100, 1000)},
            "kl_per_layer": np.nanmean(r.kl, axis=(0, 2)).round(4).tolist(), "cases": {}}
        print(m.summary())
        if args.figures:
            for kind in ("buckets", "flips", "depth"):
                atomic_write_bytes(figs / f"{args.model}_{name}_{kind}.png", figure_bytes(m.plot(kind), "png", 80))
    for case in [c for c in args.cases.split(",") if c]:
        studies = run_cases(model, case, lenses, n_per_class=args.n_per_class, max_items=args.max_items)
        for name, c in zip(names, studies):
            print(c.summary())
            groups = sorted(set(c.groups))
            docs[name]["cases"][case] = {
                "n_items": c.n_items, "n_kept": c.n_kept, "groups": c.group_counts(),
                "depth_k1_first": {g: c.depth(g) for g in groups},
                "depth_k1_persistent": {g: c.depth(g, persistent=True) for g in groups},
                "depth_k10_first": {g: c.depth(g, 10) for g in groups},
                "exit_accuracy": c.exit_accuracy.round(4).tolist(), "exit_kl": c.exit_kl.round(4).tolist(),
                **{k: v for k, v in c.extra.items()}}
            if args.figures:
                atomic_write_bytes(figs / f"{args.model}_{name}_{case}_depth.png",
                                   figure_bytes(c.plot("depth"), "png", 80))
    seconds = time.perf_counter() - t0
    for name, doc in docs.items():
        doc["seconds_all_lenses"] = seconds
        doc["command"] = " ".join(sys.argv)
        if name != "logit":
            doc["tuned_lens"] = str(args.tuned_dir or lens_dir(args.model))
        suffix = "" if args.n_prompts else "_cases"  # a cases-only run keeps the metrics file
        atomic_write_text(HERE / "results" / f"{args.model}_{name}{suffix}.json", dumps(doc, indent=1))
    print(f"{seconds:.0f} s")


if __name__ == "__main__":
    main()
