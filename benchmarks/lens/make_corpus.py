"""Build interp_toolkit/data/lens_corpus_en.jsonl: the tuned-lens training corpus.

Two parts, both free to redistribute:
  * "passage": the 200 self-written CC0 passages of strace_eval_en.jsonl (as they are);
  * "sample":  continuations sampled from SmolLM2-135M-Instruct (temperature 1, top-k 50,
    64-128 new tokens) from the first 8 words of each passage and of short self-written
    openings. Model output is in the model's own distribution, which is what a tuned lens
    is fitted to; we release the samples under CC0 (SmolLM2 is Apache-2.0, which puts no
    restriction on its outputs).

    flock /tmp/itk-real.lock python benchmarks/lens/make_corpus.py --rounds 1 --time-budget 240

The file is appended to after every batch and a rerun continues where the last one stopped
(so each run can hold the real-model lock for a few minutes only).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from interp_toolkit.models import load_model
from interp_toolkit.strace.dataset import load_eval_set

OUT = Path(__file__).resolve().parents[2] / "interp_toolkit" / "data" / "lens_corpus_en.jsonl"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3, help="samples per passage opening")
    ap.add_argument("--batch", type=int, default=25)
    ap.add_argument("--new-tokens", type=int, default=96)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--time-budget", type=float, default=None, help="stop starting batches after this many seconds")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    passages = load_eval_set()
    openings = [" ".join(t.split()[:8]) for t in passages]
    if not OUT.exists():
        OUT.write_text("".join(json.dumps({"source": "passage", "text": t}) + "\n" for t in passages), encoding="utf-8")
    done = sum(1 for line in OUT.read_text(encoding="utf-8").splitlines() if '"sample"' in line)
    todo = [(r, i) for r in range(args.rounds) for i in range(0, len(openings), args.batch)]
    todo = todo[done // args.batch:]
    model = load_model("smollm2-135m", progress=False)
    t0 = time.time()
    for r, i in todo:
        if args.time_budget is not None and time.time() - t0 > args.time_budget:
            break
        torch.manual_seed(args.seed * 1000 + r * 100 + i)
        chunk = openings[i:i + args.batch]
        with torch.no_grad():
            out = model.generate(chunk, max_new_tokens=args.new_tokens, do_sample=True, temperature=1.0,
                                 top_k=50, use_past_kv_cache=True, verbose=False, return_type="str",
                                 stop_at_eos=True, prepend_bos=False, padding_side="left")
        with OUT.open("a", encoding="utf-8") as f:
            f.write("".join(json.dumps({"source": "sample", "text": t.strip()}) + "\n" for t in out))
        print(f"round {r} batch {i}: {time.time() - t0:.0f} s", flush=True)
    print(f"{OUT}: {OUT.stat().st_size / 1e3:.0f} kB")

if __name__ == "__main__":
    main()
