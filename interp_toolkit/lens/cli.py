"""``interp-toolkit lens "PROMPT"``: per-layer top tokens in the terminal, an offline HTML heatmap."""

from __future__ import annotations

import argparse
import sys

from ..cli import add_analysis_arguments, model_from_args, register, write_outputs
from .lenses import SITES


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("prompt", help="the text to decode")
    parser.add_argument("--lens", default="logit",
                        help="logit (default), tuned (the cached lens of the model) or a lens directory")
    parser.add_argument("--convention", choices=("tuned", "reference"), default="tuned",
                        help="tuned-lens index convention: tuned (translator i on resid_pre[i]) or reference "
                             "(the paper's translator l on resid_post[l])")
    parser.add_argument("--site", choices=SITES, default="resid_post", help="residual site (default resid_post)")
    parser.add_argument("--target", default=None, help="a single-token target whose rank is shown per layer")
    parser.add_argument("--position", type=int, default=None, help="position for the table (default: last)")
    parser.add_argument("--top-k", type=int, default=5)
    add_analysis_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from .api import get_lens
    from .decode import run_lens

    model = model_from_args(args)
    try:
        lens = get_lens(model, args.lens, args.convention)
        result = run_lens(model, args.prompt, lens, site=args.site, k=args.top_k,
                          targets=None if args.target is None else [args.target],
                          max_batch_tokens=args.max_batch_tokens or 2048, progress=False)
        n = len(result.tokens[0])
        if args.position is not None and not -n <= args.position < n:
            raise ValueError(f"position {args.position} out of range for a {n}-token prompt")
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    pos = None if args.position is None else args.position % n
    print(result.table(0, pos))
    write_outputs(args, result)
    return 0


register("lens", add_arguments, run, help="logit / tuned lens of one prompt: what each layer predicts")
