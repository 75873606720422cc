"""Interactions as a sweep: one item = one prompt in one model → values v(x_S) for all 2^n
subsets and their separate AND-OR sparsification; the cross-model figures (sharing, joint
extraction, order and cancellation) are computed afterwards from the stored rows
(``summarize_interactions``).

Config (``check_interactions_config``): ``n`` players (the last n content words), ``baseline``
(a fixed kind, or ``"learned"``: one baseline per model, learned once per worker on the first
``baseline_prompts`` inputs with ``baseline_epochs`` epochs from ``baseline_init``, seeded by
``seed``), ``method`` (sparsification), ``relative`` (v − v(∅)). The target is each model's
argmax next token; prompts are compared across models only where those are the same word.
"""

from __future__ import annotations

import html
import json

import numpy as np
import pandas as pd

from . import analysis
from .baselines import fixed_baseline, learn_baseline
from .joint import joint_sparsify
from .pipeline import _target_text, same_word
from .players import MAX_PLAYERS, STOPWORDS, PlayerError, Players
from .result import Sparsification
from .sparsify import sparsify
from .values import resolve_target, subset_values

FIXED_BASELINES = ("pad", "unk", "zero", "mean", "bos")
DEFAULTS = {"n": 8, "baseline": "pad", "method": "lp", "relative": True, "seed": 0,
            "baseline_prompts": 8, "baseline_epochs": 3, "baseline_init": "pad"}


def check_interactions_config(config: dict) -> dict:
    bad = sorted(set(config) - set(DEFAULTS))
    if bad:
        raise ValueError(f"unknown interactions sweep settings {bad}; known: {sorted(DEFAULTS)}")
    cfg = {**DEFAULTS, **config}
    if not (1 <= int(cfg["n"]) <= MAX_PLAYERS):
        raise ValueError(f"n must be in 1..{MAX_PLAYERS}, not {cfg['n']}")
    b = cfg["baseline"]
    if b != "learned" and b not in FIXED_BASELINES and not str(b).startswith("token:"):
        raise ValueError(f"baseline must be learned, token:<id> or one of {FIXED_BASELINES}, not {b!r}")
    if cfg["method"] not in ("auto", "lp", "pdhg", "adam", "sgd"):
        raise ValueError(f"unknown sparsification method {cfg['method']!r}")
    for k in ("n", "seed", "baseline_prompts", "baseline_epochs"):
        cfg[k] = int(cfg[k])
    cfg["relative"] = bool(cfg["relative"])
    return cfg


def _players(adapter, text: str, n: int):
    toks = Players.from_prompt(text, n=n).tokens_for(adapter)
    return toks, resolve_target(adapter, toks, None)


def prepare_baseline(adapter, config: dict, inputs):
    """The model's baseline, once per worker: a fixed kind, or learned on the first inputs."""
    if config["baseline"] != "learned":
        return fixed_baseline(adapter, config["baseline"])
    samples = []
    for _, text in inputs:
        if len(samples) == config["baseline_prompts"]:
            break
        try:
            samples.append(_players(adapter, text, config["n"]))
        except PlayerError:
            continue
    if not samples:
        raise ValueError("no input yields players to learn the baseline on")
    return learn_baseline(adapter, samples, init=config["baseline_init"], epochs=config["baseline_epochs"],
                          seed=config["seed"], progress=False)


def interactions_work(adapter, item, baseline) -> dict:
    """One prompt in one model: target, players, v(x_S) and the separate sparsification."""
    import time

    cfg = item.config
    players = Players.from_prompt(item.text, n=cfg["n"])
    toks = players.tokens_for(adapter)
    target = resolve_target(adapter, toks, None)
    t0 = time.perf_counter()
    v_raw = subset_values(adapter, toks, target, baseline.vector,
                          max_batch_tokens=item.options.get("max_batch_tokens"))
    t1 = time.perf_counter()
    v = v_raw - v_raw[0] if cfg["relative"] else v_raw
    sp = sparsify(v, method=cfg["method"])
    return {"target": _target_text(adapter, target), "target_id": int(target), "players": players.texts,
            "n_players": int(toks.n), "n_tokens": len(toks.tokens), "v_empty": float(v_raw[0]),
            "v": v.tolist(), "i_and": np.asarray(sp.i_and).tolist(), "i_or": np.asarray(sp.i_or).tolist(),
            "l1": float(sp.l1), "sparsify_method": sp.method, "baseline": baseline.kind,
            "values_s": t1 - t0, "sparsify_s": float(sp.seconds)}


def matched_prompts(table: pd.DataFrame, models: list[str] | None = None) -> pd.DataFrame:
    """Inputs on which every model has a row without error, the same target word (not a
    function word) and the same players: one row per input, columns ``<field>@<model>``."""
    ok = table[table["error"].isna()] if "error" in table else table
    models = models or list(dict.fromkeys(ok["model"]))
    wide = None
    for m in models:
        t = ok[ok["model"] == m].set_index("input_id")[["index", "text", "target", "players", "v", "i_and", "i_or"]]
        t = t.add_suffix(f"@{m}")
        wide = t if wide is None else wide.join(t, how="inner")
    if wide is None or not len(wide):
        return pd.DataFrame()
    first = models[0]
    keep = [all(same_word(r[f"target@{first}"], r[f"target@{m}"]) and
                list(r[f"players@{first}"]) == list(r[f"players@{m}"]) for m in models[1:])
            and r[f"target@{first}"].strip().lower() not in STOPWORDS for _, r in wide.iterrows()]
    return wide[keep].sort_values(f"index@{first}")


def summarize_interactions(table: pd.DataFrame, tau_rel: float = analysis.TAU_REL, joint: bool = True) -> dict:
    """Per model: prompts and mean L1; for the first two models, on matched prompts, the
    pooled sharing figures of the separate and (``joint``) the joint extraction
    (``analysis.aggregate``), as the interactions benchmark reports them."""
    models = list(dict.fromkeys(table["model"]))
    ok = table[table["error"].isna()]
    out = {"models": models, "per_model": {m: {"rows": int((table["model"] == m).sum()),
                                               "ok": int((ok["model"] == m).sum()),
                                               "l1_mean": float(ok[ok["model"] == m]["l1"].mean())}
                                           for m in models}}
    if len(models) < 2:
        return out
    pair = models[:2]
    wide = matched_prompts(table, pair)
    out["prompts"] = [r[f"text@{pair[0]}"] for _, r in wide.iterrows()]
    out["targets"] = [r[f"target@{pair[0]}"] for _, r in wide.iterrows()]
    if len(wide) == 0:
        return out
    pairs = [tuple((np.asarray(r[f"i_and@{m}"]), np.asarray(r[f"i_or@{m}"])) for m in pair) for _, r in wide.iterrows()]
    out["separate"] = analysis.aggregate(pairs, tau_rel)
    if joint:
        jp = []
        for _, r in wide.iterrows():
            j = joint_sparsify(np.stack([np.asarray(r[f"v@{m}"], dtype=np.float64) for m in pair]), method="lp")
            jp.append((j[0], j[1]))
        out["joint"] = analysis.aggregate(jp, tau_rel)
    return out


def sparsification_of(row) -> Sparsification:
    """The stored separate sparsification of one row (γ and q are not stored: zeros)."""
    a, o = np.asarray(row["i_and"], dtype=np.float64), np.asarray(row["i_or"], dtype=np.float64)
    cfg = json.loads(row["config"]) if isinstance(row.get("config"), str) else {}
    return Sparsification(a, o, np.zeros_like(a), np.zeros_like(a), float(row["l1"]),
                          row.get("sparsify_method", cfg.get("method", "")), float("nan"))


def report_interactions(table: pd.DataFrame, path, command: str | None = None):
    """An offline page: per-model table, and for two models the pooled order distribution and
    cancellation of shared vs non-shared interactions (separate and joint extraction)."""
    from ..core import Page, html_table, img_tag
    from .plots import plot_aggregate

    s = summarize_interactions(table)
    page = Page("Interactions sweep")
    if command:
        page.add(f"<pre>{html.escape(command)}</pre>")
    page.section("Models", html_table(["model", "rows", "ok", "mean L1"],
                                      [[m, d["rows"], d["ok"], d["l1_mean"]] for m, d in s["per_model"].items()],
                                      left=(0,)))
    for key in ("separate", "joint"):
        if key in s:
            agg = s[key]
            page.section(f"{key} extraction ({agg['n_prompts']} matched prompts)",
                         html_table(["metric", "mean", "median"],
                                    [[k, agg["mean"][k], agg["median"][k]] for k in agg["mean"]], left=(0,)),
                         img_tag(plot_aggregate(agg, title=f"{key} extraction — " + " vs ".join(s["models"][:2])),
                                 f"{key} extraction"))
    return page.write(path)


def _register_sweep() -> None:
    from ..sweeps.registry import register_analysis

    register_analysis("interactions", interactions_work, prepare=prepare_baseline,
                      check_config=check_interactions_config, summarize=summarize_interactions,
                      report=report_interactions, bad_input=(PlayerError,), help="AND-OR interactions per prompt and model")


_register_sweep()
