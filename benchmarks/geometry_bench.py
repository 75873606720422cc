"""Latent-geometry benchmark: capture + streaming PCA cost, and the paper's findings on a model.

    # cost of capture + PCA (every point, every layer) for N × L tokens, float16 shards
    flock /tmp/itk-real.lock python benchmarks/geometry_bench.py cost --model smollm2-135m --n-seq 64 --seq-len 256
    # findings on real texts (separability per layer, position-0 ratio, PC pairs), report + figures
    flock /tmp/itk-real.lock python benchmarks/geometry_bench.py findings --model smollm2-135m --n-texts 64

``cost`` packs the bundled English texts into one token stream and cuts N windows of L
tokens from it (windows overlap when the corpus is shorter than N × L: fine for timing).
Peak memory is the process's maximum resident set (``ru_maxrss``), read after each phase.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from interp_toolkit import load_model
from interp_toolkit.adapter import as_adapter
from interp_toolkit.geometry import InputSet, analyze, capture, pca_of_store, selection
from interp_toolkit.geometry.cli import default_texts_path, read_texts
from interp_toolkit.geometry.points import keys

HERE = Path(__file__).resolve().parent / "geometry"


def rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20


def packed_windows(adapter, n_seq: int, seq_len: int) -> tuple[torch.Tensor, bool]:
    texts = read_texts(default_texts_path())
    stream = torch.tensor(adapter.tokenizer(" ".join(texts), add_special_tokens=False)["input_ids"])
    if len(stream) < seq_len:
        raise SystemExit(f"the corpus has {len(stream)} tokens, fewer than seq_len={seq_len}")
    starts = np.linspace(0, len(stream) - seq_len, n_seq).round().astype(int)
    return torch.stack([stream[s:s + seq_len] for s in starts]), len(stream) < n_seq * seq_len


def cost(args) -> dict:
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    model = load_model(args.model)
    a = as_adapter(model)
    out = {"model": args.model, "n_seq": args.n_seq, "seq_len": args.seq_len, "threads": args.threads,
           "load_s": time.perf_counter() - t0, "rss_after_load_gib": rss_gib()}
    tokens, overlap = packed_windows(a, args.n_seq, args.seq_len)
    out["windows_overlap"] = overlap
    layers = None if args.layers is None else [int(x) for x in args.layers.split(",")]
    tmp = Path(args.capture_dir or tempfile.mkdtemp(prefix="itk-geom-bench-", dir=args.work_dir))
    try:
        t0 = time.perf_counter()
        store = capture(a, InputSet(tokens, "text"), tmp, layers=layers, max_batch_tokens=args.max_batch_tokens,
                        dtype="float16", progress=sys.stderr.isatty())
        out["capture_s_this_run"] = time.perf_counter() - t0
        out["capture_s"] = store.manifest["capture_seconds"]  # summed over resumed runs
        out["rss_after_capture_gib"] = rss_gib()
        out["disk_gib"] = sum(f.stat().st_size for f in tmp.iterdir()) / 2 ** 30
        out["n_tensors_per_shard"] = len(keys(store.points, store.layers))
        out["residual_error"] = store.residual_error()
        t0 = time.perf_counter()
        sel = selection(store, ["attn_out", "mlp_out", "resid_post"], None, positions=1)
        pca = pca_of_store(store, sel, min(50, a.d_model))
        out["pca_s"] = time.perf_counter() - t0
        out["pca_rows"] = pca.n_samples
        out["pca_top5_ratio"] = pca.explained_variance_ratio[:5].round(4).tolist()
        out["rss_after_pca_gib"] = rss_gib()
    finally:
        if not args.capture_dir:
            shutil.rmtree(tmp, ignore_errors=True)
    return out


def findings(args) -> dict:
    torch.set_num_threads(args.threads)
    model = load_model(args.model)
    a = as_adapter(model)
    texts = read_texts(default_texts_path())[: args.n_texts]
    from interp_toolkit.geometry import make_inputs

    res = {}
    for mode in args.modes.split(","):
        kw = {"texts": texts} if mode in ("text", "permute") else {}
        if mode == "repeat":
            lo = min(1000, a.cfg.d_vocab // 2)
            kw["token_ids"] = list(range(lo, a.cfg.d_vocab, max(1, (a.cfg.d_vocab - lo) // 32)))[:32]
            kw["seq_len"] = 32
        inputs = make_inputs(a, mode, **kw, seed=0)
        t0 = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="itk-geom-", dir=args.work_dir) as tmp:
            store = capture(a, inputs, tmp, points=["attn_out", "mlp_out", "resid_post"], dtype="float32",
                            progress=sys.stderr.isatty())
            r = analyze(store)
        name = f"{args.model}_{mode}"
        if mode == "text":  # the other modes' numbers go to the record only
            r.save(HERE / f"{name}.json")
            for kind in ("separability", "attn_mlp", "pc_pairs", "norms_by_position"):
                r.plot(kind).savefig(HERE / f"{name}_{kind}.png", dpi=60)
        s = r.separability
        res[mode] = {"n_seq": r.n_seq, "seq_len": r.seq_len, "seconds": time.perf_counter() - t0,
                     "residual_error": r.residual_error,
                     "probe_accuracy": np.round(s["probe_accuracy"], 3).tolist(),
                     "silhouette": np.round(s["silhouette"], 3).tolist(),
                     "silhouette_pca2": np.round(s["silhouette_pca2"], 3).tolist(),
                     "pos0_ratio_resid_post": np.round(r.pos0_ratio("resid_post"), 2).tolist(),
                     "helix": r.helix}
        print(mode, r.summary(), flush=True)
    return res


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("what", choices=("cost", "findings"))
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--n-seq", type=int, default=64)
    p.add_argument("--seq-len", type=int, default=256)
    p.add_argument("--layers", default=None, help="comma-separated blocks (default all)")
    p.add_argument("--n-texts", type=int, default=64)
    p.add_argument("--modes", default="text,permute,repeat")
    p.add_argument("--max-batch-tokens", type=int, default=2048)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--work-dir", default=None, help="where the temporary shards go")
    p.add_argument("--capture-dir", default=None,
                   help="cost: capture here and keep it (a run cut short resumes on the next call)")
    p.add_argument("--out", default=None, help="append the JSON record to this file")
    args = p.parse_args(argv)
    HERE.mkdir(exist_ok=True)
    rec = {"what": args.what, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
           **(cost(args) if args.what == "cost" else findings(args))}
    print(json.dumps(rec, indent=1, default=str))
    if args.out:
        with open(args.out, "a") as f:
            f.write(json.dumps(rec, default=str) + "\n")


if __name__ == "__main__":
    main()
