"""``interp-toolkit`` command line.

Subcommands live in a registry: ``register(name, add_arguments, run, help=...)``. The
built-in ones (``models``, ``generate``) are registered here; an analysis module adds its
own by calling ``register`` at import time and being listed in ``COMMAND_MODULES``::

    # interp_toolkit/strace/cli.py
    from interp_toolkit.cli import register

    def add_arguments(parser): parser.add_argument("prompt")
    def run(args) -> int: ...; return 0

    register("trace", add_arguments, run, help="s-Trace of one prompt")

``run(args)`` returns the exit status (None counts as 0). Every analysis subcommand takes
the same options from ``add_analysis_arguments(parser)`` — ``--model`` (comma-separated where
several models make sense: ``models_from_args``), ``--out`` (HTML report), ``--json``,
``--device``, ``--dtype``, ``--backend``, ``--max-batch-tokens``, ``--threads`` — and loads
its model(s) with ``model_from_args`` / ``models_from_args``.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import sys
from dataclasses import dataclass
from typing import Callable, Sequence

from .models.registry import DEFAULT_MODEL, OFFLINE_MODELS, ModelNotAvailableError


@dataclass(frozen=True)
class Subcommand:
    name: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int | None]
    help: str = ""


SUBCOMMANDS: dict[str, Subcommand] = {}

# Modules that register more subcommands when imported; add one line per analysis package.
COMMAND_MODULES: tuple[str, ...] = (
    "interp_toolkit.strace.cli",
    "interp_toolkit.interactions.cli",
    "interp_toolkit.lens.cli",
    "interp_toolkit.geometry.cli",
    "interp_toolkit.circuits.cli",
    "interp_toolkit.sweeps.cli",
    "interp_toolkit.analyze.cli",
)


def register(name: str, add_arguments: Callable[[argparse.ArgumentParser], None],
             run: Callable[[argparse.Namespace], int | None], help: str = "") -> Subcommand:
    """Add (or replace) the subcommand ``name``."""
    cmd = Subcommand(name, add_arguments, run, help)
    SUBCOMMANDS[name] = cmd
    return cmd


def _load_command_modules() -> None:
    for mod in COMMAND_MODULES:  # a listed module that is missing or broken is an error
        importlib.import_module(mod)


# ---------------------------------------------------------------------- shared options
def write_outputs(args: argparse.Namespace, result, leading_newline: bool = False) -> None:
    """The shared outputs of an analysis command: ``--out`` (the offline HTML report) and
    ``--json`` (the saved result), each path printed."""
    gap = "\n" if leading_newline else ""
    if args.out:
        print(f"{gap}report: {result.write_html(args.out)}")
    if args.json_path:
        print(f"result: {result.save(args.json_path)}")


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """``--model``, ``--device``, ``--dtype``, ``--backend``, ``--allow-download``."""
    parser.add_argument("--model", "-m", default=DEFAULT_MODEL,
                        help=f"offline model ({', '.join(OFFLINE_MODELS)}), tiny-random[-gpt2|-llama], "
                             f"or a TransformerLens / Hugging Face name with --allow-download "
                             f"(default: {DEFAULT_MODEL})")
    parser.add_argument("--device", default=None, help="cpu, cuda, ... (default: cuda if available)")
    parser.add_argument("--dtype", default="float32", help="float32 (default), bfloat16, float16")
    parser.add_argument("--backend", choices=("hooked", "bridge"), default=None,
                        help="HookedTransformer or TransformerBridge (default: what TransformerLens offers)")
    parser.add_argument("--allow-download", action="store_true",
                        help="let Hugging Face libraries use the network (default: offline)")


def add_analysis_arguments(parser: argparse.ArgumentParser, *, several_models: bool = False,
                           deprecated: dict[str, str] | None = None) -> None:
    """The options every analysis subcommand shares: ``add_model_arguments`` plus ``--out``
    (offline HTML report), ``--json`` (the result, reloadable with ``load_result``),
    ``--max-batch-tokens`` and ``--threads``. ``several_models``: ``--model`` takes a
    comma-separated list (read it with ``models_from_args``). ``deprecated`` maps old
    option spellings to the new destinations (``{"--html": "out"}``); they stay accepted but
    hidden from ``--help``."""
    add_model_arguments(parser)
    if several_models:
        action = next(a for a in parser._actions if a.dest == "model")
        action.help = "comma-separated model names (e.g. smollm2-135m,gemma3-270m); " + action.help
    parser.add_argument("--out", "-o", default=None, help="write an offline HTML report here")
    parser.add_argument("--json", dest="json_path", default=None,
                        help="save the result here (JSON; load it again with interp_toolkit.core.load_result)")
    parser.add_argument("--max-batch-tokens", type=int, default=None,
                        help="rows × positions per forward (memory budget; default: the engine's)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    for flag, dest in (deprecated or {}).items():
        parser.add_argument(flag, dest=dest, help=argparse.SUPPRESS)


def models_from_args(args: argparse.Namespace) -> list:
    """Every model of a comma-separated ``--model`` (each with the same device, dtype and
    backend)."""
    names = [m.strip() for m in str(args.model).split(",") if m.strip()]
    if not names:
        raise ValueError("--model is empty")
    return [_load(args, name) for name in names]


def model_from_args(args: argparse.Namespace):
    """Load the model that ``add_model_arguments`` options name (and set ``--threads``)."""
    return _load(args, args.model)


def _load(args: argparse.Namespace, name: str):
    from .models import load_model
    from .models.offline import hf_offline

    if getattr(args, "threads", None):
        import torch

        torch.set_num_threads(args.threads)
    offline = contextlib.nullcontext() if getattr(args, "allow_download", False) else hf_offline()
    with offline:
        return load_model(name, device=args.device, dtype=args.dtype, backend=args.backend,
                          progress=sys.stderr.isatty())


# ---------------------------------------------------------------------- models
def _models_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print JSON")


def _models_run(args: argparse.Namespace) -> int:
    from .models.cache import cache_root, converted_dir, is_cached
    from .models.registry import is_installed

    rows = []
    for name, spec in OFFLINE_MODELS.items():
        rows.append({
            "name": name,
            "installed": is_installed(name),
            "cached": is_cached(name),
            "default": name == DEFAULT_MODEL,
            "hf_name": spec.hf_name,
            "description": spec.description,
            "install": spec.pip_install,
            "cache_dir": str(converted_dir(name)),
        })
    if args.json:
        import json

        print(json.dumps({"cache_root": str(cache_root()), "models": rows}, indent=2))
        return 0
    width = max(len(r["name"]) for r in rows)
    print(f"{'model':<{width}}  installed  cached  description")
    for r in rows:
        star = " (default)" if r["default"] else ""
        print(f"{r['name']:<{width}}  {'yes' if r['installed'] else 'no':<9}  "
              f"{'yes' if r['cached'] else 'no':<6}  {r['description']}{star}")
        if not r["installed"]:
            print(f"{'':<{width}}  install: {r['install']}")
    print(f"\ncache: {cache_root()}  (set INTERP_TOOLKIT_CACHE to move it; the first load of a "
          "model converts its GGUF file there)")
    print("test models: tiny-random[-gpt2|-llama][-l<layers>][-h<heads>] (random weights)")
    return 0


# ---------------------------------------------------------------------- generate
def _generate_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("prompt", help="text to continue")
    parser.add_argument("--max-new-tokens", "-n", type=int, default=20)
    bos = parser.add_mutually_exclusive_group()
    bos.add_argument("--prepend-bos", dest="prepend_bos", action="store_true", default=None,
                     help="prepend BOS (default: the model's setting)")
    bos.add_argument("--no-prepend-bos", dest="prepend_bos", action="store_false")
    add_model_arguments(parser)


def _generate_run(args: argparse.Namespace) -> int:
    from .generate import greedy_generate

    if args.max_new_tokens < 0:
        print("error: --max-new-tokens must be >= 0", file=sys.stderr)
        return 2
    model = model_from_args(args)
    gen = greedy_generate(model, args.prompt, args.max_new_tokens, prepend_bos=args.prepend_bos)
    print(args.prompt + gen.text)
    return 0


register("models", _models_arguments, _models_run, help="list the offline models (installed? cached?)")
register("generate", _generate_arguments, _generate_run, help="greedy continuation of a prompt (offline)")


# ---------------------------------------------------------------------- entry point
def build_parser() -> argparse.ArgumentParser:
    _load_command_modules()
    parser = argparse.ArgumentParser(
        prog="interp-toolkit",
        description="Mechanistic interpretability on one batched masked forward "
                    "(s-Trace computation density, Harsanyi AND-OR interactions; activation patching "
                    "and attribution from Python).")
    from . import __version__

    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for cmd in SUBCOMMANDS.values():
        p = sub.add_parser(cmd.name, help=cmd.help, description=cmd.help)
        cmd.add_arguments(p)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        status = SUBCOMMANDS[args.command].run(args)
    except ModelNotAvailableError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return int(status or 0)


if __name__ == "__main__":  # run the package's module, whose registry the analyses fill
    from interp_toolkit.cli import main as _main

    sys.exit(_main())
