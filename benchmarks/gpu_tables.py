"""The GPU tables in one run: the engine table and the Harsanyi/patching table, fp32 and bf16.

Random weights of SmolLM2-135M's architecture (no weight file needed on the GPU machine)::

    python benchmarks/gpu_tables.py OUT_DIR            # writes OUT_DIR/gpu_tables.json (+ .md)

1. Engine (``bench_engine.section_masks``): K random head / MLP / edge masks (K = 64, 256) on a
   32-token prompt — the kernel vs the hook loop (one ``run_with_hooks`` per mask) vs the
   unmasked batched forward.
2. Causal prefix reuse (``bench_causal``): Harsanyi values at n = 10 (engine with and without
   reuse, the lab's recipe, the unmasked forward of the 1,024 rows) and last-position
   patching of K = 256 head outputs vs TransformerLens's ``patching`` loop.
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))


def _datasets_or_stand_in() -> None:
    """TransformerLens imports ``datasets`` at start-up for its data utilities, which these
    timings never call; where that package cannot be imported (a GPU machine without it or
    with a mismatched huggingface_hub), stand-in modules with the imported names are used."""
    try:
        import datasets  # noqa: F401
    except Exception:
        import types

        for name, attrs in (("datasets", ("load_dataset", "Dataset", "IterableDataset")),
                            ("datasets.arrow_dataset", ("Dataset",)),
                            ("datasets.iterable_dataset", ("IterableDataset",)),
                            ("datasets.load", ("load_dataset",))):
            mod = types.ModuleType(name)
            for a in attrs:
                setattr(mod, a, type(a, (), {}))
            sys.modules[name] = mod


_datasets_or_stand_in()

import bench_causal  # noqa: E402
import bench_engine  # noqa: E402

from interp_toolkit.adapter import ModelAdapter  # noqa: E402


def main(out_dir: str) -> None:
    out_dir = Path(out_dir)
    record, md = {"started": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}, []
    smoke = os.environ.get("GPU_TABLES_SMOKE")  # a quick CPU run of the same code path
    device = "cpu" if smoke else "cuda"
    for dtype in ("float32", "bfloat16"):
        common = ["--device", device, "--random-weights", "--dtype", dtype, "--min-time", "0.3"]
        eargs = bench_engine.parse_args(common + ["--ks", "4" if smoke else "64,256", "--loop-rows",
                                                  "2" if smoke else "16", "--max-repeats", "1" if smoke else "3"])
        cargs = bench_causal.parse_args(common + ["--max-repeats", "1" if smoke else "3", "--loop-rows",
                                                  "2" if smoke else "16", "--no-write", "--budget", "32768"]
                                        + (["--players", "3", "--K", "4"] if smoke else []))
        t0 = time.time()
        adapter = ModelAdapter(bench_engine.build_model(eargs))
        rec = {"machine": bench_engine.machine(device), "versions": bench_engine.versions()}
        out = [f"\n#### {dtype}\n"]
        for name, fn in (("engine", lambda: bench_engine.section_masks(adapter, eargs, out)),
                         ("harsanyi", lambda: bench_causal.section_harsanyi(
                             adapter, bench_causal.hf_model(cargs, adapter), cargs, out, rec)),
                         ("patching", lambda: bench_causal.section_patching(adapter, cargs, out, rec))):
            try:
                s = fn()
                if name == "engine":
                    rec["engine"] = {f"{k[0]}@{k[1]}": v for k, v in s.items()}
            except Exception:  # keep the other tables
                rec[f"{name}_error"] = traceback.format_exc()
                print(rec[f"{name}_error"], flush=True)
            torch.cuda.empty_cache()
            print("\n".join(out[-8:]), flush=True)
        rec["seconds"] = time.time() - t0
        record[dtype] = rec
        md += out
        del adapter
        torch.cuda.empty_cache()
        (out_dir / "gpu_tables.json").write_text(json.dumps(record, indent=1, default=str))
        (out_dir / "gpu_tables.md").write_text("\n".join(md) + "\n")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else ".")
