"""Before/after check of the engine on a loaded machine: one process times, per mask kind,
K = 64 random masks through ``masked_forward``, the unmasked batched forward of the same shape
and the hand-written hook loop (last position, 4 rows), on SmolLM2's architecture with random
weights (``bench_engine.build_model``), one torch thread, in masks per CPU-second (the minimum
over 3 repeats). Run it alternately with two versions of the package on PYTHONPATH::

    PYTHONPATH=/path/to/old/tree python benchmarks/bench_engine_ab.py benchmarks
    PYTHONPATH=$PWD python benchmarks/bench_engine_ab.py benchmarks
"""
import json
import sys
import time

import torch

sys.path.insert(0, sys.argv[1])  # the benchmarks folder (bench_engine's helpers)
torch.set_num_threads(1)
import bench_engine as B  # noqa: E402

from interp_toolkit.adapter import ModelAdapter  # noqa: E402
from interp_toolkit.engine import masked_forward  # noqa: E402

args = B.parse_args(["--random-weights", "--threads", "1"])
a = ModelAdapter(B.build_model(args))
tokens = B.prompt(a, 32)
K, LOOP = 64, 4
out = {}
for kind in ("heads", "mlps", "edges"):
    keeps = B.random_keeps(kind, K, a, 32)
    spec = B.spec_of(kind, keeps)
    fns = {"kernel": (K, lambda: masked_forward(a, tokens, spec, progress=False)),
           "unmasked": (K, lambda: B.ceiling(a, tokens, K, 2048)),
           "loop": (LOOP, lambda: B.hook_loop(a, tokens, kind, keeps, LOOP, True))}
    best = {n: float("inf") for n in fns}
    for _ in range(3):
        for n, (rows, fn) in fns.items():
            c0 = time.process_time()
            fn()
            best[n] = min(best[n], (time.process_time() - c0) / rows)
    out[kind] = {"kernel_per_cpu_s": 1 / best["kernel"], "overhead": best["kernel"] / best["unmasked"],
                 "kernel_over_loop": best["loop"] / best["kernel"]}
print(json.dumps(out))
