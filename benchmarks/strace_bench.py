"""Timing of s-Trace's evaluation: all strata × conditions in batched forwards vs one
forward per stratum (the same masks through the same engine, ``rows_per_forward=1``).

    python benchmarks/strace_bench.py --model smollm2-135m -n 3 --out runs/bench-smollm2.json
"""

from __future__ import annotations

import time

import numpy as np

from interp_toolkit.adapter import as_adapter
from interp_toolkit.strace.evaluate import condition_strata, evaluate_strata
from interp_toolkit.strace.graph import build_graph
from interp_toolkit.strace.results import CONDITIONS
from interp_toolkit.strace.stratify import SIZE_GRID


def batched_speedup(model, texts, *, sizes=SIZE_GRID, conditions=CONDITIONS, seed: int = 0,
                    max_batch_tokens: int | None = None) -> list[dict]:
    """Per text: wall and CPU seconds of the evaluation batched and one stratum per forward,
    and the largest probability difference between the two (should be ~1e-6)."""
    adapter = as_adapter(model)
    rows = []
    for text in texts:
        graph = build_graph(adapter, text)
        strata = condition_strata(graph, sizes, conditions, seed)
        timings = {}
        outs = {}
        for name, rpf in (("batched", None), ("per_stratum", 1)):
            t0, c0 = time.perf_counter(), time.process_time()
            outs[name] = evaluate_strata(adapter, graph, strata, max_batch_tokens=max_batch_tokens, rows_per_forward=rpf)
            timings[name] = (time.perf_counter() - t0, time.process_time() - c0)
        diff = max(float(np.abs(outs["batched"].probs[c] - outs["per_stratum"].probs[c]).max()) for c in strata)
        rows.append({"n_pos": graph.n_pos, "rows": outs["batched"].n_rows,
                     "batched_s": timings["batched"][0], "batched_cpu_s": timings["batched"][1],
                     "per_stratum_s": timings["per_stratum"][0], "per_stratum_cpu_s": timings["per_stratum"][1],
                     "speedup_wall": timings["per_stratum"][0] / timings["batched"][0],
                     "speedup_cpu": timings["per_stratum"][1] / timings["batched"][1],
                     "max_prob_diff": diff})
    return rows


def main(argv=None) -> int:
    """``python benchmarks/strace_bench.py --model smollm2-135m -n 3 --out bench.json``"""
    import argparse
    import json

    import torch

    from interp_toolkit.models import load_model
    from interp_toolkit.strace.dataset import load_eval_set

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("-n", type=int, default=3, help="inputs (the first n of the bundled set)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=None, help="write the rows as JSON here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    model = load_model(args.model, device="cpu", progress=False)
    rows = batched_speedup(model, load_eval_set(args.n))
    for r in rows:
        print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in r.items()}))
    if args.out:
        with open(args.out, "w") as f:
            json.dump({args.model: rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
