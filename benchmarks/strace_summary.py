"""Markdown summary of s-Trace dataset runs (the figures recorded in benchmarks/RESULTS.md).

    python benchmarks/strace_summary.py runs/strace-smollm2 runs/strace-gemma3 \\
        --bench runs/bench-smollm2.json runs/bench-gemma3.json --figures benchmarks/strace
"""

from __future__ import annotations

import math

import numpy as np

from interp_toolkit.strace import plots
from interp_toolkit.strace.dataset import DatasetResult, _nanmean, cross_model_rho


def _f(v, d=3):
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    return f"{v:.{d}f}"


def _g(v):
    return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.2g}"


def run_markdown(res: DatasetResult) -> str:
    name = res.config.get("model", {}).get("name")
    t = res.ok
    lines = [f"**{name}** — n = {res.n} inputs (median {int(t['n_pos'].median())} tokens, "
             f"median {int(t['n_edges'].median())} edges per graph)", ""]
    tv = res.tv_at((1e-3, 1e-2, 1e-1))
    lines += ["| s | median TV (trace-only) | IQR |", "|---|---|---|"]
    for s, r in tv.iterrows():
        lines.append(f"| {s:g} | {_f(r['median'])} | {_f(r['q25'])} – {_f(r['q75'])} |")
    early = res.early_share()
    rho = res.entropy_auc_spearman()
    uni = res.unigram_curve()
    sizes = np.asarray(uni.index, dtype=float)
    small = uni["mean"][(sizes >= 1e-3) & (sizes <= 1e-2)]
    tp = res.two_phase()
    kl = res.entropy_spearman("auc_kl_trace")
    req10 = res.entropy_spearman("required_size_10")
    req = res.required_sizes()
    lines += [
        "",
        f"- minimal core (s = {early['size']:g}): share of edges in the first quarter of the layers "
        f"{_f(early['first_quarter_mean'])} (median {_f(early['first_quarter_median'])}), first half "
        f"{_f(early['first_half_mean'])}",
        f"- Spearman ρ(entropy of p_full, AUC-TV) = {_f(rho['rho'])} (p = {_g(rho['p'])}, n = {rho['n']}); "
        f"median AUC-TV {_f(float(t['auc_tv_trace'].median()))}; for comparison ρ(entropy, AUC-KL) = "
        f"{_f(kl['rho'])} (p = {_g(kl['p'])}) and ρ(entropy, size needed for a shared 10 % nucleus) = "
        f"{_f(req10['rho'])} (p = {_g(req10['p'])}, n = {req10['n']})",
        f"- composition: construction band (1e-4…1e-2) early-half share {_f(tp['construction_early_half_share'])}, "
        f"attention share {_f(tp['construction_attention_share'])}; refinement band (1e-2…1) late-half share "
        f"{_f(tp['refinement_late_half_share'])}, attention share {_f(tp['refinement_attention_share'])}",
        f"- shared nucleus ≥ 10 % reached by s ≤ 1e-2 in {_f(100 * tp['nucleus_10_reached_by_1e-2'], 0)} % of inputs; "
        f"median required size for shared-nucleus targets 10 / 60 / 90 %: "
        f"{_g(req.loc[10, 'median_size'])} / {_g(req.loc[60, 'median_size'])} / {_g(req.loc[90, 'median_size'])}",
        f"- unigram-frequency encoding (Spearman of p with corpus frequency): strata 1e-3…1e-2 mean "
        f"{_f(_nanmean(small))}, full model {_f(float(uni['full_model'].iloc[0]))}",
    ]
    cols = [c for c in ("graph", "stratify", "evaluate", "metrics") if f"time_{c}" in t]
    wall = " / ".join(_f(float(t[f"time_{c}"].median()), 2) for c in cols)
    cpu = " / ".join(_f(float(t[f"time_{c}_cpu"].median()), 2) for c in cols if f"time_{c}_cpu" in t)
    lines.append(f"- time per input, median seconds ({' / '.join(cols)}): wall {wall}; process CPU {cpu}")
    return "\n".join(lines)


def results_markdown(runs: list[DatasetResult], bench: dict | None = None) -> str:
    """Markdown block: one section per run, the cross-model ρ, the batching speed-up."""
    parts = [run_markdown(r) for r in runs]
    if len(runs) == 2:
        try:
            r = cross_model_rho(*runs)
            parts.append(f"**Across models**: Spearman ρ of AUC-TV on the {r['n']} shared inputs = {_f(r['rho'])} "
                         f"(p = {_g(r['p'])}); the reference reports 0.26–0.71 between 7–14B models.")
        except ValueError as exc:
            parts.append(f"**Across models**: {exc}")
    if bench:
        lines = ["**Batched strata evaluation vs one forward per stratum** (27 strata × 3 conditions = 81 "
                 "rows per input, same masks, same engine):", "",
                 "| model | input tokens | batched s (CPU s) | one per stratum s (CPU s) | speed-up wall / CPU | max Δp |",
                 "|---|---|---|---|---|---|"]
        for model, rows in bench.items():
            for r in rows:
                lines.append(f"| {model} | {r['n_pos']} | {_f(r['batched_s'], 1)} ({_f(r['batched_cpu_s'], 1)}) | "
                             f"{_f(r['per_stratum_s'], 1)} ({_f(r['per_stratum_cpu_s'], 1)}) | "
                             f"{_f(r['speedup_wall'], 2)} / {_f(r['speedup_cpu'], 2)} | {_g(r['max_prob_diff'])} |")
        parts.append("\n".join(lines))
    return "\n\n".join(parts)


def main(argv=None) -> int:
    """``python benchmarks/strace_summary.py RUN_DIR [RUN_DIR2] [--bench a.json b.json]``"""
    import argparse
    import json

    parser = argparse.ArgumentParser(description="Markdown summary of s-Trace dataset runs")
    parser.add_argument("runs", nargs="+", help="run directories written by interp-toolkit trace-dataset")
    parser.add_argument("--bench", nargs="*", default=(), help="JSON files written by benchmarks/strace_bench.py")
    parser.add_argument("--figures", default=None, help="also save the figures (PNG) into this directory")
    args = parser.parse_args(argv)
    runs = [DatasetResult.load(r) for r in args.runs]
    bench = {}
    for path in args.bench:
        with open(path) as f:
            bench.update(json.load(f))
    print(results_markdown(runs, bench or None))
    if args.figures:
        from pathlib import Path

        out = Path(args.figures)
        out.mkdir(parents=True, exist_ok=True)
        plots.plot_dataset_tv(runs).savefig(out / "strace_tv.png", dpi=110)
        for r in runs:
            name = r.config["model"]["name"]
            plots.plot_composition(r).savefig(out / f"strace_composition_{name}.png", dpi=110)
            plots.plot_entropy_auc(r).savefig(out / f"strace_entropy_auc_{name}.png", dpi=110)
        if len(runs) == 2:
            plots.plot_cross_model(*runs).savefig(out / "strace_cross_model.png", dpi=110)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
