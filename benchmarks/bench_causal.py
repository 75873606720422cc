"""Benchmark of causal prefix reuse by position (engine/causal.py), ratios side by side in one run.

One command (from the repository root)::

    .venv/bin/python benchmarks/bench_causal.py --threads 2          # SmolLM2, CPU
    .venv/bin/python benchmarks/bench_causal.py --device cuda --random-weights --dtype bfloat16 --no-write \\
        --json out.json

What is measured (each compared function timed interleaved, wall and CPU time of this process):
  1. Harsanyi values at n players (default 10: 1,024 subsets) on one prompt: the engine with
     causal prefix reuse, the engine without it (dense batched kernel), the lab's recipe (a
     Hugging Face model, input embeddings masked ``m·e + (1−m)·b``, 16 subsets per forward, one
     forward per batch, full logits as the recipe is written) and the unmasked batched forward
     of the same 1,024 rows in Hugging Face (one batch, last-position logits only: the ceiling
     of any dense method). The computed vs dense token positions of the reuse plan are stated.
  2. Activation patching at the last position: K head outputs (``hook_z`` of one head at the
     last position, K (layer, head) pairs) from a clean run into the corrupted run.
     TransformerLens's ``patching`` loop (``get_act_patch_attn_head_out_by_pos`` with an
     ``index_df`` of the patches, one forward per patch, timed on ``--loop-rows`` patches and
     reported as a rate) against the engine with and without causal reuse (all K patches).

``--random-weights`` builds SmolLM2's architecture with random weights on both sides (for
GPU timing: no weight file needed).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shlex
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from bench_engine import SMOLLM2_CONFIG, build_model, machine, measure, prompt, versions  # noqa: E402

from interp_toolkit.adapter import ModelAdapter  # noqa: E402
from interp_toolkit.engine import MaskSpec, Reference, masked_forward  # noqa: E402
from interp_toolkit.engine.metrics import LogitDiff  # noqa: E402
from interp_toolkit.interactions import PlayerTokens, Players, log_odds, subset_masks, subset_values  # noqa: E402

PROMPT = "When Mary and John went to the store after school, John gave a cold drink to"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--device", default="cpu")
    p.add_argument("--random-weights", action="store_true")
    p.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--players", type=int, default=10)
    p.add_argument("--budget", type=int, default=32768, help="max_batch_tokens of both engine runs")
    p.add_argument("--lab-batch", type=int, default=16)
    p.add_argument("--K", type=int, default=256, help="patches in section 2")
    p.add_argument("--seq", type=int, default=32, help="prompt length of section 2")
    p.add_argument("--loop-rows", type=int, default=12)
    p.add_argument("--min-time", type=float, default=1.5)
    p.add_argument("--max-repeats", type=int, default=1)
    p.add_argument("--sections", default="harsanyi,patching")
    p.add_argument("--out", default=str(REPO / "benchmarks" / "RESULTS.md"))
    p.add_argument("--no-write", action="store_true")
    p.add_argument("--json", default=None, help="also write the measurements as JSON here")
    return p.parse_args(argv)


def hf_model(args, adapter: ModelAdapter):
    """The Hugging Face twin: the offline converted model, or SmolLM2's architecture with
    random weights."""
    dtype = getattr(torch, args.dtype)
    if args.random_weights:
        from transformers import LlamaConfig, LlamaForCausalLM

        torch.manual_seed(0)
        hf = LlamaForCausalLM(LlamaConfig(**SMOLLM2_CONFIG))
    else:
        from interp_toolkit.models.offline import load_hf_offline

        hf = load_hf_offline(args.model, progress=False)[0]
    return hf.to(device=args.device, dtype=dtype).eval()


def players_of(adapter: ModelAdapter, n: int) -> PlayerTokens:
    if adapter.tokenizer is not None:
        return Players.from_prompt(PROMPT, n=n).tokens_for(adapter)
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, adapter.d_vocab, (17,), generator=g).tolist()
    return PlayerTokens.from_positions(tokens, [[1 + round(i * 15 / n)] for i in range(n)])


@torch.no_grad()
def lab_recipe(hf, toks: PlayerTokens, baseline: torch.Tensor, target: int, batch: int):
    """The lab's recipe: masked ``inputs_embeds``, ``batch`` subsets per forward."""
    dev = hf.device
    ids = torch.tensor([toks.tokens], device=dev)
    emb = hf.get_input_embeddings()(ids)  # [1, pos, d]
    keep = torch.from_numpy(toks.keep_matrix(subset_masks(toks.n))).to(dev)
    b = baseline.to(device=dev, dtype=emb.dtype)
    out = []
    for i in range(0, keep.shape[0], batch):
        k = keep[i:i + batch, :, None].to(emb.dtype)
        logits = hf(inputs_embeds=k * emb + (1 - k) * b).logits[:, -1]
        out.append(log_odds(logits, target))
    return torch.cat(out)


@torch.no_grad()
def unmasked_rows(hf, toks: PlayerTokens, rows: int, last_only: bool = True):
    """The unmasked forward of ``rows`` copies of the prompt in one batch (last-position
    logits only, or Hugging Face's default: logits at every position)."""
    ids = torch.tensor([toks.tokens], device=hf.device).expand(rows, -1)
    return hf(input_ids=ids, **({"logits_to_keep": 1} if last_only else {})).logits[:, -1]


def section_harsanyi(adapter, hf, args, out, record):
    toks = players_of(adapter, args.players)
    R, T = 2 ** toks.n, len(toks.tokens)
    target = int(adapter.forward(torch.tensor([toks.tokens], device=adapter.device))[0, -1].argmax())
    baseline = torch.zeros(adapter.d_model, device=adapter.device, dtype=adapter.dtype)
    plan = {}
    kw = dict(max_batch_tokens=args.budget, progress=False)
    got = {}  # the values of the timed calls themselves (no separate warm-up runs)
    fns = {
        "causal": lambda: got.setdefault("causal", subset_values(adapter, toks, target, baseline,
                                                                 position_reuse=True, reuse_plan=plan, **kw)),
        "dense": lambda: got.setdefault("dense", subset_values(adapter, toks, target, baseline,
                                                               position_reuse=False, **kw)),
        "lab": lambda: got.setdefault("lab", lab_recipe(hf, toks, baseline, target, args.lab_batch)),
        "unmasked": lambda: unmasked_rows(hf, toks, R),
        "unmasked_full": lambda: unmasked_rows(hf, toks, R, last_only=False),
    }
    r = measure(fns, args, adapter.device)
    v_causal, v_dense = got["causal"], got["dense"]
    v_lab = got["lab"].double().cpu().numpy()
    starts = [ps[0] for ps in toks.positions]
    out.append(f"\n### 1. Harsanyi values, n = {toks.n} ({R} subsets), {T}-token prompt\n")
    out.append(f"Players at token positions {starts} of {T}; plan: {plan['computed_positions']:,} token "
               f"positions computed instead of {plan['dense_positions']:,} "
               f"({plan['dense_positions'] / plan['computed_positions']:.2f}× fewer), "
               f"{plan['n_nodes']:,} trie nodes in {plan['n_chunks']} chunk(s) (max_batch_tokens {args.budget}). "
               f"Max |Δv| causal vs dense: {abs(v_causal - v_dense).max():.2e}; lab recipe (Hugging Face "
               f"numerics) vs ours: {abs(v_lab - v_dense).max():.2e}.\n")
    out.append("| method | seconds (wall) | seconds (CPU) | causal reuse is … faster (wall / CPU) |")
    out.append("|---|---|---|---|")
    names = {"causal": "engine, causal prefix reuse", "dense": "engine, dense batched kernel",
             "lab": f"lab's recipe (HF, masked inputs_embeds, batch {args.lab_batch})",
             "unmasked": f"HF unmasked forward of the {R} rows (one batch, last-position logits)",
             "unmasked_full": f"HF unmasked forward of the {R} rows (one batch, logits at every position)"}
    tc, cc = r["causal"][0], r["causal"][1]
    for k, name in names.items():
        t, c = r[k][0], r[k][1]
        out.append(f"| {name} | {t:.2f} | {c:.2f} | {t / tc:.2f}× / {c / max(cc, 1e-9):.2f}× |")
    record["harsanyi"] = {"n": toks.n, "rows": R, "tokens": T, "plan": plan,
                          **{k: {"wall_s": v[0], "cpu_s": v[1]} for k, v in r.items()}}
    return {k: (r[k][0] / tc, r[k][1] / max(cc, 1e-9)) for k in names}


def section_patching(adapter, args, out, record):
    import pandas as pd
    import transformer_lens.patching as tlp

    tokens = prompt(adapter, args.seq)
    T, L, H, K = args.seq, adapter.n_layers, adapter.n_heads, args.K
    clean = torch.roll(tokens, 1)
    _, cache = adapter.run_with_cache(clean[None], names=[adapter.hook_name("z", l) for l in range(L)])
    metric = LogitDiff(int(tokens[1]), int(tokens[2]))
    pairs = [(l, h) for l in range(L) for h in range(H)][:K]
    K = len(pairs)
    spec = MaskSpec(K)
    for l in sorted({l for l, _ in pairs}):
        keep = torch.ones(K, T, H, dtype=torch.bool)
        for r, (l2, h) in enumerate(pairs):
            if l2 == l:
                keep[r, T - 1, h] = False
        spec.set("z", l, keep)
    ref = Reference({adapter.hook_name("z", l): cache[adapter.hook_name("z", l)] for l in range(L)})
    df = pd.DataFrame([(l, T - 1, h) for l, h in pairs[:args.loop_rows]], columns=["layer", "pos", "head_index"])

    def tl_metric(logits):
        return metric(logits)[0]

    got = {}
    r = measure({
        "tl": lambda: got.setdefault("tl", tlp.get_act_patch_attn_head_out_by_pos(
            adapter.model, tokens[None], cache, tl_metric, index_axis_names=None, index_df=df)),
        "causal": lambda: got.setdefault("causal", masked_forward(adapter, tokens, spec, reference=ref, output=metric,
                                                                  position_reuse=True, progress=False)),
        "dense": lambda: got.setdefault("dense", masked_forward(adapter, tokens, spec, reference=ref, output=metric,
                                                                position_reuse=False, progress=False)),
    }, args, adapter.device)
    a, b, tl_vals = got["causal"], got["dense"], got["tl"]
    n_tl = len(df)
    tl_rate = (n_tl / r["tl"][0], n_tl / r["tl"][1])
    rates = {k: (K / r[k][0], K / r[k][1]) for k in ("causal", "dense")}
    out.append(f"\n### 2. Activation patching at the last position, K = {K} head outputs, {T}-token prompt\n")
    out.append(f"TransformerLens: `get_act_patch_attn_head_out_by_pos` with an `index_df` (one forward per patch, "
               f"full logits; timed on {n_tl} patches). Max |Δ| causal vs dense "
               f"{float((a - b).abs().max()):.2e}; vs TransformerLens on its patches "
               f"{float((a[:n_tl].cpu() - tl_vals.cpu().flatten()).abs().max()):.2e}.\n")
    out.append("| method | patches/s (wall) | patches/s (CPU) | ÷ TransformerLens (wall / CPU) |")
    out.append("|---|---|---|---|")
    out.append(f"| TransformerLens `patching` loop | {tl_rate[0]:.1f} | {tl_rate[1]:.1f} | 1.0× |")
    for k, name in (("causal", "engine, causal prefix reuse"), ("dense", "engine, dense batched kernel")):
        out.append(f"| {name} | {rates[k][0]:.1f} | {rates[k][1]:.1f} | {rates[k][0] / tl_rate[0]:.1f}× / "
                   f"{rates[k][1] / tl_rate[1]:.1f}× |")
    record["patching"] = {"K": K, "tokens": T, "tl_rate": tl_rate, **{k: v for k, v in rates.items()}}
    return rates["causal"][0] / tl_rate[0], rates["causal"][1] / tl_rate[1]


def main(argv=None):
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    started, load_start = time.time(), os.getloadavg()
    model = build_model(args)
    adapter = ModelAdapter(model)
    sections = args.sections.split(",")
    cmd = shlex.join(["python", os.path.relpath(sys.argv[0], REPO) if os.path.isabs(sys.argv[0]) else sys.argv[0],
                      *(sys.argv[1:] if argv is None else argv)])
    out = [f"\n### Run {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M UTC} — {adapter.name} on "
           f"{args.device}, {args.dtype}{' (random weights)' if args.random_weights else ''}\n",
           f"- command: `{cmd}`", f"- machine: {machine(args.device)}", f"- versions: {versions()}",
           f"- load average at start (1/5/15 min): {' / '.join(f'{x:.2f}' for x in load_start)}"]
    record = {"device": args.device, "dtype": args.dtype, "random_weights": args.random_weights,
              "machine": machine(args.device)}
    targets = []
    if "harsanyi" in sections:
        hf = hf_model(args, adapter)
        s = section_harsanyi(adapter, hf, args, out, record)
        del hf
        targets.append(f"- Harsanyi values: causal reuse {s['unmasked'][0]:.2f}× faster than the unmasked batched "
                       f"forward with last-position logits ({s['unmasked'][1]:.2f}× in CPU time), "
                       f"{s['unmasked_full'][0]:.2f}× ({s['unmasked_full'][1]:.2f}× CPU) than the one with logits at "
                       f"every position — target ≥ 2.5×: {'met' if s['unmasked'][0] >= 2.5 else 'not met'} (last "
                       f"logits), {'met' if s['unmasked_full'][0] >= 2.5 else 'not met'} (all logits); "
                       f"{s['lab'][0]:.2f}× the lab's recipe "
                       f"({s['lab'][1]:.2f}× CPU) — target ≥ 4×: {'met' if s['lab'][0] >= 4 else 'not met'}; "
                       f"{s['dense'][0]:.2f}× the dense kernel ({s['dense'][1]:.2f}× CPU)")
        print("\n".join(out[-12:]), flush=True)
    if "patching" in sections:
        w, c = section_patching(adapter, args, out, record)
        targets.append(f"- last-position patching, K = {args.K}: {w:.1f}× TransformerLens's loop ({c:.1f}× in CPU "
                       f"time) — target ≥ 20×: {'met' if w >= 20 else 'not met'}")
        print("\n".join(out[-6:]), flush=True)
    out.append("\n#### Targets\n")
    out += targets
    out.append(f"- load average at end (1/5/15 min): {' / '.join(f'{x:.2f}' for x in os.getloadavg())}; "
               f"total time {time.time() - started:.0f} s")
    print("\n".join(out[-4:]), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({**record, "markdown": "\n".join(out)}, indent=1, default=str))
    if not args.no_write:
        with Path(args.out).open("a") as f:
            f.write("\n".join(out) + "\n")


if __name__ == "__main__":
    main()
