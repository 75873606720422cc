"""Does a positional helix emerge when a GPT-2-style model learns its position embeddings?

Trains a small character-level GPT-2-style model (learned absolute positions) on the
bundled English texts for a CPU time budget, then looks for circular PC pairs (the
``circularity`` measure of ``interp_toolkit.geometry``) in
(a) the learned position embeddings ``W_pos`` and (b) the position-averaged residual
stream (``resid_post`` averaged over text windows and layers), before and after training.

    python benchmarks/geometry_helix.py --seconds 240 --n-ctx 128
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from interp_toolkit.geometry import InputSet, analyze, capture
from interp_toolkit.geometry.cli import default_texts_path, read_texts
from interp_toolkit.geometry.helix import char_corpus, position_embedding_grid, train_char_gpt2
from interp_toolkit.geometry.plots import pc_pairs

HERE = Path(__file__).resolve().parent / "geometry"


def _best(pairs: list[dict], explained=None) -> dict:
    b = max(pairs, key=lambda p: p["score"])
    out = {"best_pair": [b["i"] + 1, b["j"] + 1], **{k: round(b[k], 3) for k in ("score", "turns", "radius_cv",
                                                                                   "consistency")},
           "n_circular": sum(p["circular"] for p in pairs)}
    if explained is not None:
        out["explained_top6"] = [round(x, 3) for x in explained[:6]]
    return out


def helix_numbers(model, corpus, n_ctx: int, n_windows: int = 48) -> tuple[dict, object]:
    """Best PC pair of W_pos (all positions / from position 1) and of the position-averaged
    residual stream."""
    g = torch.Generator().manual_seed(1)
    starts = torch.randint(0, len(corpus) - n_ctx, (n_windows,), generator=g)
    tokens = torch.stack([corpus[s:s + n_ctx] for s in starts])
    with tempfile.TemporaryDirectory() as tmp:
        res = analyze(capture(model, InputSet(tokens, "text"), tmp, points=["resid_post"], progress=False))
    out = {}
    for first in (0, 1):
        w = position_embedding_grid(model, first_position=first)
        out["W_pos" if first == 0 else "W_pos_from_1"] = _best(w["pairs"], w["explained_ratio"])
    out["resid_post_avg"] = _best(res.grid["pairs"], res.grid["explained_ratio"])
    return out, res


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=240)
    p.add_argument("--n-ctx", type=int, default=128)
    p.add_argument("--n-layers", type=int, default=2)
    p.add_argument("--d-head", type=int, default=16)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="append the JSON record to this file")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    texts = read_texts(default_texts_path())
    corpus = char_corpus(texts)
    kw = dict(n_layers=args.n_layers, d_head=args.d_head, n_ctx=args.n_ctx, seed=args.seed)
    untrained, _ = train_char_gpt2(texts, seconds=0, progress=False, **kw)
    before, _ = helix_numbers(untrained, corpus, args.n_ctx)
    t0 = time.perf_counter()
    model, hist = train_char_gpt2(texts, seconds=args.seconds, **kw)
    after, res = helix_numbers(model, corpus, args.n_ctx)
    HERE.mkdir(exist_ok=True)
    res.grid = position_embedding_grid(model, first_position=1)
    pc_pairs(res).savefig(HERE / "helix_trained_W_pos.png", dpi=55)
    rec = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "args": vars(args),
           "corpus_chars": len(corpus), "train_seconds": round(time.perf_counter() - t0, 1), "steps": hist[-1][0],
           "loss_first_last": [round(hist[0][2], 3), round(hist[-1][2], 3)], "untrained": before, "trained": after}
    print(json.dumps(rec, indent=1))
    if args.out:
        with open(args.out, "a") as f:
            f.write(json.dumps(rec) + "\n")


if __name__ == "__main__":
    main()
