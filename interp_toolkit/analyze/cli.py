"""``interp-toolkit analyze "PROMPT" [--model a[,b]] [--out report.html] [--json F]``."""

from __future__ import annotations

import argparse
import sys

from ..cli import add_analysis_arguments, models_from_args, register, write_outputs
from .sections import SECTIONS, check_options, check_sections

DEFAULT_OUT = "reports/analyze.html"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("prompt", help="the text to analyse")
    parser.add_argument("--sections", default=None,
                        help=f"comma-separated subset of {', '.join(SECTIONS)} "
                             "(default: all that are available)")
    parser.add_argument("--n-players", type=int, default=None, help="words for the interactions (default 8)")
    add_analysis_arguments(parser, several_models=True)
    model = next(a for a in parser._actions if a.dest == "model")
    model.help += "; a second model adds the interactions the two share"
    parser.set_defaults(out=DEFAULT_OUT)
    out = next(a for a in parser._actions if a.dest == "out")
    out.help = f"offline HTML report (default: {DEFAULT_OUT}; '' for none)"


def run(args: argparse.Namespace) -> int:
    from .run import analyze

    options = {"max_batch_tokens": args.max_batch_tokens}
    if args.n_players is not None:
        options["n_players"] = args.n_players
    sections = [s.strip() for s in args.sections.split(",") if s.strip()] if args.sections else None
    try:  # an unknown section or option, an empty --model, a prompt that cannot be analysed
        check_sections(sections)
        check_options(options)
        first, *others = models_from_args(args)
        rep = analyze(first, args.prompt, others=others, sections=sections, options=options)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(rep.summary())
    write_outputs(args, rep, leading_newline=True)
    failed = {n: why for n, why in rep.skipped.items() if why.startswith("failed")}
    for name, why in failed.items():
        print(f"error: section {name} {why}", file=sys.stderr)
    return 1 if failed else 0


register("analyze", add_arguments, run,
         help=f"one offline HTML report of a prompt: {', '.join(SECTIONS)} (the comparison with two models)")
