"""Benchmark of the batched masked forward against per-mask hook loops and TransformerLens patching.

One command (from the repository root)::

    .venv/bin/python benchmarks/bench_engine.py                    # SmolLM2, CPU, ~10 min
    .venv/bin/python benchmarks/bench_engine.py --quick            # smaller grid
    .venv/bin/python benchmarks/bench_engine.py --device cuda --random-weights

``--random-weights`` builds the same architecture from its config with random weights (no
download, no weight file: GPU timing does not need trained weights). Results are printed and
appended as a Markdown section to ``benchmarks/RESULTS.md`` (``--no-write`` to skip).

What is measured (masks per second; a "mask" is one batch row = one masked forward):
  1. K random masks (K = 1, 8, 64, 256) of three kinds — whole heads (pattern [head,1,1] per
     layer), whole MLPs (mlp_out per layer), attention edges (pattern [head,dest,src] per
     layer), each component kept with probability 0.9 — on a ``--seq``-token prompt:
     (a) ``masked_forward``; (b) a plain loop of ``run_with_hooks``, one mask per forward,
     as usually written (full logits) and decoding only the last position like the kernel;
     (c) the unmasked batched forward of the same shape and chunking (the ceiling: the
     masking overhead is kernel time / ceiling time). Peak memory: RSS growth during the call
     on CPU (sampled every 5 ms, after ``malloc_trim``; the model's weights are not counted),
     ``torch.cuda.max_memory_allocated`` growth on GPU.
  2. TransformerLens's patching functions where they apply (single-component patches: one
     head's output at all positions, one MLP at one position, one attention edge) against
     the same patches as masks with the clean cache as reference.
  3. Scaling with the prompt length; 4. prefix reuse (masks confined to late layers; a
     patching sweep); 5. the kernel's ``max_batch_tokens`` budget.
Per-row loops cost the same per row whatever K, so they are timed on ``--loop-rows`` rows and
reported as a rate. Compared functions are timed interleaved, and the minimum over repeats is
kept (robust to other jobs on the machine).
"""

from __future__ import annotations

import argparse
import datetime
import math
import os
import platform
import shlex
import subprocess
import sys
import threading
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from interp_toolkit.adapter import ModelAdapter  # noqa: E402
from interp_toolkit.engine import DEFAULT_MAX_BATCH_TOKENS, MaskSpec, Reference, masked_forward  # noqa: E402
from interp_toolkit.engine.metrics import LogitDiff  # noqa: E402

# SmolLM2-135M's architecture (its config.json), for --random-weights without the weight package
SMOLLM2_CONFIG = dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
                      num_key_value_heads=3, head_dim=64, vocab_size=49152, max_position_embeddings=8192,
                      rms_norm_eps=1e-5, hidden_act="silu", rope_parameters={"rope_theta": 100000.0,
                                                                             "rope_type": "default"},
                      tie_word_embeddings=True)

TEXT = ("The quick brown fox jumps over the lazy dog while the children in the park watch and laugh. "
        "Meanwhile, scientists at the university announced a new method for measuring the distance "
        "to faraway galaxies, which could change how astronomers think about the expansion of the "
        "universe and the nature of dark energy in the coming decades of research.")


# ---------------------------------------------------------------------------- setup
def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--device", default="cpu")
    p.add_argument("--random-weights", action="store_true",
                   help="same architecture from its config, random weights (for GPU timing)")
    p.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    p.add_argument("--ks", default="1,8,64,256")
    p.add_argument("--seq", type=int, default=32)
    p.add_argument("--seq-lens", default="16,32,64,128")
    p.add_argument("--budgets", default="512,1024,2048,4096,8192")
    p.add_argument("--loop-rows", type=int, default=12, help="rows timed for the per-mask loops")
    p.add_argument("--min-time", type=float, default=1.5, help="repeat a measurement until this many s")
    p.add_argument("--max-repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    p.add_argument("--quick", action="store_true", help="K up to 64, fewer lengths and budgets")
    p.add_argument("--out", default=str(REPO / "benchmarks" / "RESULTS.md"))
    p.add_argument("--no-write", action="store_true")
    args = p.parse_args(argv)
    if args.quick:  # smaller defaults (explicit values win)
        for name, value in (("ks", "1,8,64"), ("seq_lens", "16,64"), ("budgets", "1024,2048,4096")):
            if getattr(args, name) == p.get_default(name):
                setattr(args, name, value)
    args.ks = [int(k) for k in args.ks.split(",")]
    args.seq_lens = [int(t) for t in args.seq_lens.split(",")]
    args.budgets = [int(b) for b in args.budgets.split(",")]
    return args


def build_model(args):
    dtype = getattr(torch, args.dtype)
    if not args.random_weights:
        from interp_toolkit.models import load_model

        return load_model(args.model, device=args.device, dtype=dtype, progress=False)
    if args.model.startswith("tiny-random"):
        from interp_toolkit.models import load_model

        return load_model(args.model, device=args.device, dtype=dtype)
    if args.model != "smollm2-135m":
        raise SystemExit("--random-weights knows the architecture of smollm2-135m (and tiny-random-*) only")
    from transformer_lens import HookedTransformer
    from transformers import LlamaConfig

    from interp_toolkit.models.hooked import llama_config_from_hf

    cfg = llama_config_from_hf(LlamaConfig(**SMOLLM2_CONFIG), device=args.device, dtype=dtype,
                               default_prepend_bos=False)
    cfg.init_weights = True
    torch.manual_seed(0)
    model = HookedTransformer(cfg)
    model.eval()
    model.interp_meta = {"name": f"{args.model} (random weights)"}
    return model


def prompt(adapter: ModelAdapter, n: int) -> torch.Tensor:
    if adapter.tokenizer is not None:
        ids = adapter.to_tokens(TEXT, prepend_bos=False)[0]
        while ids.shape[0] < n:
            ids = torch.cat([ids, ids])
        return ids[:n].to(adapter.device)
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, adapter.d_vocab, (n,), generator=g).to(adapter.device)


def sync(device):
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


class PeakMemory:
    """Peak memory growth during a block: CUDA allocator stats, or sampled process RSS."""

    def __init__(self, device):
        self.cuda = str(device).startswith("cuda")
        self.peak = 0

    def __enter__(self):
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.start = torch.cuda.memory_allocated()
        else:
            _trim()  # hand freed heap back to the OS so RSS growth shows this block's peak
            self.start = _rss()
            self.max = self.start
            self.stop = False

            def sample():
                while not self.stop:
                    self.max = max(self.max, _rss())
                    time.sleep(0.005)

            self.thread = threading.Thread(target=sample, daemon=True)
            self.thread.start()
        return self

    def __exit__(self, *exc):
        if self.cuda:
            torch.cuda.synchronize()
            self.peak = torch.cuda.max_memory_allocated() - self.start
        else:
            self.stop = True
            self.thread.join()
            self.peak = max(self.max, _rss()) - self.start


def _trim() -> None:
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _rss() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        import psutil

        return psutil.Process().memory_info().rss


def measure(fns: dict, args, device) -> dict[str, tuple[float, float, int]]:
    """Time several functions interleaved (a, b, a, b, ...: load changes hit all alike) and
    return per function (minimum wall seconds per call, minimum CPU seconds of this process
    per call, peak memory growth of its first call). Calls repeat up to ``--max-repeats``
    times while a round takes under ``--min-time``·2.

    CPU time leaves out the time spent waiting for a core, so on a shared machine its ratios
    are steadier than wall-clock ones (with one torch thread it is the work itself)."""
    times = {k: [] for k in fns}
    cpu = {k: [] for k in fns}
    peaks = {}
    while True:
        t_round = 0.0
        for name, fn in fns.items():
            with PeakMemory(device) as mem:
                sync(device)
                t0, c0 = time.perf_counter(), time.process_time()
                fn()
                sync(device)
                dt, dc = time.perf_counter() - t0, time.process_time() - c0
            times[name].append(dt)
            cpu[name].append(dc)
            t_round += dt
            peaks.setdefault(name, mem.peak)
        n = len(next(iter(times.values())))
        if n >= args.max_repeats or (n >= 2 and t_round > 2 * args.min_time) or t_round > 8 * args.min_time:
            break
    return {k: (min(v), min(cpu[k]), peaks[k]) for k, v in times.items()}


# ---------------------------------------------------------------------------- masks
def random_keeps(kind: str, K: int, adapter: ModelAdapter, T: int, layers=None, seed=0) -> dict[int, torch.Tensor]:
    """layer -> keep [K, ...] for one mask kind (each component kept with probability 0.9)."""
    g = torch.Generator().manual_seed(seed)
    H = adapter.n_heads
    layers = range(adapter.n_layers) if layers is None else layers
    shape = {"heads": (H, 1, 1), "mlps": (1,), "edges": (H, T, T)}[kind]
    return {l: torch.rand(K, *shape, generator=g) < 0.9 for l in layers}


def spec_of(kind: str, keeps: dict[int, torch.Tensor]) -> MaskSpec:
    site = "mlp_out" if kind == "mlps" else "pattern"
    K = next(iter(keeps.values())).shape[0]
    spec = MaskSpec(K)
    for l, k in keeps.items():
        spec.set(site, l, k)
    return spec


@torch.no_grad()
def hook_loop(adapter: ModelAdapter, tokens, kind: str, keeps: dict[int, torch.Tensor], rows: int, last_only: bool):
    """One run_with_hooks per mask, hooks written by hand (what one would do without the engine)."""
    model = adapter.model
    site = "mlp_out" if kind == "mlps" else "pattern"
    for r in range(rows):
        hooks = []
        for l, k in keeps.items():
            m = k[r].to(device=adapter.device, dtype=adapter.dtype)

            def hook(x, hook, m=m):
                return x * m

            hooks.append((adapter.hook_name(site, l), hook))
        if last_only:
            resid = model.run_with_hooks(tokens[None], fwd_hooks=hooks, stop_at_layer=adapter.n_layers,
                                         return_type=None)
            adapter.logits_from_resid(resid[:, -1])
        else:
            model.run_with_hooks(tokens[None], fwd_hooks=hooks)


@torch.no_grad()
def ceiling(adapter: ModelAdapter, tokens, K: int, budget: int):
    """The unmasked batched forward of the same shape and chunking, no hooks, keeping the
    last-position logits of every row (as the kernel returns them)."""
    T = tokens.shape[0]
    per = max(1, budget // T)
    out = torch.empty(K, adapter.d_vocab, device=adapter.device, dtype=adapter.dtype)
    for i in range(0, K, per):
        b = min(per, K - i)
        resid = adapter.model(tokens[None].expand(b, -1), stop_at_layer=adapter.n_layers, return_type=None)
        out[i:i + b] = adapter.logits_from_resid(resid[:, -1])
    return out


# ---------------------------------------------------------------------------- sections
def fmt_rate(x):
    return f"{x:,.1f}" if x < 100 else f"{x:,.0f}"


def mb(x):
    return f"{x / 2**20:,.0f}"


def section_masks(adapter, args, out):
    tokens = prompt(adapter, args.seq)
    budget = DEFAULT_MAX_BATCH_TOKENS
    out.append(f"\n### 1. K random masks, {args.seq}-token prompt (max_batch_tokens={budget})\n")
    out.append("Rates from wall-clock time; *CPU* columns give the same ratios from this process's CPU time.\n")
    out.append("| kind | K | kernel masks/s | unmasked batched masks/s | overhead (CPU) | loop masks/s (full logits) "
               "| loop masks/s (last pos.) | kernel ÷ loop, full / last (CPU) | peak MB kernel / unmasked / loop |")
    out.append("|---|---|---|---|---|---|---|---|---|")
    summary = {}
    for kind in ("heads", "mlps", "edges"):
        keeps_all = random_keeps(kind, max(args.ks), adapter, args.seq)
        # warm-up (allocator, kernels)
        masked_forward(adapter, tokens, spec_of(kind, {l: k[:2] for l, k in keeps_all.items()}))
        n_loop = args.loop_rows
        r = measure({"full": lambda: hook_loop(adapter, tokens, kind, keeps_all, n_loop, False),
                     "last": lambda: hook_loop(adapter, tokens, kind, keeps_all, n_loop, True)}, args, adapter.device)
        (t_loop, c_loop, m_loop), (t_loop_last, c_loop_last, _) = r["full"], r["last"]
        loop_rate, loop_last_rate = n_loop / t_loop, n_loop / t_loop_last
        for K in args.ks:
            spec = spec_of(kind, {l: k[:K] for l, k in keeps_all.items()})
            r = measure({"kernel": lambda: masked_forward(adapter, tokens, spec, progress=False),
                         "ceiling": lambda: ceiling(adapter, tokens, K, budget)}, args, adapter.device)
            (t_k, c_k, m_k), (t_c, c_c, m_c) = r["kernel"], r["ceiling"]
            rate = K / t_k
            cpu_speed = (c_loop / n_loop) / (c_k / K), (c_loop_last / n_loop) / (c_k / K)
            summary[(kind, K)] = dict(kernel=rate, ceiling=K / t_c, overhead=t_k / t_c, loop=loop_rate,
                                      loop_last=loop_last_rate, overhead_cpu=c_k / c_c, speedup_cpu=cpu_speed)
            out.append(f"| {kind} | {K} | {fmt_rate(rate)} | {fmt_rate(K / t_c)} | {t_k / t_c:.2f}× "
                       f"({c_k / c_c:.2f}×) | {fmt_rate(loop_rate)} | {fmt_rate(loop_last_rate)} | "
                       f"{rate / loop_rate:.1f}× / {rate / loop_last_rate:.1f}× ({cpu_speed[0]:.1f}× / "
                       f"{cpu_speed[1]:.1f}×) | {mb(m_k)} / {mb(m_c)} / {mb(m_loop)} |")
            print(out[-1], flush=True)
    return summary


def section_tl(adapter, args, out):
    import pandas as pd
    import transformer_lens.patching as tlp

    tokens = prompt(adapter, args.seq)
    T, L, H = args.seq, adapter.n_layers, adapter.n_heads
    clean = torch.roll(tokens, 1)
    _, cache = adapter.run_with_cache(clean[None])
    metric = LogitDiff(int(tokens[1]), int(tokens[2]))

    def tl_metric(logits):
        return metric(logits)[0]

    out.append(f"\n### 2. Single-component activation patching: TransformerLens vs masks ({T} tokens)\n")
    out.append("TL: `transformer_lens.patching` with an `index_df` of the K patches (full logits, one "
               f"forward per patch; timed on {args.loop_rows} patches). Ours: the same K patches as mask rows "
               "with the clean cache as reference, last-position metric, prefix reuse.\n")
    out.append("| patch | K | TL patches/s | ours patches/s | speedup (CPU) |")
    out.append("|---|---|---|---|---|")
    g = torch.Generator().manual_seed(1)
    cases = {
        "head output (z, all pos)": ("z", tlp.get_act_patch_attn_head_out_all_pos, ("layer", "head"), (L, H)),
        "MLP out (one position)": ("mlp_out", tlp.get_act_patch_mlp_out, ("layer", "pos"), (L, T)),
        "attention edge": ("pattern", tlp.get_act_patch_attn_head_pattern_dest_src_pos,
                           ("layer", "head_index", "dest_pos", "src_pos"), (L, H, T, T)),
    }
    for name, (site, tl_fn, axes, sizes) in cases.items():
        n_total = math.prod(sizes)
        idx = torch.randint(0, n_total, (max(args.ks),), generator=g)
        index = torch.stack(torch.unravel_index(idx, sizes), 1)
        if site == "pattern":  # causal edges only
            index[:, 3] = torch.minimum(index[:, 3], index[:, 2])
        rows = index[: args.loop_rows].tolist()
        df = pd.DataFrame(rows, columns=list(axes))
        t_tl = measure({"tl": lambda: tl_fn(adapter.model, tokens[None], cache, tl_metric, index_axis_names=None,
                                            index_df=df)}, args, adapter.device)["tl"]
        tl_rate, tl_cpu = len(rows) / t_tl[0], len(rows) / t_tl[1]
        for K in args.ks:
            spec = MaskSpec(K)
            sub = index[:K]
            keep_shape = {"z": (1, H), "mlp_out": (T,), "pattern": (H, T, T)}[site]
            for l in sub[:, 0].unique().tolist():
                keep = torch.ones(K, *keep_shape, dtype=torch.bool)
                for r in (sub[:, 0] == l).nonzero()[:, 0].tolist():
                    comp = sub[r, 1:].tolist()
                    keep[(r, 0, comp[0]) if site == "z" else (r, *comp)] = False
                spec.set(site, l, keep)
            hooks = {adapter.hook_name(site, l) for l in sub[:, 0].unique().tolist()}
            ref = Reference({h: cache[h] for h in hooks})
            t_ours = measure({"ours": lambda: masked_forward(adapter, tokens, spec, reference=ref, output=metric,
                                                             progress=False)}, args, adapter.device)["ours"]
            out.append(f"| {name} | {K} | {fmt_rate(tl_rate)} | {fmt_rate(K / t_ours[0])} | "
                       f"{K / t_ours[0] / tl_rate:.1f}× ({K / t_ours[1] / tl_cpu:.1f}×) |")
            print(out[-1], flush=True)


def section_seq(adapter, args, out, K=64):
    out.append(f"\n### 3. Scaling with prompt length (K={K} random head masks)\n")
    out.append("| tokens | kernel masks/s | unmasked batched masks/s | overhead (CPU) | loop masks/s (last pos.) | "
               "kernel ÷ loop (CPU) | peak MB kernel |")
    out.append("|---|---|---|---|---|---|---|")
    for T in args.seq_lens:
        tokens = prompt(adapter, T)
        keeps = random_keeps("heads", K, adapter, T)
        spec = spec_of("heads", keeps)
        budget = max(DEFAULT_MAX_BATCH_TOKENS, T)
        n = max(2, args.loop_rows // 2)
        r = measure({"kernel": lambda: masked_forward(adapter, tokens, spec, progress=False),
                     "ceiling": lambda: ceiling(adapter, tokens, K, budget),
                     "loop": lambda: hook_loop(adapter, tokens, "heads", keeps, n, True)}, args, adapter.device)
        (t_k, c_k, m_k), (t_c, c_c, _), (t_l, c_l, _) = r["kernel"], r["ceiling"], r["loop"]
        out.append(f"| {T} | {fmt_rate(K / t_k)} | {fmt_rate(K / t_c)} | {t_k / t_c:.2f}× ({c_k / c_c:.2f}×) | "
                   f"{fmt_rate(n / t_l)} | {(K / t_k) / (n / t_l):.1f}× ({(K / c_k) / (n / c_l):.1f}×) | {mb(m_k)} |")
        print(out[-1], flush=True)


def section_prefix(adapter, args, out, K=64):
    tokens = prompt(adapter, args.seq)
    L, T = adapter.n_layers, args.seq
    out.append(f"\n### 4. Prefix reuse ({T} tokens)\n")
    out.append("| workload | rows | reuse on (masks/s) | reuse off (masks/s) | speedup (CPU) |")
    out.append("|---|---|---|---|---|")
    for first in (0, L // 2, 3 * L // 4):
        spec = spec_of("heads", random_keeps("heads", K, adapter, T, layers=range(first, L)))
        r = measure({"on": lambda: masked_forward(adapter, tokens, spec, progress=False),
                     "off": lambda: masked_forward(adapter, tokens, spec, prefix_reuse=False, progress=False)},
                    args, adapter.device)
        (on, c_on, _), (off, c_off, _) = r["on"], r["off"]
        out.append(f"| random head masks in layers {first}–{L - 1} | {K} | {fmt_rate(K / on)} | "
                   f"{fmt_rate(K / off)} | {off / on:.2f}× ({c_off / c_on:.2f}×) |")
        print(out[-1], flush=True)
    # a patching sweep: resid_pre at every layer, last 4 positions, clean cache as reference
    clean = torch.roll(tokens, 1)
    _, cache = adapter.run_with_cache(clean[None])
    n_pos = 4
    rows = L * n_pos
    spec = MaskSpec(rows)
    for l in range(L):
        keep = torch.ones(rows, T, dtype=torch.bool)
        for j in range(n_pos):
            keep[l * n_pos + j, T - 1 - j] = False
        spec.set("resid_pre", l, keep)
    ref = Reference({adapter.hook_name("resid_pre", l): cache[adapter.hook_name("resid_pre", l)] for l in range(L)})
    r = measure({"on": lambda: masked_forward(adapter, tokens, spec, reference=ref, progress=False),
                 "off": lambda: masked_forward(adapter, tokens, spec, reference=ref, prefix_reuse=False,
                                               progress=False)}, args, adapter.device)
    (on, c_on, _), (off, c_off, _) = r["on"], r["off"]
    out.append(f"| resid_pre patching sweep (every layer × last {n_pos} positions) | {rows} | {fmt_rate(rows / on)} "
               f"| {fmt_rate(rows / off)} | {off / on:.2f}× ({c_off / c_on:.2f}×) |")
    print(out[-1], flush=True)


def section_budget(adapter, args, out):
    K = max(args.ks)
    tokens = prompt(adapter, args.seq)
    spec = spec_of("heads", random_keeps("heads", K, adapter, args.seq))
    out.append(f"\n### 5. max_batch_tokens (K={K} random head masks, {args.seq} tokens)\n")
    out.append("| max_batch_tokens | rows per forward | masks/s | masks per CPU-s | peak MB |")
    out.append("|---|---|---|---|---|")
    best = None
    r = measure({b: (lambda b=b: masked_forward(adapter, tokens, spec, max_batch_tokens=b, progress=False))
                 for b in args.budgets}, args, adapter.device)
    for b in args.budgets:
        t, c, m = r[b]
        out.append(f"| {b}{' (default)' if b == DEFAULT_MAX_BATCH_TOKENS else ''} | {b // args.seq} | "
                   f"{fmt_rate(K / t)} | {fmt_rate(K / c)} | {mb(m)} |")
        print(out[-1], flush=True)
        if best is None or K / t > best[1]:
            best = (b, K / t)
    return best


# ---------------------------------------------------------------------------- report
def machine(device) -> str:
    cpu = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f", {kb / 2**20:.0f} GiB RAM"
    except (OSError, ValueError, IndexError):
        pass
    s = f"{cpu}, {os.cpu_count()} cores{mem}, torch threads {torch.get_num_threads()}"
    if str(device).startswith("cuda"):
        s += f"; GPU {torch.cuda.get_device_name()}"
    return s


def versions() -> str:
    from importlib.metadata import version

    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                                text=True).stdout.strip()
    except OSError:
        commit = "?"
    return (f"python {platform.python_version()}, torch {torch.__version__}, "
            f"transformer-lens {version('transformer-lens')}, interp_toolkit commit {commit}")


def main(argv=None):
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("--device cuda but torch sees no GPU")
    started = time.time()
    load_start = os.getloadavg()
    model = build_model(args)
    adapter = ModelAdapter(model)
    exe = os.path.relpath(sys.executable, REPO) if sys.executable.startswith(str(REPO)) else sys.executable
    cmd = shlex.join([exe, os.path.relpath(sys.argv[0], REPO) if os.path.isabs(sys.argv[0]) else sys.argv[0],
                      *(sys.argv[1:] if argv is None else argv)])
    out = [f"\n## Engine — {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M UTC} — "
           f"{adapter.name} on {args.device}{' (random weights)' if args.random_weights else ''}\n",
           f"- command: `{cmd}`",
           f"- machine: {machine(args.device)}",
           f"- versions: {versions()}",
           f"- model: {adapter.n_layers} layers, {adapter.n_heads} heads ({adapter.n_kv_heads} KV), d_model "
           f"{adapter.d_model}, vocab {adapter.d_vocab}, {args.dtype}",
           f"- load average at start (1/5/15 min): {' / '.join(f'{x:.2f}' for x in load_start)}"]
    print("\n".join(out), flush=True)
    summary = section_masks(adapter, args, out)
    section_tl(adapter, args, out)
    section_seq(adapter, args, out)
    section_prefix(adapter, args, out)
    best = section_budget(adapter, args, out)
    load_end = os.getloadavg()
    out.append("\n### Targets\n")
    k = 64 if 64 in args.ks else max(args.ks)
    for kind in ("heads", "mlps", "edges"):
        s = summary[(kind, k)]
        sp, ov = s['kernel'] / s['loop'], s['overhead']
        out.append(f"- {kind}, K={k}: kernel {sp:.1f}× the hook loop, {s['speedup_cpu'][0]:.1f}× in CPU time "
                   f"({s['kernel'] / s['loop_last']:.1f}× / {s['speedup_cpu'][1]:.1f}× the last-position loop) — "
                   f"target ≥ 3×: {'met' if sp >= 3 else 'not met'}; overhead vs the unmasked batched forward "
                   f"{ov:.2f}×, {s['overhead_cpu']:.2f}× in CPU time — target ≤ 1.25×: "
                   f"{'met' if ov <= 1.25 else 'not met'}")
    out.append(f"- fastest max_batch_tokens in section 5: {best[0]} (default {DEFAULT_MAX_BATCH_TOKENS})")
    out.append(f"- load average at end (1/5/15 min): {' / '.join(f'{x:.2f}' for x in load_end)}; "
               f"total time {time.time() - started:.0f} s")
    print("\n".join(out[-5:]), flush=True)
    if not args.no_write:
        path = Path(args.out)
        if not path.exists():
            path.write_text("# Benchmark results\n")
        with path.open("a") as f:
            f.write("\n".join(out) + "\n")
        print(f"appended to {path}")


if __name__ == "__main__":
    main()
