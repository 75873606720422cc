"""Circuit discovery as a sweep analysis (``interp-toolkit sweep circuit``): one task → one row.

Each input's text is a task name (``ioi``, ``greater-than``, …; see ``tasks.TASKS``), so a
sweep over tasks × models × seeds is an input file of task names, ``--model a,b`` and one
store per seed. The row holds, per method (aligned lists, in ``methods`` order), the
faithfulness ``f`` at every size, CPR = ∫ f and CMD = ∫ |1 − f| over the sizes (as
``evaluate.areas`` defines them), plus the scoring time and peak memory (run-dependent: the
columns ``method_time_s`` and ``peak_mem_mb``). The full ``CircuitResult`` is kept beside
the table as the artefact ``circuit.json`` (``load_result`` reads it). A task the model
cannot solve becomes a row with ``error`` set; the sweep goes on.
"""

from __future__ import annotations

import html

import numpy as np
import pandas as pd

from ..sweeps.registry import ItemOutput, register_analysis
from .evaluate import SELECTIONS, SIZES, check_sizes
from .methods import ABLATIONS, get_method
from .tasks import TASKS, TaskError, build_task

CIRCUIT_SETTINGS = {"methods": ["eap", "eap-ig-inputs", "random"], "n_prompts": 16, "sizes": list(SIZES),
                    "selection": "top_n", "ablation": "corrupt", "steps": 5, "exact_max_edges": 3000,
                    "exact_prompts": None, "greedy_steps": 32, "greedy_pool": 256, "min_accuracy": 0.8,
                    "template_accuracy": 0.6, "seed": 0}


def check_circuit_config(config: dict) -> dict:
    """The circuit sweep config with defaults (``CIRCUIT_SETTINGS``), validated: known methods,
    sizes in (0, 1], a known selection and ablation, positive counts."""
    bad = sorted(set(config) - set(CIRCUIT_SETTINGS))
    if bad:
        raise ValueError(f"unknown circuit sweep settings {bad}; known: {sorted(CIRCUIT_SETTINGS)}")
    cfg = {**CIRCUIT_SETTINGS, **config}
    methods = cfg["methods"]
    if isinstance(methods, str):
        methods = [m.strip() for m in methods.split(",") if m.strip()]
    if not methods:
        raise ValueError("methods: give at least one method")
    for m in methods:
        get_method(m)  # raises on an unknown name
    if cfg["selection"] not in SELECTIONS:
        raise ValueError(f"selection must be one of {list(SELECTIONS)}, not {cfg['selection']!r}")
    if cfg["ablation"] not in ABLATIONS:
        raise ValueError(f"ablation must be one of {list(ABLATIONS)}, not {cfg['ablation']!r}")
    for key in ("n_prompts", "steps", "exact_max_edges", "greedy_steps", "greedy_pool"):
        if int(cfg[key]) < 1:
            raise ValueError(f"{key} must be ≥ 1, got {cfg[key]}")
    for key in ("min_accuracy", "template_accuracy"):
        if not 0 < float(cfg[key]) <= 1:
            raise ValueError(f"{key} must lie in (0, 1], got {cfg[key]}")
    return {"methods": list(methods), "n_prompts": int(cfg["n_prompts"]),
            "sizes": [float(s) for s in check_sizes(cfg["sizes"])], "selection": cfg["selection"],
            "ablation": cfg["ablation"], "steps": int(cfg["steps"]), "exact_max_edges": int(cfg["exact_max_edges"]),
            "exact_prompts": None if cfg["exact_prompts"] is None else int(cfg["exact_prompts"]),
            "greedy_steps": int(cfg["greedy_steps"]), "greedy_pool": int(cfg["greedy_pool"]),
            "min_accuracy": float(cfg["min_accuracy"]), "template_accuracy": float(cfg["template_accuracy"]),
            "seed": int(cfg["seed"])}


def circuit_work(adapter, item, state=None) -> ItemOutput:
    """One task's circuit benchmark row (see the module docstring)."""
    from .discover import discover_circuit

    cfg = item.config
    task = item.text.strip()
    if task not in TASKS:
        raise TaskError(f"unknown task {task!r}; choose from {sorted(TASKS)}")
    data = build_task(adapter, task, n_prompts=cfg["n_prompts"], seed=cfg["seed"], min_accuracy=cfg["min_accuracy"],
                      template_accuracy=cfg["template_accuracy"])
    res = discover_circuit(adapter, data, cfg["methods"], seed=cfg["seed"], sizes=cfg["sizes"],
                           selection=cfg["selection"], ablation=cfg["ablation"], steps=cfg["steps"],
                           exact_max_edges=cfg["exact_max_edges"], exact_prompts=cfg["exact_prompts"],
                           greedy_steps=cfg["greedy_steps"], greedy_pool=cfg["greedy_pool"],
                           max_batch_tokens=item.options.get("max_batch_tokens", 2048), n_attention_heads=0)
    ms = res.methods
    row = {"task": res.task, "n_prompts": res.n_prompts, "accuracy": float(data.accuracy),
           "templates_kept": [int(t) for t in data.kept_templates],
           "n_edges": int(res.meta["n_edges"]), "methods": ms, "sizes": list(res.sizes),
           "f": [[float(x) for x in res.curves[m]["f"]] for m in ms],
           "cpr": [float(res.curves[m]["cpr"]) for m in ms], "cmd": [float(res.curves[m]["cmd"]) for m in ms],
           "m_full": float(res.curves[ms[0]]["m_full"]), "m_empty": float(res.curves[ms[0]]["m_empty"]),
           "method_time_s": [float(res.time_s[m]) for m in ms], "peak_mem_mb": [float(res.peak_mem_mb[m]) for m in ms]}
    return ItemOutput(row, {"circuit.json": res.to_json().encode("utf-8")})


def _long(table: pd.DataFrame) -> pd.DataFrame:
    """One line per (model, task, method) from the successful rows."""
    ok = table[table["error"].isna()]
    recs = []
    for _, r in ok.iterrows():
        for i, m in enumerate(r["methods"]):
            recs.append({"model": r["model"], "task": r["task"], "method": m, "cpr": r["cpr"][i],
                         "cmd": r["cmd"][i], "time_s": r["method_time_s"][i], "peak_mem_mb": r["peak_mem_mb"][i]})
    return pd.DataFrame(recs, columns=["model", "task", "method", "cpr", "cmd", "time_s", "peak_mem_mb"])


def summarize_circuits(table: pd.DataFrame) -> dict:
    """Per model and task: CPR, CMD, time and peak memory per method (means over rows), and the
    method with the highest CPR and the one with the lowest CMD."""
    long = _long(table)
    out: dict = {}
    for (model, task), g in long.groupby(["model", "task"], sort=False):
        per = g.groupby("method", sort=False)[["cpr", "cmd", "time_s", "peak_mem_mb"]].mean()
        out.setdefault(model, {})[task] = {
            "methods": {m: {k: round(float(v), 4) for k, v in per.loc[m].items()} for m in per.index},
            "best_cpr": str(per["cpr"].idxmax()), "best_cmd": str(per["cmd"].idxmin())}
    errors = table[table["error"].notna()]
    if len(errors):
        out["rejected"] = {f"{r['model']}/{r['input_id']}": r["error"] for _, r in errors.iterrows()}
    return out


def report_circuits(table: pd.DataFrame, path, command: str | None = None):
    """An offline page: per model × task, CPR/CMD/time/memory per method and the faithfulness
    curves of every method."""
    from ..core import Page, html_table, img_tag
    from ..core.figures import new_figure

    page = Page("Circuit discovery sweep")
    if command:
        page.add(f"<pre>{html.escape(command)}</pre>")
    page.section("How to read", "<p>CPR = area under the faithfulness curve f(size) (higher is better); CMD = "
                 "area under |1 − f| (lower is better); f = (m(C) − m(∅)) / (m(M) − m(∅)), m the task metric "
                 "(logit difference), C the circuit, ∅ the empty circuit, M the full model.</p>")
    ok = table[table["error"].isna()]
    for _, r in ok.iterrows():
        rows = [[m, r["cpr"][i], r["cmd"][i], r["method_time_s"][i], r["peak_mem_mb"][i]]
                for i, m in enumerate(r["methods"])]
        fig, ax = new_figure(figsize=(5.5, 3.2))
        for i, m in enumerate(r["methods"]):
            ax.plot(r["sizes"], r["f"][i], marker="o", ms=3, label=m)
        ax.set_xscale("log")
        ax.axhline(1.0, color="grey", lw=0.6, ls=":")
        ax.set_xlabel("circuit size (fraction of edges)")
        ax.set_ylabel("faithfulness f")
        ax.legend(fontsize=7)
        page.section(f"{r['model']} — {r['task']} ({r['n_prompts']} prompts, accuracy {r['accuracy']:.0%})",
                     html_table(["method", "CPR", "CMD", "time (s)", "peak MB"], rows, left=(0,)),
                     img_tag(fig, f"faithfulness curves, {r['task']}"))
    bad = table[table["error"].notna()]
    if len(bad):
        page.section("Rejected inputs", html_table(["model", "input", "error"],
                                                   [[r["model"], r["input_id"], r["error"]] for _, r in bad.iterrows()],
                                                   left=(0, 1, 2)))
    return page.write(path)


def circuit_from_artefact(blob: bytes):
    """The ``CircuitResult`` stored as an item's ``circuit.json`` artefact."""
    from ..core import loads_result

    return loads_result(blob.decode("utf-8"), "circuit.json")


register_analysis("circuit", circuit_work, check_config=check_circuit_config, summarize=summarize_circuits,
                  report=report_circuits, bad_input=(TaskError,),
                  help="circuit discovery per task: CPR/CMD of each edge-scoring method")
