"""Greedy node selection vs the norm-based strata on the first inputs of the bundled set
(the oracle comparison recorded in benchmarks/RESULTS.md)::

    python benchmarks/strace_greedy.py --model smollm2-135m -n 3 --steps 20 --out runs/greedy-smollm2.json
"""

from __future__ import annotations

import math

import torch

from interp_toolkit.core import atomic_write_text, dumps
from interp_toolkit.strace.greedy import OBJECTIVES, compare_with_strata, greedy_nodes


def main(argv=None) -> int:
    """``python benchmarks/strace_greedy.py --model smollm2-135m -n 3 --steps 20``: forward
    greedy on the first inputs of the bundled set (cut to ``--words`` words), next to the
    norm-based strata at equal size."""
    import argparse

    from interp_toolkit.models import load_model
    from interp_toolkit.strace.dataset import load_eval_set

    parser = argparse.ArgumentParser(description="greedy node selection vs norm-based strata")
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("-n", type=int, default=3)
    parser.add_argument("--words", type=int, default=12, help="cut each input to this many words")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--objective", default="kl", choices=OBJECTIVES)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    model = load_model(args.model, device="cpu", progress=False)
    out = []
    for text in load_eval_set(args.n):
        prompt = " ".join(text.split()[: args.words])
        g = greedy_nodes(model, prompt, objective=args.objective, max_steps=args.steps)
        rows = compare_with_strata(model, prompt, g)
        print(f"{prompt!r}: greedy {g.seconds:.1f} s, {g.candidates_evaluated} candidate rows")
        print(f"{'size':>8} {'edges':>7} {'comps':>5} {'strata ' + args.objective:>12} {'greedy ' + args.objective:>12}")
        for r in rows:
            if not math.isnan(r["greedy"]):
                print(f"{r['size']:8.2g} {r['edges']:7d} {r['components']:5d} {r['strata']:12.4f} {r['greedy']:12.4f}")
        print("greedy order:", [g.nodes[i] for i in g.order])
        out.append({"prompt": prompt, "greedy": g.to_dict(), "comparison": rows})
    if args.out:
        atomic_write_text(args.out, dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
