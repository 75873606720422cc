"""``interp-toolkit trace`` (one prompt) and ``interp-toolkit trace-dataset`` (many inputs)."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

from ..cli import add_analysis_arguments, model_from_args, register, write_outputs
from ..core import dumps
from .importance import MODES
from .results import CONDITIONS
from .stratify import SIZE_GRID


def _sizes(text: str):
    try:
        return tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"sizes must be comma-separated numbers, got {text!r}") from None


def _conditions(text: str):
    return tuple(x.strip() for x in text.split(",") if x.strip())


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--mode", default="l1", help=f"edge importance: {', '.join(MODES)} (default l1)")
    parser.add_argument("--sizes", type=_sizes, default=SIZE_GRID,
                        help="comma-separated stratum sizes in (0, 1] (default: the 26-size grid); "
                             "the full graph is always added")
    parser.add_argument("--conditions", type=_conditions, default=CONDITIONS,
                        help="comma-separated subset of trace,inverse,random (default: all)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random control (default 0)")
    parser.add_argument("--controls", default="reference", choices=("reference", "strict"),
                        help="inverse/random rows: 'reference' keeps every residual skip path and grows the "
                             "random control node-uniformly, residual/MLP edges first (default); 'strict' "
                             "lets skip paths follow the mask and grows it edge-uniformly")
    parser.add_argument("--final-norm", default="all", choices=("all", "mlp"),
                        help="last-layer edges scored through the linearised final norm: all (default) or "
                             "mlp (the edges into the last MLP node only, as the reference)")
    parser.add_argument("--no-unigram", action="store_true",
                        help="skip the unigram-frequency encoding (no word-frequency table needed)")


def _freq(args) -> dict:
    """Options passed to ``trace`` besides the common ones."""
    return {"controls": args.controls, "final_norm": args.final_norm,
            **({"token_freq": None} if args.no_unigram else {})}


# ---------------------------------------------------------------------- trace
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("prompt", help="the text to trace (at least 2 tokens)")
    _common(parser)
    add_analysis_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from .evaluate import trace

    model = model_from_args(args)
    try:
        result = trace(model, args.prompt, sizes=args.sizes, mode=args.mode, conditions=args.conditions,
                       seed=args.seed, max_batch_tokens=args.max_batch_tokens, **_freq(args))
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(result.table())
    t = result.timings
    print(f"time: graph {t['graph']:.2f} s, stratification {t['stratify']:.2f} s, "
          f"evaluation {t['evaluate']:.2f} s, metrics {t['metrics']:.2f} s")
    write_outputs(args, result)
    return 0


# ---------------------------------------------------------------------- trace-dataset
def dataset_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("out_dir", help="run directory (per-input parquet rows; rerun to resume)")
    parser.add_argument("--texts", default=None,
                        help="a .txt (one input per line) or .jsonl (field 'text') file; default: the bundled "
                             "200-passage English set")
    parser.add_argument("-n", type=int, default=None, help="use the first N inputs")
    parser.add_argument("--time-budget", type=float, default=None, help="stop starting inputs after this many seconds")
    parser.add_argument("--restart", action="store_true", help="discard saved rows instead of resuming")
    parser.add_argument("--compare", default=None, help="another run directory: add the cross-model comparison")
    parser.add_argument("--reference-defect", action="store_true",
                        help="leave attention edges unablated, as the stored reference code did (only to "
                             "measure what that defect changes; never for results)")
    _common(parser)
    add_analysis_arguments(parser, deprecated={"--report": "out"})


def _read_texts(path: str | None, n: int | None):
    from .dataset import load_eval_set

    if path is None:
        return load_eval_set(n)
    p = Path(path)
    if p.suffix == ".jsonl":
        texts = [json.loads(line)["text"] for line in p.read_text(encoding="utf-8").splitlines() if line.strip()]
    else:
        texts = [line for line in p.read_text(encoding="utf-8").splitlines() if line.strip()]
    return texts[:n] if n is not None else texts


def dataset_run(args: argparse.Namespace) -> int:
    from .dataset import DatasetResult, cross_model_rho, trace_dataset
    from .report import dataset_page

    model = model_from_args(args)
    texts = _read_texts(args.texts, args.n)
    try:
        res = trace_dataset(model, texts, args.out_dir, sizes=args.sizes, mode=args.mode,
                            conditions=args.conditions, seed=args.seed, resume=not args.restart,
                            time_budget_s=args.time_budget, max_batch_tokens=args.max_batch_tokens,
                            **({"ablate_attention": False} if args.reference_defect else {}), **_freq(args))
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{res.n} inputs traced ({len(res.table) - res.n} rejected) in {args.out_dir}")
    print(res.tv_at((1e-3, 1e-2, 1e-1)).round(3).to_string())
    print(dumps({"entropy_auc": res.entropy_auc_spearman(), "early_share": res.early_share()}, indent=1))
    runs = [res]
    if args.compare:
        other = DatasetResult.load(args.compare)
        print("cross-model:", dumps(cross_model_rho(res, other)))
        runs.append(other)
    if args.out:
        cmd = "interp-toolkit " + " ".join(shlex.quote(a) for a in sys.argv[1:])
        print(f"report: {dataset_page(runs, command=cmd).write(args.out)}")
    if args.json_path:
        print(f"result: {res.save(args.json_path)}")
    return 0


register("trace", add_arguments, run, help="s-Trace of one prompt: strata table and an offline HTML report")
register("trace-dataset", dataset_arguments, dataset_run,
         help="s-Trace over many inputs (resumable), with aggregate statistics")
