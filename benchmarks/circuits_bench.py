"""Circuit discovery benchmark: CPR / CMD, faithfulness curves, time and memory per method and task.

    flock /tmp/itk-real.lock python benchmarks/circuits_bench.py --model smollm2-135m --tasks ioi \
        --n-prompts 8 --steps 5 --exact-prompts 2 --out-dir benchmarks/circuits

Writes ``<json-dir>/<model>_<task>.json`` (a CircuitResult), a small faithfulness PNG per task and
prints one table per task. A task the model cannot solve is reported and skipped.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--tasks", default="ioi,greater-than,factual,induction")
    p.add_argument("--methods", default="eap,eap-ig-inputs,eap-ig-activations,exact,strace,random")
    p.add_argument("--n-prompts", type=int, default=8)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--exact-prompts", type=int, default=2)
    p.add_argument("--max-batch-tokens", type=int, default=512)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--selection", default="top_n")
    p.add_argument("--out-dir", default="benchmarks/circuits", help="faithfulness PNGs")
    p.add_argument("--json-dir", default="/tmp/itk-circuits", help="CircuitResult JSONs (large: every edge score)")
    p.add_argument("--toy", type=int, default=0, metavar="N",
                   help="instead of the tasks: N random-token clean/corrupt pairs on a tiny random "
                        "HookedTransformer (--model tiny-random-llama-l4-h4 etc.; exact per edge is affordable)")
    p.add_argument("--table", action="store_true", help="print a markdown table of the JSONs in --json-dir and exit")
    args = p.parse_args(argv)
    if args.table:
        return table(Path(args.json_dir))
    torch.set_num_threads(args.threads)

    from interp_toolkit.circuits import TaskError, build_task, discover_circuit
    from interp_toolkit.core.figures import figure_bytes
    from interp_toolkit.models import load_model

    if args.toy:
        return toy(args)
    t0 = time.perf_counter()
    model = load_model(args.model, backend="hooked", progress=False)
    print(f"loaded {args.model} in {time.perf_counter() - t0:.1f}s", flush=True)
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for task in [t for t in args.tasks.split(",") if t]:
        t0 = time.perf_counter()
        try:
            data = build_task(model, task, n_prompts=args.n_prompts, seed=args.seed)
        except TaskError as exc:
            print(f"== {task}: skipped: {exc}", flush=True)
            continue
        print(f"== {data.summary()} ({time.perf_counter() - t0:.1f}s)", flush=True)
        try:
            res = discover_circuit(model, data, args.methods.split(","), seed=args.seed, steps=args.steps,
                                   exact_prompts=args.exact_prompts, max_batch_tokens=args.max_batch_tokens,
                                   selection=args.selection, n_attention_heads=4)
        except Exception:  # report and go on with the next task
            import traceback

            traceback.print_exc()
            continue
        res.meta.update({"threads": args.threads, "exact_prompts": args.exact_prompts,
                         "command": " ".join(sys.argv)})
        stem = f"{args.model}_{task}"
        Path(args.json_dir).mkdir(parents=True, exist_ok=True)
        res.save(Path(args.json_dir) / f"{stem}.json")
        (out / f"{stem}_faithfulness.png").write_bytes(figure_bytes(res.plot("faithfulness"), "png", dpi=70))
        print(res.summary(), flush=True)
        print("f per size:", {m: [round(v, 3) for v in res.curves[m]["f"]] for m in res.methods}, flush=True)
        print(f"task time {time.perf_counter() - t0:.1f}s", flush=True)
    return 0


def toy(args) -> int:
    """Every method on random-token pairs of a tiny random model (a pipeline check with exact
    per-edge patching as the reference; not a task the model solves)."""
    from interp_toolkit.circuits import PromptBatch, TaskData, discover_circuit
    from interp_toolkit.models import load_model

    model = load_model(args.model, backend="hooked", progress=False)
    g = torch.Generator().manual_seed(args.seed)
    n, T, V = args.toy, 8, model.cfg.d_vocab
    b = PromptBatch(torch.randint(4, V, (n, T), generator=g), torch.randint(4, V, (n, T), generator=g),
                    torch.randint(4, V, (n, 1), generator=g), torch.randint(4, V, (n, 1), generator=g), [0] * n)
    res = discover_circuit(model, TaskData("toy", [b], 1.0, {0: 1.0}, [0], [], args.seed), args.methods.split(","),
                           steps=args.steps, exact_max_edges=10**6, selection=args.selection, n_attention_heads=2)
    Path(args.json_dir).mkdir(parents=True, exist_ok=True)
    res.save(Path(args.json_dir) / f"{args.model}_toy.json")
    print(res.summary())
    exact = res.score_array("exact") if "exact" in res.methods else None
    if exact is not None:
        import numpy as np

        k = max(1, len(exact) // 20)
        top = set(np.argsort(-np.abs(exact))[:k])
        for m in res.methods:
            s = res.score_array(m)
            r = float(np.corrcoef(np.abs(s), np.abs(exact))[0, 1])
            hit = len(top & set(np.argsort(-np.abs(s))[:k])) / k
            print(f"{m:<20} |score| vs |exact| Pearson {r:.3f}; top-5 % edges shared with exact {hit:.0%}")
    return 0


def table(json_dir: Path) -> int:
    """Markdown rows ``task | method | CPR | CMD | f at 1 % / 10 % | time | memory`` of every saved result."""
    import interp_toolkit.circuits  # noqa: F401  (registers the result kind)
    from interp_toolkit.core import load_result

    print("| task | prompts | method | CPR ↑ | CMD ↓ | f @1 % | f @10 % | time (s) | peak mem (MB) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for path in sorted(json_dir.glob("*.json")):
        r = load_result(path)
        i1, i10 = r.sizes.index(0.01), r.sizes.index(0.1)
        for m in sorted(r.methods, key=lambda m: -r.curves[m]["cpr"]):
            c = r.curves[m]
            print(f"| {r.task} | {r.n_prompts} | {m} | {c['cpr']:.3f} | {c['cmd']:.3f} | {c['f'][i1]:.2f} | "
                  f"{c['f'][i10]:.2f} | {r.time_s[m]:.1f} | {r.peak_mem_mb[m]:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
