"""Shared interactions between two models over a prompt set, plus CPU timings.

    python benchmarks/interactions_sweep.py sweep  --n 8  [--models smollm2-135m,gemma3-270m] [--runner ray]
    python benchmarks/interactions_sweep.py timing --n 10 [--loop-prompts 1]
    python benchmarks/interactions_sweep.py methods --n 8

``sweep``: keeps the prompts of ``interp_toolkit/data/interaction_prompts.txt`` where both
models predict the same next word (not a function word), then runs the ``interactions`` sweep
over them (``interp_toolkit.sweeps``; one baseline per model — learned on the first prompts
with a short SGD run, or fixed — v(x_S) for all 2^n subsets per prompt and model, exact LP),
stored as parquet rows under ``--out/store_n<n>_<baseline>`` so a rerun resumes; the joint
extraction and the pooled sharing / order / cancellation are computed from the store.
``timing``: per model, time the batched values and the one-forward-per-subset loop on one or
two prompts at n = 10, and the sparsification methods on the resulting values.
``methods``: the sparsification methods against the exact LP on the cached sweep values.
``control``: chance level of the sharing metrics (model 1 on prompt i vs model 2 on prompt i+1).
``figures``: order distribution and cancellation of shared vs non-shared interactions, from
``summary.json``, as PNGs under ``--figures``.
``fidelity``: from the cached values (no model): canonical decompositions; sharing, order and
cancellation of shared vs non-shared with size-matched cancellation and a permutation null;
the same for the mismatched-prompt control; the joint extraction on normalised values
(per-model scales and γ̂ bounds over the dataset, q bound 0.02); self-sharing ceilings (the
same model with its players renumbered — solver vertex vs canonical form — and, where the
values of a second baseline are cached, the same model under two baselines).
``sgd``: the reference SGD recipe (momentum 0.9, lr decayed log-linearly to lr/10) and the
plain constant-lr SGD against the exact LP on the cached values.
``baselines``: learn one baseline per model over a dataset of prompts held out from the
explained ones (the kept prompts after the first ``--max-prompts``, then the prompts where the
models disagree, each with the model's own prediction as target) and record the training loss
per epoch and the loss on fixed draws before and after every epoch.
Writes ``summary.json`` / ``timing.json`` under ``--out`` and prints a Markdown summary.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import time
from importlib import resources
from pathlib import Path

import numpy as np
import torch

from interp_toolkit.adapter import as_adapter
from interp_toolkit.core import atomic_write_text
from interp_toolkit.interactions import analysis
from interp_toolkit.interactions.baselines import fixed_baseline, learn_baseline
from interp_toolkit.interactions.joint import joint_sparsify
from interp_toolkit.interactions.pipeline import same_word
from interp_toolkit.interactions.players import STOPWORDS, PlayerError, Players
from interp_toolkit.interactions.sparsify import sparsify, sparsify_batch
from interp_toolkit.interactions.sweep import matched_prompts, summarize_interactions
from interp_toolkit.interactions.values import resolve_target, subset_values, subset_values_loop
from interp_toolkit.models import load_model
from interp_toolkit.sweeps import LocalRunner, RayRunner, SweepStore, run_sweep


def load_prompts() -> list[str]:
    text = resources.files("interp_toolkit.data").joinpath("interaction_prompts.txt").read_text()
    return [l.strip() for l in text.splitlines() if l.strip() and not l.startswith("#")]


def machine() -> dict:
    return {"cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "load_avg": os.getloadavg(), "torch": torch.__version__, "python": platform.python_version()}


def predictions(models: list[str], prompts: list[str], out: Path) -> dict:
    path = out / "predictions.json"
    cache = json.loads(path.read_text()) if path.exists() else {}
    for name in models:
        if name in cache and len(cache[name]) == len(prompts):
            continue
        a = as_adapter(load_model(name, device="cpu", progress=False))
        preds = []
        for p in prompts:
            with torch.no_grad():
                logits = a.forward(a.to_tokens(p))[0, -1]
            i = int(logits.argmax())
            preds.append(a.tokenizer.decode([i]))
        cache[name] = preds
        atomic_write_text(path, json.dumps(cache, indent=1))
        del a
        gc.collect()
    return cache


def store_dir(args) -> Path:
    return Path(args.out) / f"store_n{args.n}_{args.baseline}"


def kept_prompts(models: list[str], out: Path) -> tuple[list[str], dict, list[int]]:
    """(prompts, predictions per model, indices of the prompts where every model predicts the
    same content word)."""
    out.mkdir(parents=True, exist_ok=True)
    prompts = load_prompts()
    preds = predictions(models, prompts, out)
    keep = [i for i, p in enumerate(prompts)
            if all(same_word(preds[models[0]][i], preds[m][i]) for m in models[1:])
            and preds[models[0]][i].strip().lower() not in STOPWORDS]
    return prompts, preds, keep


def sweep(args) -> None:
    """The prompts on which the models predict the same next word, through the interactions
    sweep (``interp_toolkit.sweeps``: values and LP per prompt and model, parquet store,
    resumable, local or Ray); the pooled sharing figures are computed from the store."""
    out = Path(args.out)
    models = args.models.split(",")
    prompts, preds, keep = kept_prompts(models, out)
    if args.max_prompts:
        keep = keep[: args.max_prompts]
    print(f"{len(keep)} of {len(prompts)} prompts: same next word in {models}", flush=True)
    config = {"n": args.n, "baseline": args.baseline, "method": "lp", "seed": args.seed,
              "baseline_init": args.baseline_init, "baseline_prompts": args.baseline_prompts,
              "baseline_epochs": args.baseline_epochs}
    runner = RayRunner(args.address, threads_per_worker=max(1, args.threads)) if args.runner == "ray" else LocalRunner()
    try:
        run = run_sweep("interactions", [(str(i), prompts[i]) for i in keep], models, store_dir(args), config=config,
                        runner=runner, options={"max_batch_tokens": args.max_batch_tokens})
    finally:
        runner.close()
    t = run.table
    ok = t[t["error"].isna()]
    agg = summarize_interactions(t, joint=args.joint)
    meta = {m: {"baseline": args.baseline, "model": json.loads(ok[ok["model"] == m]["model_meta"].iloc[0]),
                "values_s_mean": float(ok[ok["model"] == m]["values_s"].mean())} for m in models}
    summary = {"command": args.command_line, "n": args.n, "models": models, "machine": machine(), "meta": meta,
               "store": str(store_dir(args)), "lp_seconds_mean": float(ok["sparsify_s"].mean()), **agg}
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=1, default=float))
    print(markdown_summary(summary))


def stored_values(args, model: str) -> dict[str, np.ndarray]:
    """input id → v(x_S) − v(∅) of one model, from the sweep store."""
    t = SweepStore(store_dir(args)).table(model)
    t = t[t["error"].isna()]
    return {i: np.asarray(v, dtype=np.float64) for i, v in zip(t["input_id"], t["v"])}


def markdown_summary(s: dict) -> str:
    lines = [f"n = {s['n']} players, {len(s['prompts'])} prompts, models {s['models'][0]} (1) and {s['models'][1]} (2)", ""]
    for key in ("separate", "joint"):
        if key not in s:
            continue
        agg = s[key]
        m, md = agg["mean"], agg["median"]
        lines += [f"**{key} extraction** (mean / median over prompts)", "",
                  "| metric | mean | median |", "|---|---|---|"]
        for k in ("overlap", "overlap_raw", "transfer_1to2", "transfer_2to1", "shared_strength_1",
                  "shared_strength_2", "n_salient_1", "n_salient_2", "n_shared"):
            lines.append(f"| {k} | {m[k]:.3f} | {md[k]:.3f} |")
        lines += ["", "| group | count | mean order | strength-weighted order | order fractions (0..n) | cancellation overall | cancellation by order (1..n) |",
                  "|---|---|---|---|---|---|---|"]
        for g in ("shared", "non_shared"):
            p = agg["pooled"][g]
            fr = " ".join(f"{x:.2f}" for x in p["order_frac"])
            co = " ".join("–" if x != x else f"{x:.2f}" for x in p["cancellation_per_order"][1:])
            lines.append(f"| {g} | {p['count']} | {p['mean_order']:.2f} | {p['strength_weighted_order']:.2f} | "
                         f"{fr} | {p['cancellation_overall']:.3f} | {co} |")
        lines.append("")
    return "\n".join(lines)


def timing(args) -> None:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    prompts = load_prompts()[: args.loop_prompts]
    res = {"command": args.command_line, "n": args.n, "machine_before": machine(), "models": {}}
    for name in args.models.split(","):
        a = as_adapter(load_model(name, device="cpu", progress=False))
        b = fixed_baseline(a, "pad").vector
        rows = []
        for p in prompts:
            toks = Players.from_prompt(p, n=args.n).tokens_for(a)
            target = resolve_target(a, toks, None)
            t0, c0 = time.perf_counter(), time.process_time()
            v = subset_values(a, toks, target, b, max_batch_tokens=args.max_batch_tokens)
            t1, c1 = time.perf_counter(), time.process_time()
            row = {"prompt": p, "tokens": len(toks.tokens), "batched_s": t1 - t0, "batched_cpu_s": c1 - c0,
                   "load_avg": os.getloadavg()}
            if not args.skip_loop:
                v_loop = subset_values_loop(a, toks, target, b)
                row["loop_s"] = time.perf_counter() - t1
                row["loop_cpu_s"] = time.process_time() - c1
                row["max_abs_diff"] = float(np.abs(v_loop - v).max())
            vr = v - v[0]
            lp = sparsify(vr, method="lp")
            row["sparsify"] = {"lp": {"s": lp.seconds, "l1": lp.l1}}
            for method, kw in (("pdhg", {}), ("adam", {}), ("sgd", {"iters": 20000})):
                r = sparsify(vr, method=method, **kw)
                row["sparsify"][method] = {"s": r.seconds, "l1": r.l1, "ratio": r.l1 / lp.l1}
            rows.append(row)
            print(name, json.dumps(row, default=float), flush=True)
        res["models"][name] = rows
        del a
        gc.collect()
    res["machine_after"] = machine()
    atomic_write_text(out / f"timing_n{args.n}.json", json.dumps(res, indent=1, default=float))


def methods(args) -> None:
    """Sparsification methods against the exact LP on the cached sweep values (no model)."""
    out = Path(args.out)
    rows = {}
    for name in args.models.split(","):
        V = np.stack(list(stored_values(args, name).values()))
        if args.max_prompts:
            V = V[: args.max_prompts]
        lp = [sparsify(v, method="lp") for v in V]
        opt = np.array([r.l1 for r in lp])
        rows[name] = {"prompts": len(V), "lp_s": float(np.mean([r.seconds for r in lp]))}
        for method, kw in (("pdhg", {}), ("adam", {}), ("sgd", {"iters": 20000})):
            t0 = time.perf_counter()
            res = [sparsify(v, method=method, **kw) for v in V]
            ratio = np.array([r.l1 for r in res]) / opt
            rows[name][method] = {"s": (time.perf_counter() - t0) / len(V), "ratio_median": float(np.median(ratio)),
                                  "ratio_max": float(ratio.max()), "ratio_mean": float(ratio.mean())}
        print(name, json.dumps(rows[name]), flush=True)
    atomic_write_text(out / f"methods_n{args.n}.json", json.dumps({"command": args.command_line, "rows": rows,
                                                             "machine": machine()}, indent=1))


def control(args) -> None:
    """Chance level of the sharing metrics: model 1 on prompt i against model 2 on prompt i+1
    (same n, cached sweep values, exact LP), next to the matched pairs of ``summary.json``."""
    out = Path(args.out)
    models = args.models.split(",")
    summary = json.loads((out / "summary.json").read_text())
    wide = matched_prompts(SweepStore(store_dir(args)).table(), models[:2])
    sps = [[sparsify(np.asarray(r[f"v@{m}"], dtype=np.float64), method="lp") for _, r in wide.iterrows()]
           for m in models[:2]]
    keep = list(range(len(wide)))
    shifted = [(sps[0][k], sps[1][(k + 1) % len(keep)]) for k in range(len(keep))]
    from scipy.stats import wilcoxon

    agg = analysis.aggregate(shifted)
    matched = summary["separate"]["per_prompt"]
    res = {"command": args.command_line, "prompts": len(keep), "mismatched": agg["mean"],
           "matched": summary["separate"]["mean"], "wilcoxon_p": {}}
    for k in ("overlap", "transfer_1to2", "transfer_2to1", "shared_strength_1", "shared_strength_2"):
        a, b = np.array([m[k] for m in matched]), np.array([m[k] for m in agg["per_prompt"]])
        res["wilcoxon_p"][k] = float(wilcoxon(a, b).pvalue)
    atomic_write_text(out / "control.json", json.dumps(res, indent=1, default=float))
    print("| metric | matched prompts (mean) | mismatched prompts (mean) | Wilcoxon p (paired by prompt) |\n|---|---|---|---|")
    for k in res["wilcoxon_p"]:
        print(f"| {k} | {res['matched'][k]:.3f} | {res['mismatched'][k]:.3f} | {res['wilcoxon_p'][k]:.1g} |")


def figures(args) -> None:
    """Shared vs non-shared order distribution and cancellation from ``summary.json``."""
    from interp_toolkit.interactions.plots import plot_aggregate

    summary = json.loads((Path(args.out) / "summary.json").read_text())
    dest = Path(args.figures)
    dest.mkdir(parents=True, exist_ok=True)
    for key in ("separate", "joint"):
        if key in summary:
            fig = plot_aggregate(summary[key], title=f"{key} extraction, n = {summary['n']} players, "
                                                     f"{len(summary['prompts'])} prompts — "
                                                     + " vs ".join(summary["models"]))
            fig.savefig(dest / f"interactions_{key}.png", dpi=110)
            print(dest / f"interactions_{key}.png")


def _cached(out: Path, models, n: int, baseline: str) -> tuple[list[int], list[list[np.ndarray]]]:
    """Prompt indices of the matched prompts in the sweep store ``out/store_n<n>_<baseline>``
    (every model has a row, same target word and players), and per prompt the values of each
    model relative to v(∅) [P][K]."""
    path = Path(out) / f"store_n{n}_{baseline}"
    if not (path / "sweep.json").exists():
        return [], []
    wide = matched_prompts(SweepStore(path).table(), list(models))
    keys = [int(r[f"index@{models[0]}"]) for _, r in wide.iterrows()]
    vals = [[np.asarray(r[f"v@{m}"], dtype=np.float64) - float(r[f"v@{m}"][0]) for m in models]
            for _, r in wide.iterrows()]
    return keys, vals


def _controls_row(c: dict) -> str:
    o, sm, pm = c["observed"], c["size_matched"], c["permutation"]
    return (f"{o['cancellation_shared']:.3f} / {o['cancellation_non_shared']:.3f} | "
            f"{sm['cancellation_shared']:.3f} / {sm['cancellation_non_shared']:.3f} | "
            f"{o['delta_cancellation']:+.3f} (null {pm['delta_cancellation_null_mean']:+.3f}, q95 "
            f"{pm['delta_cancellation_null_q95']:+.3f}, p {pm['p_delta_cancellation']:.3g}) | "
            f"{o['delta_order']:+.2f} (null {pm['delta_order_null_mean']:+.2f}, p {pm['p_delta_order']:.3g})")


def fidelity(args) -> None:
    """Canonical sharing figures with controls, nulls and ceilings, from the cached values."""
    from interp_toolkit.interactions.joint import joint_scales
    from interp_toolkit.interactions.transforms import permute_players

    out = Path(args.out)
    models = args.models.split(",")
    keys, vals = _cached(out, models, args.n, args.baseline)
    if args.max_prompts:
        keys, vals = keys[: args.max_prompts], vals[: args.max_prompts]
    P = len(keys)
    if P < 2:
        raise SystemExit(f"need cached values of at least 2 prompts in {out}")
    t0 = time.perf_counter()
    canon = [[sparsify(v, method="lp") for v in row] for row in vals]
    raw = [[sparsify(v, method="lp", canonical=False) for v in row] for row in vals]
    lp_s = (time.perf_counter() - t0) / (2 * P * len(models))
    pairs = [(r[0], r[1]) for r in canon]
    shifted = [(canon[k][0], canon[(k + 1) % P][1]) for k in range(P)]
    res = {"command": args.command_line, "n": args.n, "models": models, "baseline": args.baseline,
           "prompt_indices": keys, "machine": machine(), "lp_plus_tiebreak_s": lp_s,
           "separate": analysis.aggregate(pairs), "separate_vertex": analysis.aggregate([(r[0], r[1]) for r in raw]),
           "mismatched": analysis.aggregate(shifted),
           "controls": {"separate": analysis.sharing_controls(pairs, draws=args.draws, seed=args.seed),
                        "mismatched": analysis.sharing_controls(shifted, draws=args.draws, seed=args.seed)}}
    scales, hb = joint_scales([np.stack(r) for r in vals])
    joint = [joint_sparsify(np.stack(r), method="lp", scales=scales, gamma_hat_bounds=hb) for r in vals]
    res["joint_scales"] = {"scales": scales.tolist(), "gamma_hat_bounds": hb.tolist()}
    res["joint"] = analysis.aggregate([(j[0], j[1]) for j in joint])
    res["controls"]["joint"] = analysis.sharing_controls([(j[0], j[1]) for j in joint], draws=args.draws,
                                                         seed=args.seed)
    # the earlier joint extraction: raw values (no per-model scale), q bound 0.04, solver vertex
    old = [joint_sparsify(np.stack(r), method="lp", normalise=False, q_rel=0.04, canonical=False) for r in vals]
    res["joint_unnormalised"] = analysis.aggregate([(j[0], j[1]) for j in old])
    # self-sharing ceilings
    rng = np.random.default_rng(args.seed)
    ceil = {m: {"vertex": [], "canonical": []} for m in models}
    for k in range(P):
        for mi, m in enumerate(models):
            v = vals[k][mi]
            n = int(np.log2(len(v)))
            perm = rng.permutation(n)
            inv = np.argsort(perm)
            for kind, canonical in (("vertex", False), ("canonical", True)):
                r2 = sparsify(permute_players(v, perm), method="lp", canonical=canonical)
                back = (permute_players(r2.i_and, inv), permute_players(r2.i_or, inv))
                ref = raw[k][mi] if kind == "vertex" else canon[k][mi]
                ceil[m][kind].append(analysis.sharing(ref, back))
    res["ceiling_renumbered"] = {m: {kind: {key: float(np.nanmean([x[key] for x in rows]))
                                            for key in ("overlap", "transfer_1to2", "shared_strength_1")}
                                     for kind, rows in d.items()} for m, d in ceil.items()}
    if args.second_baseline:
        keys2, vals2 = _cached(out, models, args.n, args.second_baseline)
        common = [k for k in keys if k in keys2]
        two = {}
        for mi, m in enumerate(models):
            rows = [analysis.sharing(canon[keys.index(k)][mi], sparsify(vals2[keys2.index(k)][mi], method="lp"))
                    for k in common]
            two[m] = {"prompts": len(common), **{key: float(np.nanmean([x[key] for x in rows]))
                                                  for key in ("overlap", "transfer_1to2", "transfer_2to1",
                                                              "shared_strength_1", "shared_strength_2")}}
        res["ceiling_two_baselines"] = {"baselines": [args.baseline, args.second_baseline], "models": two}
    atomic_write_text(out / f"fidelity_n{args.n}.json", json.dumps(res, indent=1, default=float))
    keys_m = ("overlap", "transfer_1to2", "transfer_2to1", "shared_strength_1", "shared_strength_2",
              "n_salient_1", "n_salient_2", "n_shared")
    print(f"n = {args.n}, {P} prompts, {models}, baseline {args.baseline}; LP + tie-break {lp_s:.2f} s\n")
    cols = ("separate", "separate_vertex", "joint", "joint_unnormalised", "mismatched")
    print("| metric | separate (canonical) | separate (solver vertex) | joint (normalised) | joint (raw values, "
          "q 0.04, vertex) | mismatched prompts |")
    print("|---|---|---|---|---|---|")
    for k in keys_m:
        print(f"| {k} | " + " | ".join(f"{res[g]['mean'][k]:.3f}" for g in cols) + " |")
    print("\n| extraction | group | count | mean order | strength-weighted order | cancellation overall |")
    print("|---|---|---|---|---|---|")
    for g in ("separate", "joint", "mismatched", "separate_vertex", "joint_unnormalised"):
        for grp in ("shared", "non_shared"):
            q = res[g]["pooled"][grp]
            print(f"| {g} | {grp} | {q['count']} | {q['mean_order']:.2f} | {q['strength_weighted_order']:.2f} | "
                  f"{q['cancellation_overall']:.3f} |")
    print("\n| extraction | cells | cancellation shared / non-shared | size-matched | Δ cancellation | Δ mean order |")
    print("|---|---|---|---|---|---|")
    for g, c in res["controls"].items():
        if c.get("cells"):
            print(f"| {g} | {c['cells']} | {_controls_row(c)} |")
    print("\nceiling (same model, players renumbered):", json.dumps(res["ceiling_renumbered"]))
    if "ceiling_two_baselines" in res:
        print("ceiling (same model, two baselines):", json.dumps(res["ceiling_two_baselines"]))


def sgd_gap(args) -> None:
    """Reference SGD recipe vs plain SGD vs the exact LP on the cached values."""
    out = Path(args.out)
    models = args.models.split(",")
    keys, vals = _cached(out, models, args.n, args.baseline)
    keys, vals = keys[: args.max_prompts or len(keys)], vals[: args.max_prompts or len(vals)]
    rows = {}
    for mi, m in enumerate(models):
        V = np.stack([r[mi] for r in vals])
        lp = np.array([sparsify(v, method="lp", canonical=False).l1 for v in V])
        rows[m] = {"prompts": len(V)}
        for name, kw in (("reference_recipe", {}), ("plain_constant_lr", {"momentum": 0.0, "lr_end_ratio": 1.0})):
            t0 = time.perf_counter()
            got = np.array([r.l1 for r in sparsify_batch(V, method="sgd", iters=args.sgd_iters, **kw)])
            ratio = got / lp
            rows[m][name] = {"ratio_median": float(np.median(ratio)), "ratio_min": float(ratio.min()),
                             "ratio_max": float(ratio.max()), "s_per_prompt": (time.perf_counter() - t0) / len(V)}
        print(m, json.dumps(rows[m]), flush=True)
    atomic_write_text(out / f"sgd_n{args.n}.json", json.dumps({"command": args.command_line, "iters": args.sgd_iters,
                                                         "rows": rows, "machine": machine()}, indent=1))


def baselines(args) -> None:
    """One learned baseline per model over held-out prompts, with the loss per epoch."""
    out = Path(args.out)
    models = args.models.split(",")
    prompts, preds, keep = kept_prompts(models, out)
    explained = set(keep[: args.max_prompts or len(keep)])
    held = [i for i in keep if i not in explained] + [i for i in range(len(prompts)) if i not in keep]
    res = {"command": args.command_line, "explained_prompts": sorted(explained), "eval_draws": args.eval_draws,
           "machine": machine(), "held_out_prompts": {}, "models": {}}
    for name in models:
        a = as_adapter(load_model(name, device="cpu", progress=False))
        samples, used = [], []
        for i in held:
            if len(samples) == args.baseline_prompts:
                break
            try:
                toks = Players.from_prompt(prompts[i], n=args.n).tokens_for(a)
            except PlayerError:
                continue
            samples.append((toks, resolve_target(a, toks, preds[name][i])))
            used.append(i)
        res["held_out_prompts"][name] = used
        res["models"][name] = {}
        for lr in args.baseline_lrs.split(","):
            t0 = time.perf_counter()
            b = learn_baseline(a, samples, init=args.baseline_init, epochs=args.baseline_epochs, lr=float(lr),
                               seed=args.seed, eval_draws=args.eval_draws, progress=True)
            res["models"][name][lr] = {"history": b.history, "eval_history": b.eval_history,
                                       "seconds": time.perf_counter() - t0, "baseline": b.to_dict()}
            print(f"{name} lr {lr}: loss per epoch {[round(x, 3) for x in b.history]}; on fixed draws "
                  f"{[round(x, 3) for x in b.eval_history]} "
                  f"({time.perf_counter() - t0:.0f}s)", flush=True)
            atomic_write_text(out / f"baselines_n{args.n}.json", json.dumps(res, indent=1, default=float))
        del a
        gc.collect()


def main(argv=None):
    import sys

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("mode", choices=["sweep", "timing", "methods", "figures", "control", "fidelity", "sgd",
                                     "baselines"])
    ap.add_argument("--models", default="smollm2-135m,gemma3-270m")
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--out", default="runs/interactions")
    ap.add_argument("--baseline", default="learned", help="learned | pad | unk | zero | mean")
    ap.add_argument("--baseline-init", default="pad")
    ap.add_argument("--baseline-prompts", type=int, default=8)
    ap.add_argument("--baseline-epochs", type=int, default=3)
    ap.add_argument("--max-prompts", type=int, default=0)
    ap.add_argument("--max-batch-tokens", type=int, default=4096)
    ap.add_argument("--loop-prompts", type=int, default=1)
    ap.add_argument("--skip-loop", action="store_true")
    ap.add_argument("--no-joint", dest="joint", action="store_false")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--figures", default="benchmarks/interactions", help="figures mode: output folder")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--draws", type=int, default=500, help="fidelity: permutation / subsampling draws")
    ap.add_argument("--second-baseline", default=None, help="fidelity: cached values of this baseline for the "
                                                            "two-baseline ceiling")
    ap.add_argument("--sgd-iters", type=int, default=20000)
    ap.add_argument("--eval-draws", type=int, default=20, help="baselines: fixed draws per prompt for the "
                    "evaluation loss measured before training and after every epoch")
    ap.add_argument("--baseline-lrs", default="1e-3", help="baselines: comma-separated learning rates")
    ap.add_argument("--runner", choices=("local", "ray"), default="local", help="sweep mode: where items run")
    ap.add_argument("--address", default=None, help="sweep mode with --runner ray: cluster address")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    args.command_line = "python benchmarks/interactions_sweep.py " + " ".join(sys.argv[1:] if argv is None else argv)
    {"sweep": sweep, "timing": timing, "methods": methods, "figures": figures, "control": control,
     "fidelity": fidelity, "sgd": sgd_gap, "baselines": baselines}[args.mode](args)


if __name__ == "__main__":
    main()
