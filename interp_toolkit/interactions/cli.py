"""``interp-toolkit interactions "PROMPT" [--model a,b] [--players w1,w2,...] [--out r.html]``.

Prints the top AND-OR interactions per model (and the sharing figures when two models are
given); writes an offline HTML report (``--out``) and the result (``--json``) when asked.
"""

from __future__ import annotations

import argparse
import sys

from ..cli import add_analysis_arguments, models_from_args, register


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("prompt", help="the prompt; players are its words")
    parser.add_argument("--players", default=None,
                        help="comma-separated words of the prompt to use as players (default: the "
                             "last --n content words)")
    parser.add_argument("--n", type=int, default=10, help="number of players by default (2^n forwards)")
    parser.add_argument("--target", default=None,
                        help="target next token as text, one token in each model (default: argmax)")
    parser.add_argument("--baseline", default="pad",
                        help="pad | unk | zero | mean | bos | token:<id> | learned (default: pad)")
    parser.add_argument("--baseline-epochs", type=int, default=20, help="epochs when --baseline learned")
    parser.add_argument("--baseline-prompts", default=None,
                        help="--baseline learned: a text file of prompts (one a line) to learn it over "
                             "(default: the bundled prompt set; the explained prompt is left out)")
    parser.add_argument("--baseline-max-prompts", type=int, default=16,
                        help="--baseline learned: use at most this many prompts (default 16)")
    parser.add_argument("--method", default="auto", choices=("auto", "lp", "pdhg", "adam", "sgd"),
                        help="sparsification (auto: exact LP for n ≤ 12)")
    parser.add_argument("--no-joint", dest="joint", action="store_false", help="skip the joint extraction")
    parser.add_argument("--top", type=int, default=10, help="interactions to print per model")
    parser.add_argument("--seed", type=int, default=0, help="seed for a learned baseline")
    add_analysis_arguments(parser, several_models=True, deprecated={"--models": "model", "--html": "out"})


def run(args: argparse.Namespace) -> int:
    from .pipeline import compare_models, compute_interactions
    from .players import PlayerError

    try:
        models = models_from_args(args)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    players = [w.strip() for w in args.players.split(",") if w.strip()] if args.players else None
    baseline_options = {"epochs": args.baseline_epochs, "seed": args.seed, "progress": sys.stderr.isatty(),
                        "max_prompts": args.baseline_max_prompts}
    if args.baseline_prompts:
        from pathlib import Path

        baseline_options["prompts"] = [line.strip() for line in Path(args.baseline_prompts).read_text().splitlines()
                                       if line.strip()]
    common = dict(players=players, n=args.n, target=args.target, method=args.method,
                  max_batch_tokens=args.max_batch_tokens, progress=sys.stderr.isatty(),
                  baseline_options=baseline_options if args.baseline == "learned" else None)
    try:
        if len(models) == 1:
            out = compute_interactions(models[0], args.prompt, baseline=args.baseline, **common)
            results = [out]
        else:
            out = compare_models(models, args.prompt, baselines=args.baseline, joint=args.joint, **common)
            results = out.results
    except (PlayerError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for r in results:
        print(f"\n{r.model.get('name')}: {r.prompt!r} -> {r.target!r}   n = {r.n}, "
              f"v(N) - v(empty) = {r.v[-1] - r.v[0]:+.3f}, L1 = {r.sparsification.l1:.3f} "
              f"({r.sparsification.method}), values {r.timings['values_s']:.1f}s"
              + r.positions_note())
        for row in r.top(args.top):
            print(f"  {row['kind']:<3} {row['value']:+8.3f}  {row['words']}")
    if len(results) > 1:
        for name, figures in (("separate", out.sharing), ("joint", out.joint_sharing)):
            if figures is None:
                continue
            print(f"\nsharing ({name} extraction):")
            for k, v in figures.items():
                print(f"  {k:<18} {v:.3f}" if isinstance(v, float) else f"  {k:<18} {v}")
    if args.out:
        print(f"\nreport: {out.write_html(args.out)}")
    if args.json_path:
        print(f"result: {out.save(args.json_path)}")
    return 0


register("interactions", add_arguments, run,
         help="Harsanyi AND-OR interactions between the words of a prompt (one or two models)")
