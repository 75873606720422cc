"""Local vs Ray sweep throughput on this machine, and the per-item overhead of Ray.

    python benchmarks/sweeps_bench.py overhead --items 200                      # tiny model, no lock
    flock /tmp/itk-real.lock python benchmarks/sweeps_bench.py real --model smollm2-135m --items 6 --n 8

``overhead``: a work function that does nothing but read the input (``len(text)``), run over
``--items`` inputs on the local runner and on a Ray instance started here (1 actor; 2 items
in flight, the default, and 1): with one item in flight the difference per item to local is
what Ray adds (task submission, pickling the item and row, the round trip); with two, the
actor's work overlaps the driver writing the previous row (one parquet file per item, on
both runners).
``real``: the interactions sweep (n players, pad baseline, exact LP) over the bundled prompts
(tiny models: 10-word synthetic prompts, which fit their 64-token context) on the local runner (1 thread), then Ray with 1 and 2 actors of 1 thread each. Wall times
exclude nothing: Ray's are split into start-up (Ray + actor model load, the first item) and
steady state (the rest).
Prints a Markdown table and writes JSON to ``--json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from importlib import resources
from pathlib import Path

import torch

from interp_toolkit.sweeps import LocalRunner, RayRunner, register_analysis, run_sweep


def noop_work(adapter, item, state):
    return {"n_chars": len(item.text)}


register_analysis("bench-noop", noop_work)


def machine() -> dict:
    return {"cpu_count": os.cpu_count(), "load_avg": os.getloadavg(), "torch": torch.__version__,
            "python": platform.python_version(), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}


def timed_run(analysis, inputs, models, runner, config=None) -> dict:
    """One sweep in a fresh store; per-item times from the rows' finish order."""
    with tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter()
        finish = []
        store_write = None

        def record(*a, **k):
            finish.append(time.perf_counter() - t0)
            return store_write(*a, **k)

        from interp_toolkit.sweeps import store as S

        orig = S.SweepStore.write_row

        def patched(self, row, artefacts=None):
            nonlocal store_write
            store_write = lambda r, a=None: orig(self, r, a)  # noqa: E731
            return record(row, artefacts)

        S.SweepStore.write_row = patched
        try:
            run = run_sweep(analysis, inputs, models, Path(d) / "s", config=config, runner=runner, progress=False)
        finally:
            S.SweepStore.write_row = orig
        total = time.perf_counter() - t0
    n = len(finish)
    steady = (finish[-1] - finish[0]) / (n - 1) if n > 1 else float("nan")
    return {"items": n, "wall_s": total, "first_item_s": finish[0] if finish else float("nan"),
            "steady_s_per_item": steady, "errors": int(run.table["error"].notna().sum())}


def prompts(k: int) -> list[tuple[str, str]]:
    text = resources.files("interp_toolkit.data").joinpath("interaction_prompts.txt").read_text()
    lines = [l.strip() for l in text.splitlines() if l.strip() and not l.startswith("#")]
    return [(str(i), l) for i, l in enumerate(lines[:k])]


def overhead(args) -> dict:
    inputs = [(str(i), f"input number {i}") for i in range(args.items)]
    res = {"local": timed_run("bench-noop", inputs, ["tiny-random-gpt2"], LocalRunner())}
    t0 = time.perf_counter()
    with RayRunner(num_cpus=2, object_store_mb=200) as r:
        res["ray_start_s"] = time.perf_counter() - t0
        res["ray"] = timed_run("bench-noop", inputs, ["tiny-random-gpt2"], r)
    with RayRunner(num_cpus=2, object_store_mb=200, in_flight=1) as r:
        res["ray_in_flight_1"] = timed_run("bench-noop", inputs, ["tiny-random-gpt2"], r)
    # with one item in flight nothing overlaps: the difference to local is Ray's round trip
    res["ray_round_trip_ms_per_item"] = 1e3 * (res["ray_in_flight_1"]["steady_s_per_item"]
                                               - res["local"]["steady_s_per_item"])
    return res


def short_prompts(k: int) -> list[tuple[str, str]]:
    """Prompts of 10 short words (≤ 40 characters: tiny models have a 64-token context)."""
    words = "cat dog sun sea red big old new hot dry wet far".split()
    return [(str(i), " ".join(words[(i + j) % len(words)] for j in range(10))) for i in range(k)]


def real(args) -> dict:
    inputs = short_prompts(args.items) if args.model.startswith("tiny-random") else prompts(args.items)
    cfg = {"n": args.n, "baseline": "pad", "method": "lp"}
    torch.set_num_threads(1)
    res = {"local": timed_run("interactions", inputs, [args.model], LocalRunner(), cfg)}
    for workers in (1, 2):
        t0 = time.perf_counter()
        with RayRunner(num_cpus=2, object_store_mb=200, workers_per_model=workers) as r:
            start = time.perf_counter() - t0
            res[f"ray_{workers}"] = {"ray_start_s": start, **timed_run("interactions", inputs, [args.model], r, cfg)}
    return res


def markdown(mode: str, res: dict) -> str:
    rows = [(k, v) for k, v in res.items() if isinstance(v, dict) and "items" in v]
    out = ["| runner | items | wall s | first item s | steady s/item |", "|---|---|---|---|---|"]
    for k, v in rows:
        out.append(f"| {k} | {v['items']} | {v['wall_s']:.2f} | {v['first_item_s']:.2f} | {v['steady_s_per_item']:.4f} |")
    extra = {k: v for k, v in res.items() if not isinstance(v, dict)}
    return "\n".join(out) + "\n\n" + json.dumps(extra, default=float)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("mode", choices=["overhead", "real"])
    ap.add_argument("--items", type=int, default=200)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    res = {"command": "python benchmarks/sweeps_bench.py " + " ".join(sys.argv[1:] if argv is None else argv),
           "machine_before": machine(), **(overhead(args) if args.mode == "overhead" else real(args)),
           "machine_after": machine()}
    print(markdown(args.mode, res))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(res, indent=1, default=float))


if __name__ == "__main__":
    main()
