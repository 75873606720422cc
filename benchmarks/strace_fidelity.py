"""s-Trace under the reference's conditions, the attention-ablation defect and the final-norm
option, on a subset of the bundled evaluation set; one model load per call, every run
resumable (rerun the same command until each run has its inputs).

    python benchmarks/strace_fidelity.py run --model smollm2-135m,gemma3-270m -n 20 --budget 420
    python benchmarks/strace_fidelity.py summary --models smollm2-135m,gemma3-270m

Runs under ``--out/<model>-<name>`` (``name``, conditions, options):

    ref       trace, inverse, random   controls="reference" (default): inverse/random rows keep
                                       every residual skip path; random grows node-uniformly,
                                       residual/MLP edges first
    defect    trace                    attention edges left unablated (the stored reference
                                       code's defect; only for this comparison)
    mlpnorm   trace                    final norm on the last MLP node's edges only (reference)
    strict    trace, inverse, random   controls="strict" (skip paths follow the mask,
                                       edge-uniform random growth)

``summary`` prints median TV per size for every run and condition (the whole curve) as
Markdown tables and writes ``summary.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

RUNS = {  # name -> (trace kwargs, number of inputs as a fraction of -n)
    "ref": ({"conditions": ("trace", "inverse", "random"), "controls": "reference"}, 1.0),
    "defect": ({"conditions": ("trace",), "ablate_attention": False}, 1.0),
    "mlpnorm": ({"conditions": ("trace",), "final_norm": "mlp"}, 0.5),
    "strict": ({"conditions": ("trace", "inverse", "random"), "controls": "strict"}, 0.25),
}


def run(args) -> None:
    """Each model of ``--model`` (comma-separated) in turn, with an equal share of the budget."""
    import gc

    from interp_toolkit.models import load_model
    from interp_toolkit.strace.dataset import load_eval_set, trace_dataset

    torch.set_num_threads(1)
    names = args.model.split(",")
    for k, name_m in enumerate(names):
        t0 = time.perf_counter()
        budget = args.budget / len(names)
        model = load_model(name_m, device="cpu", progress=False)
        for name in args.runs.split(","):
            kwargs, frac = RUNS[name]
            n = max(1, int(round(args.n * frac)))
            left = budget - (time.perf_counter() - t0)
            if left <= 20:
                break
            res = trace_dataset(model, load_eval_set(n), Path(args.out) / f"{name_m}-{name}", token_freq=None,
                                time_budget_s=left - 20, progress=False, **kwargs)
            print(f"{name_m} {name}: {res.n}/{n} inputs ({time.perf_counter() - t0:.0f}s, "
                  f"load {os.getloadavg()[0]:.1f})", flush=True)
        del model
        gc.collect()


def summary(args) -> None:
    from interp_toolkit.strace.dataset import DatasetResult

    out = Path(args.out)
    res = {"command": "python benchmarks/strace_fidelity.py " + " ".join(sys.argv[1:]), "runs": {}}
    for model in args.models.split(","):
        for name in RUNS:
            path = out / f"{model}-{name}"
            if not path.is_dir():
                continue
            d = DatasetResult.load(path)
            if d.n == 0:
                continue
            entry = {"n": d.n, "sizes": d.sizes, "conditions": {}}
            for c in d.config["conditions"]:
                s = d.tv_summary(c)
                entry["conditions"][c] = {"median": s["median"].tolist(), "q25": s["q25"].tolist(),
                                          "q75": s["q75"].tolist(),
                                          "auc_tv_median": float(np.median(d.ok[f"auc_tv_{c}"]))}
            if name != "ref" and (out / f"{model}-ref").is_dir():
                ref = DatasetResult.load(out / f"{model}-ref").ok.set_index("index")
                mine = d.ok.set_index("index")
                common = mine.index.intersection(ref.index)
                entry["paired_vs_ref"] = {"n": len(common)}
                for c in d.config["conditions"]:  # median over the same inputs of TV(run) − TV(ref)
                    diff = (np.array([np.asarray(v) for v in mine.loc[common, f"tv_{c}"]])
                            - np.array([np.asarray(v) for v in ref.loc[common, f"tv_{c}"]]))
                    entry["paired_vs_ref"][c] = np.median(diff, 0).tolist() if len(common) else []
            res["runs"][f"{model}-{name}"] = entry
    (out / "summary.json").write_text(json.dumps(res, indent=1))
    for model in args.models.split(","):
        cols = [(name, c) for name in RUNS if f"{model}-{name}" in res["runs"]
                for c in res["runs"][f"{model}-{name}"]["conditions"]]
        if not cols:
            continue
        first = res["runs"][f"{model}-{cols[0][0]}"]
        print(f"\n**{model}** — median TV per size (n inputs per run: "
              + ", ".join(f"{k[len(model) + 1:]} {v['n']}" for k, v in res["runs"].items() if k.startswith(model + "-"))
              + ")\n")
        print("| s | " + " | ".join(f"{n}/{c}" for n, c in cols) + " |")
        print("|---|" + "---|" * len(cols))
        for i, s in enumerate(first["sizes"]):
            row = [res["runs"][f"{model}-{n}"]["conditions"][c]["median"][i] for n, c in cols]
            print(f"| {s:g} | " + " | ".join(f"{x:.3f}" for x in row) + " |")
        print("| AUC-TV (median) | " + " | ".join(
            f"{res['runs'][f'{model}-{n}']['conditions'][c]['auc_tv_median']:.2f}" for n, c in cols) + " |")
        paired = [(n, c) for n, c in cols if res["runs"][f"{model}-{n}"].get("paired_vs_ref", {}).get(c)]
        if paired:
            print(f"\n{model}: median over the same inputs of TV(run) − TV(ref), same condition\n")
            print("| s | " + " | ".join(f"{n}/{c} (n={res['runs'][f'{model}-{n}']['paired_vs_ref']['n']})"
                                       for n, c in paired) + " |")
            print("|---|" + "---|" * len(paired))
            for i, s in enumerate(first["sizes"]):
                print(f"| {s:g} | " + " | ".join(
                    f"{res['runs'][f'{model}-{n}']['paired_vs_ref'][c][i]:+.3f}" for n, c in paired) + " |")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("mode", choices=["run", "summary"])
    ap.add_argument("--model", default="smollm2-135m", help="model(s) to run, comma-separated, one after the other")
    ap.add_argument("--models", default="smollm2-135m,gemma3-270m")
    ap.add_argument("-n", type=int, default=20, help="inputs of the ref/defect runs (mlpnorm: half, strict: a quarter)")
    ap.add_argument("--runs", default="ref,defect,mlpnorm,strict")
    ap.add_argument("--budget", type=float, default=420, help="seconds for this call (model load included)")
    ap.add_argument("--out", default="runs/strace-fidelity")
    args = ap.parse_args(argv)
    {"run": run, "summary": summary}[args.mode](args)


if __name__ == "__main__":
    main()
