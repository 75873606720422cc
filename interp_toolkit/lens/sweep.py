"""The lens as a sweep analysis (``interp-toolkit sweep lens``): one prompt → one row.

The row decodes the last position of every layer with the logit lens (``run_lens``): the
layer's top-1 token and its probability, the rank of the output's top-1 token and
KL(output ‖ lens) per layer, and the decision layer: the first layer from which the lens's
top-1 equals the output's top-1 at every later layer. ``summarize_lens`` averages them per
model.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..sweeps.registry import register_analysis
from .decode import run_lens
from .lenses import SITES

LENS_SETTINGS = {"site": "resid_post", "k": 5}


def check_lens_config(config: dict) -> dict:
    """The lens sweep config with defaults: ``site`` (resid_pre/mid/post) and ``k`` (top-k kept)."""
    bad = sorted(set(config) - set(LENS_SETTINGS))
    if bad:
        raise ValueError(f"unknown lens sweep settings {bad}; known: {sorted(LENS_SETTINGS)}")
    cfg = {**LENS_SETTINGS, **config}
    if cfg["site"] not in SITES:
        raise ValueError(f"site must be one of {list(SITES)}, not {cfg['site']!r}")
    if int(cfg["k"]) < 1:
        raise ValueError(f"k must be ≥ 1, got {cfg['k']}")
    return {"site": cfg["site"], "k": int(cfg["k"]), "seed": 0}


def decision_layer(top1: np.ndarray, final: int) -> int:
    """First index l with ``top1[l:] == final`` everywhere (``len(top1)`` when the last differs)."""
    agree = np.asarray(top1) == final
    wrong = np.flatnonzero(~agree)
    return 0 if len(wrong) == 0 else int(wrong[-1]) + 1


def lens_work(adapter, item, state=None) -> dict:
    """One prompt's logit-lens row (see the module docstring)."""
    cfg = item.config
    r = run_lens(adapter, item.text, site=cfg["site"], positions="last", k=cfg["k"], progress=False)
    top1 = r.top_ids[0, :, 0, 0]
    final = int(r.out_top_ids[0, 0, 0])
    return {"n_tokens": len(r.tokens[0]), "layers": list(r.layers), "top1": top1.tolist(),
            "top1_prob": r.top_probs[0, :, 0, 0].tolist(), "out_rank": r.out_rank[0, :, 0].tolist(),
            "kl": r.kl[0, :, 0].tolist(), "final_top1": final, "final_prob": float(r.out_top_probs[0, 0, 0]),
            "decision_layer": decision_layer(top1, final)}


def summarize_lens(table: pd.DataFrame) -> dict:
    """Per model: prompts, mean KL per layer, mean decision layer as a fraction of depth."""
    ok = table[table["error"].isna()]
    out = {}
    for model, rows in ok.groupby("model", sort=False):
        kl = np.stack([np.asarray(k, dtype=float) for k in rows["kl"]])
        n_layers = kl.shape[1]
        out[model] = {"prompts": len(rows), "kl_mean_per_layer": kl.mean(0).round(4).tolist(),
                      "decision_depth_mean": float(np.mean(rows["decision_layer"]) / n_layers)}
    return out


register_analysis("lens", lens_work, check_config=check_lens_config, summarize=summarize_lens,
                  help="logit lens of each prompt's last position, layer by layer")
