"""``interp-toolkit analyze "PROMPT" [--model a[,b]] [--out report.html] [--json F]``."""

from __future__ import annotations

import argparse
import sys

from ..cli import add_model_arguments, model_from_args, register
from .sections import SECTIONS, UNAVAILABLE

DEFAULT_OUT = "reports/analyze.html"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("prompt", help="the text to analyse")
    parser.add_argument("--out", "-o", default=DEFAULT_OUT, help=f"offline HTML report (default: {DEFAULT_OUT})")
    parser.add_argument("--json", dest="json_path", default=None, help="also save the whole result as JSON here")
    parser.add_argument("--sections", default=None,
                        help=f"comma-separated subset of {', '.join(list(SECTIONS) + list(UNAVAILABLE))} "
                             "(default: all that are available)")
    parser.add_argument("--n-players", type=int, default=None, help="words for the interactions (default 8)")
    parser.add_argument("--max-batch-tokens", type=int, default=None, help="rows × positions per forward")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    add_model_arguments(parser)
    model = next(a for a in parser._actions if "--model" in a.option_strings)
    model.help += "; two names (a,b) add the interactions shared by the two models"


def run(args: argparse.Namespace) -> int:
    from .run import analyze

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    names = [m.strip() for m in args.model.split(",") if m.strip()]
    if not names:
        print("error: --model is empty", file=sys.stderr)
        return 2
    models = [model_from_args(argparse.Namespace(**{**vars(args), "model": n})) for n in names]
    options = {"max_batch_tokens": args.max_batch_tokens}
    if args.n_players is not None:
        options["n_players"] = args.n_players
    sections = [s.strip() for s in args.sections.split(",") if s.strip()] if args.sections else None
    try:
        rep = analyze(models[0], args.prompt, others=models[1:], sections=sections, options=options)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(rep.summary())
    if args.out:
        print(f"\nreport: {rep.write_html(args.out)}")
    if args.json_path:
        print(f"result: {rep.save(args.json_path)}")
    failed = {n: why for n, why in rep.skipped.items() if why.startswith("failed")}
    for name, why in failed.items():
        print(f"error: section {name} {why}", file=sys.stderr)
    return 1 if failed else 0


register("analyze", add_arguments, run,
         help="s-Trace, interactions, lens, geometry and attention of one prompt in one offline HTML report")
