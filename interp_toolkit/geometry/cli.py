"""``interp-toolkit geometry``: capture, reduce and analyse the latent geometry of a model."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..cli import add_analysis_arguments, model_from_args, register, write_outputs
from .inputs import MODES
from .points import POINTS


def _ints(text: str):
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def read_texts(path) -> list[str]:
    """Texts from a file: JSON lines with a ``text`` field, or one text per non-empty line."""
    lines = [l for l in Path(path).read_text(encoding="utf-8").splitlines() if l.strip()]
    if lines and lines[0].lstrip().startswith("{"):
        return [json.loads(l)["text"] for l in lines]
    return lines


def default_texts_path() -> Path:
    return Path(__file__).resolve().parents[1] / "data" / "strace_eval_en.jsonl"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--texts", default=None,
                        help="texts (JSON lines with 'text', or one per line; default: the bundled English set)")
    parser.add_argument("--mode", choices=MODES, default="text", help="input mode (default text)")
    parser.add_argument("--n-texts", type=int, default=64, help="use the first N texts (default 64)")
    parser.add_argument("--seq-len", type=int, default=None, help="tokens per sequence (default: shortest text; "
                                                                  "repeat mode 16)")
    parser.add_argument("--tokens", type=_ints, default=None,
                        help="token ids for vocab/repeat mode (default: the whole vocabulary / 32 spread ids)")
    parser.add_argument("--points", default=None, help=f"comma-separated subset of {','.join(POINTS)}")
    parser.add_argument("--layers", type=_ints, default=None, help="comma-separated blocks (default all)")
    parser.add_argument("--capture-dir", default=None, help="keep the shards here (resumable; default: temporary)")
    parser.add_argument("--store-dtype", default="float16", choices=("float16", "bfloat16", "float32"))
    parser.add_argument("--block-size", type=int, default=8, help="permute mode: tokens per shuffled block")
    parser.add_argument("--seed", type=int, default=0)
    add_analysis_arguments(parser)  # --model --out --json --device --dtype --backend --max-batch-tokens --threads


def run(args: argparse.Namespace) -> int:
    from ..adapter import as_adapter
    from .pipeline import run_geometry

    texts = None
    if args.mode in ("text", "permute"):
        texts = read_texts(args.texts or default_texts_path())[: args.n_texts]
        if not texts:
            print("error: the text list is empty", file=sys.stderr)
            return 2
    model = model_from_args(args)
    tokens = args.tokens
    if args.mode == "repeat" and tokens is None:
        d_vocab = as_adapter(model).cfg.d_vocab
        tokens = sorted({int(i) for i in range(1, d_vocab, max(1, d_vocab // 32))})
    try:
        res = run_geometry(model, texts, mode=args.mode, out_dir=args.capture_dir, seq_len=args.seq_len,
                           token_ids=tokens, points=args.points.split(",") if args.points else None,
                           layers=args.layers, max_batch_tokens=args.max_batch_tokens or 2048, dtype=args.store_dtype,
                           block_size=args.block_size, seed=args.seed, progress=sys.stderr.isatty())
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(res.summary())
    write_outputs(args, res)
    return 0


register("geometry", add_arguments, run, help="latent geometry: per-block points, PCA, norms, attention/MLP, helix")
