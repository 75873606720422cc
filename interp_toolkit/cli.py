"""``interp-toolkit`` command line.

Subcommands live in a registry: ``register(name, add_arguments, run, help=...)``. The
built-in ones (``models``, ``generate``) are registered here; an analysis module adds its
own by calling ``register`` at import time and being listed in ``COMMAND_MODULES``::

    # interp_toolkit/strace/cli.py
    from interp_toolkit.cli import register

    def add_arguments(parser): parser.add_argument("prompt")
    def run(args) -> int: ...; return 0

    register("trace", add_arguments, run, help="s-Trace of one prompt")

``run(args)`` returns the exit status (None counts as 0). Model-loading commands should
take ``add_model_arguments(parser)`` and ``model_from_args(args)`` for uniform options.
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

# Modules that register more subcommands when imported (missing ones are skipped).
COMMAND_MODULES: tuple[str, ...] = (
    "interp_toolkit.strace.cli",
    "interp_toolkit.interactions.cli",
    "interp_toolkit.patching.cli",
    "interp_toolkit.lens.cli",
    "interp_toolkit.geometry.cli",
    "interp_toolkit.analyze.cli",
)


def register(name: str, add_arguments: Callable[[argparse.ArgumentParser], None],
             run: Callable[[argparse.Namespace], int | None], help: str = "") -> Subcommand:
    """Add (or replace) the subcommand ``name``."""
    cmd = Subcommand(name, add_arguments, run, help)
    SUBCOMMANDS[name] = cmd
    return cmd


def _load_command_modules() -> None:
    for mod in COMMAND_MODULES:
        try:
            importlib.import_module(mod)
        except ModuleNotFoundError as exc:
            # Skip only when that module (or its package) does not exist; a missing
            # dependency inside an existing module is a real error.
            if exc.name is None or not mod.startswith(exc.name):
                raise


# ---------------------------------------------------------------------- shared options
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


def model_from_args(args: argparse.Namespace):
    """Load the model that ``add_model_arguments`` options name."""
    from .models import load_model
    from .models.offline import hf_offline

    offline = contextlib.nullcontext() if getattr(args, "allow_download", False) else hf_offline()
    with offline:
        return load_model(args.model, device=args.device, dtype=args.dtype, backend=args.backend,
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
                    "(s-Trace, Harsanyi interactions, lenses, latent geometry).")
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


if __name__ == "__main__":
    sys.exit(main())
