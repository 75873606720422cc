"""``interp-toolkit sweep ANALYSIS --inputs FILE --model a,b --out DIR [--runner ray]``.

    interp-toolkit sweep trace --inputs passages.jsonl --model smollm2-135m,gemma3-270m --out runs/trace
    interp-toolkit sweep interactions --inputs prompts.txt --model smollm2-135m,gemma3-270m \\
        --out runs/inter --set n=8 --runner ray --address head-node:6379
    interp-toolkit sweep circuit --inputs tasks.txt --model smollm2-135m --out runs/circ \\
        --set methods=eap,random          # tasks.txt: one task name per line (ioi, greater-than …)
    interp-toolkit sweep summary runs/trace --report runs/trace.html      # from the store only
    interp-toolkit sweep migrate runs/strace-smollm2 runs/strace-gemma3 --out runs/trace

Rerunning the same command resumes (finished items are skipped). Analysis settings go in
``--set key=value`` (values parsed as JSON when they can be: ``--set sizes=[0.01,0.1]``).
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys

from ..cli import add_model_arguments, register



def _setting(text: str) -> tuple[str, object]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"--set needs key=value, got {text!r}")
    try:
        return key.strip(), json.loads(value)
    except json.JSONDecodeError:
        return key.strip(), value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("analysis", help="trace | interactions | lens | circuit (registered analyses), or "
                                         "'summary DIR' (statistics from a store), 'compact DIR' (merge its "
                                         "one-row files into one) or 'migrate OLD… --out DIR'")
    parser.add_argument("sources", nargs="*", help="summary/compact: the store; migrate: earlier-layout s-Trace runs")
    parser.add_argument("--inputs", help="input file: .jsonl (fields 'text', optional 'id') or .txt (one per line)")
    parser.add_argument("--out", help="results directory (the parquet store; rerun to resume)")
    parser.add_argument("--models", dest="model", default=argparse.SUPPRESS, help="alias of --model (comma-separated names)")
    parser.add_argument("--set", dest="settings", type=_setting, action="append", default=[],
                        metavar="KEY=VALUE", help="an analysis setting (repeatable), e.g. n=8, sizes=[0.01,0.1]")
    parser.add_argument("--seed", type=int, default=None, help="the analysis seed (same as --set seed=N)")
    parser.add_argument("--runner", choices=("local", "ray"), default="local", help="where items run (default local)")
    parser.add_argument("--address", default=None,
                        help="Ray cluster address (host:port, ray://host:port, auto); default: start Ray here")
    parser.add_argument("--threads-per-worker", "--threads", dest="threads_per_worker", type=int, default=1,
                        help="torch threads per worker (default 1)")
    parser.add_argument("--memory-mb", type=int, default=None, help="memory reserved per Ray worker (MB)")
    parser.add_argument("--num-gpus", type=float, default=None, help="GPUs per Ray worker (default: 1 if the cluster has GPUs)")
    parser.add_argument("--workers-per-model", type=int, default=1, help="Ray actors per model (default 1)")
    parser.add_argument("--num-cpus", type=int, default=2, help="CPUs of a Ray instance started here (default 2)")
    parser.add_argument("--max-items", type=int, default=None, help="run at most this many new items")
    parser.add_argument("--max-batch-tokens", type=int, default=None,
                        help="rows × positions per forward (memory budget; not part of the result)")
    parser.add_argument("--report", default=None, help="write an offline HTML report of the aggregates here")
    parser.add_argument("--json", default=None, help="write the summary as JSON here")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_model_arguments(parser)


def _command() -> str:
    return "interp-toolkit " + " ".join(shlex.quote(a) for a in sys.argv[1:])


def _terse(x, depth: int = 0):
    """The summary for the terminal: long lists and per-prompt detail left out (the JSON
    file keeps everything)."""
    if isinstance(x, dict):
        return {k: _terse(v, depth + 1) for k, v in x.items() if k not in ("per_prompt", "prompts")}
    if isinstance(x, list) and len(x) > 8:
        return f"[{len(x)} values]"
    return x


def _print_summary(summary: dict, args) -> None:
    from ..core import dumps

    for k, v in _terse(summary).items():
        if isinstance(v, dict):
            print(f"{k}:")
            for k2, v2 in v.items():
                print(f"  {k2}: {dumps(v2)}")
        else:
            print(f"{k}: {dumps(v)}")
    text = dumps(summary, indent=1)
    if args.json:
        from ..core import atomic_write_text

        print(f"summary: {atomic_write_text(args.json, text)}")


def _report(analysis: str, table, args) -> None:
    from .registry import get_analysis

    a = get_analysis(analysis)
    if args.report:
        if a.report is None:
            print(f"note: {analysis} has no report; --report ignored", file=sys.stderr)
        elif len(table):
            print(f"report: {a.report(table, args.report, command=_command())}")


def _summary(args) -> int:
    from .registry import get_analysis
    from .store import SweepStore

    if len(args.sources) != 1:
        print("error: sweep summary takes one results directory", file=sys.stderr)
        return 2
    store = SweepStore(args.sources[0])
    m = store.manifest()
    if m is None:
        print(f"error: {args.sources[0]} holds no sweep", file=sys.stderr)
        return 2
    table = store.table()
    a = get_analysis(m["analysis"])
    out = {"analysis": m["analysis"], "rows": len(table), "models": sorted(set(table["model"])),
           "errors": int(table["error"].notna().sum()) if len(table) else 0}
    if a.summarize and len(table):
        out["aggregate"] = a.summarize(table)
    _print_summary(out, args)
    _report(m["analysis"], table, args)
    return 0


def _compact_store(args) -> int:
    from .store import SweepStore

    if len(args.sources) != 1:
        print("error: sweep compact takes one results directory", file=sys.stderr)
        return 2
    store = SweepStore(args.sources[0])
    n = len(store.shards())
    if store.manifest() is None:
        print(f"error: {args.sources[0]} holds no sweep", file=sys.stderr)
        return 2
    print(f"{n} shards -> {store.compact() or 'nothing to merge'}")
    return 0


def _migrate(args) -> int:
    from ..strace.dataset import migrate_parts_run

    if not args.sources or not args.out:
        print("error: sweep migrate OLD_DIR [OLD_DIR…] --out NEW_DIR", file=sys.stderr)
        return 2
    for old in args.sources:
        n = migrate_parts_run(old, args.out)
        print(f"{old}: {n} rows -> {args.out}")
    return 0


def run(args: argparse.Namespace) -> int:
    from .items import read_inputs
    from .runners import LocalRunner, RayRunner, RunnerError
    from .store import StoreError
    from .sweep import run_sweep

    try:
        if args.analysis == "summary":
            return _summary(args)
        if args.analysis == "migrate":
            return _migrate(args)
        if args.analysis == "compact":
            return _compact_store(args)
        if args.sources:
            print(f"error: unexpected arguments {args.sources}", file=sys.stderr)
            return 2
        if not args.inputs or not args.out:
            print("error: a sweep needs --inputs FILE and --out DIR", file=sys.stderr)
            return 2
        config = dict(args.settings)
        if args.seed is not None:
            config["seed"] = args.seed
        inputs = read_inputs(args.inputs)
        models = args.model.split(",")
        if args.runner == "ray":
            runner = RayRunner(args.address, num_cpus=args.num_cpus, threads_per_worker=args.threads_per_worker,
                               memory_mb=args.memory_mb, num_gpus=args.num_gpus,
                               workers_per_model=args.workers_per_model)
        else:
            if args.threads_per_worker:
                import torch

                torch.set_num_threads(args.threads_per_worker)
            runner = LocalRunner()
        options = {"max_batch_tokens": args.max_batch_tokens} if args.max_batch_tokens else {}
        load = {"device": args.device, "dtype": args.dtype, "backend": args.backend}
        try:
            res = run_sweep(args.analysis, inputs, models, args.out, config=config, runner=runner, load=load,
                            options=options, progress=not args.no_progress, max_items=args.max_items,
                            allow_download=args.allow_download)
        finally:
            runner.close()
    except (ValueError, RunnerError, StoreError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{res.analysis}: {res.n_run} items run, {res.n_skipped} resumed, {res.n_missing} left, "
          f"{int(res.table['error'].notna().sum()) if len(res.table) else 0} rejected inputs; "
          f"{res.seconds:.1f} s on the {res.runner} runner; store {args.out}")
    _print_summary(res.summary(), args)
    _report(res.analysis, res.table, args)
    return 0


register("sweep", add_arguments, run,
         help="run an analysis over many inputs × models (local or on Ray), resumable parquet results")
