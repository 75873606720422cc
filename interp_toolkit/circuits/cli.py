"""``interp-toolkit circuit``: circuit discovery on a task, with CPR/CMD per method."""

from __future__ import annotations

import argparse
import sys

from ..cli import add_analysis_arguments, model_from_args, register, write_outputs


def _list(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from .discover import DEFAULT_METHODS
    from .evaluate import SELECTIONS, SIZES
    from .methods import ABLATIONS
    from .tasks import TASKS

    parser.add_argument("--task", default="ioi", help=f"one of {', '.join(sorted(TASKS))} (default ioi)")
    parser.add_argument("--method", default=",".join(DEFAULT_METHODS),
                        help="comma-separated edge-scoring methods (default: all but the exact greedy, "
                             "which is slow on real models: add 'greedy')")
    parser.add_argument("--n-prompts", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=5, help="integration steps of the EAP-IG methods")
    parser.add_argument("--sizes", default=",".join(str(s) for s in SIZES),
                        help="circuit sizes, fractions of the edges in (0, 1]")
    parser.add_argument("--selection", choices=SELECTIONS, default="top_n")
    parser.add_argument("--ablation", choices=ABLATIONS, default="corrupt")
    parser.add_argument("--exact-max-edges", type=int, default=3000,
                        help="exact patching per edge up to this many edges, per node above")
    parser.add_argument("--exact-prompts", type=int, default=None,
                        help="exact patching and the exact greedy on the first N prompts only (default all)")
    parser.add_argument("--greedy-steps", type=int, default=32, help="edges the exact greedy adds (method greedy)")
    parser.add_argument("--greedy-pool", type=int, default=256,
                        help="the exact greedy's candidates: all edges up to this many, else the top |EAP| edges")
    add_analysis_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from .discover import discover_circuit
    from .methods import METHODS
    from .tasks import TASKS, TaskError

    methods = _list(args.method)
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        print(f"error: unknown method(s) {unknown}; choose from {', '.join(sorted(METHODS))}", file=sys.stderr)
        return 2
    if args.task not in TASKS:
        print(f"error: unknown task {args.task!r}; choose from {', '.join(sorted(TASKS))}", file=sys.stderr)
        return 2
    try:
        sizes = [float(s) for s in _list(args.sizes)]
    except ValueError:
        print(f"error: --sizes must be comma-separated numbers, got {args.sizes!r}", file=sys.stderr)
        return 2
    if not sizes or any(not 0 < s <= 1 for s in sizes):
        print(f"error: --sizes must be fractions of the edges in (0, 1], got {args.sizes!r}", file=sys.stderr)
        return 2
    model = model_from_args(args)
    try:
        res = discover_circuit(model, args.task, methods, n_prompts=args.n_prompts, seed=args.seed, sizes=sizes,
                               selection=args.selection, ablation=args.ablation, steps=args.steps,
                               exact_max_edges=args.exact_max_edges, exact_prompts=args.exact_prompts,
                               greedy_steps=args.greedy_steps, greedy_pool=args.greedy_pool, max_batch_tokens=args.max_batch_tokens or 2048,
                               progress=sys.stderr.isatty())
    except (TaskError, NotImplementedError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(res.summary())
    write_outputs(args, res)
    return 0


register("circuit", add_arguments, run, help="circuit discovery on a task: edge scores, faithfulness, CPR/CMD")
