"""Work items: (input × model × analysis config), each with a key that names its row.

The key is ``sha1(analysis, input id, input text, model, config)`` (16 hex digits): the same
item always gets the same key, on any machine and in any run, so a row written twice (a retry
after a worker died) lands on the same key and the store keeps one.
"""

from __future__ import annotations

import hashlib
import json
import platform
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Sequence

from ..core import dumps


class InputError(ValueError):
    """An input file that cannot be used (missing, empty, duplicate ids)."""


class UnknownModelError(ValueError):
    """A model name the toolkit cannot load offline."""


@dataclass(frozen=True)
class WorkItem:
    """One unit of work: run ``analysis`` with ``config`` on input ``input_id`` in ``model``.

    ``index`` is the input's position in the input list (kept for ordering); ``config`` is the
    analysis config after ``check_config`` (JSON-able, includes the seed). ``options`` are
    settings that do not change the result (memory budget, a frequency table object…): not
    part of the key.
    """

    analysis: str
    input_id: str
    index: int
    text: str
    model: str
    config: dict
    options: dict = field(default_factory=dict, compare=False)

    @property
    def key(self) -> str:
        return item_key(self.analysis, self.input_id, self.text, self.model, self.config)

    @property
    def seed(self) -> int | None:
        return self.config.get("seed")


def canonical(config: dict) -> str:
    """The config as canonical JSON (sorted keys), the form that is hashed and stored."""
    return json.dumps(json.loads(dumps(config)), sort_keys=True, separators=(",", ":"))


def item_key(analysis: str, input_id: str, text: str, model: str, config: dict) -> str:
    blob = json.dumps([analysis, str(input_id), text, model, canonical(config)], separators=(",", ":"))
    return hashlib.sha1(blob.encode("utf-8")).hexdigest()[:16]


def read_inputs(path) -> list[tuple[str, str]]:
    """``(id, text)`` pairs from a file.

    ``.jsonl``: one object per line with ``text`` and optionally ``id`` (default: the line's
    position among the records). Otherwise one text per non-empty line, lines starting with
    ``#`` skipped, id = position. Duplicate ids raise InputError.
    """
    p = Path(path)
    if not p.is_file():
        raise InputError(f"input file {p} does not exist")
    lines = [l for l in p.read_text(encoding="utf-8").splitlines() if l.strip()]
    pairs = []
    if p.suffix == ".jsonl":
        for k, line in enumerate(lines):
            try:
                rec = json.loads(line)
                pairs.append((str(rec.get("id", len(pairs))), rec["text"]))
            except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
                raise InputError(f"{p}, record {k + 1}: needs a JSON object with 'text' ({exc})") from None
    else:
        pairs = [(str(i), l) for i, l in enumerate(l for l in lines if not l.startswith("#"))]
    return check_inputs(pairs, str(p))


def check_inputs(pairs: Sequence[tuple[str, str]], where: str = "inputs") -> list[tuple[str, str]]:
    pairs = [(str(i), t) for i, t in pairs]
    if not pairs:
        raise InputError(f"{where}: no inputs")
    seen: dict[str, int] = {}
    dup = []
    for k, (i, t) in enumerate(pairs):
        if not isinstance(t, str):
            raise InputError(f"{where}: input {i!r} is not a string")
        if i in seen:
            dup.append(i)
        seen[i] = k
    if dup:
        raise InputError(f"{where}: duplicate input ids {sorted(set(dup))[:10]} — ids must be unique")
    return list(pairs)


def check_models(names: Sequence[str], allow_download: bool = False) -> list[str]:
    """The model names, validated: offline models and ``tiny-random…`` names (any name with
    ``allow_download``). Raises UnknownModelError before anything is loaded or written."""
    from ..models.registry import OFFLINE_MODELS
    from ..models.tiny import parse_tiny_name

    names = [n.strip() for n in names if n and n.strip()]
    if not names:
        raise UnknownModelError("no model given")
    if len(set(names)) != len(names):
        raise UnknownModelError(f"model listed twice in {names}")
    if not allow_download:
        bad = [n for n in names if n not in OFFLINE_MODELS and parse_tiny_name(n) is None]
        if bad:
            raise UnknownModelError(f"unknown model(s) {bad}; offline models: {', '.join(OFFLINE_MODELS)}, "
                                    "tiny-random[-gpt2|-llama][-l<L>][-h<H>] (hub names need --allow-download)")
    return names


def make_items(analysis: str, inputs: Sequence[tuple[str, str]], models: Sequence[str], config: dict,
               options: dict | None = None) -> list[WorkItem]:
    """Every (input × model) pair with one config, models outermost (a worker's items together)."""
    inputs = check_inputs(inputs)
    return [WorkItem(analysis, i, k, t, m, config, dict(options or {}))
            for m in models for k, (i, t) in enumerate(inputs)]


def package_versions() -> dict:
    """Versions recorded in every row."""
    out = {"python": platform.python_version()}
    for dist in ("interp_toolkit", "torch", "transformer-lens", "transformers", "numpy"):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            out[dist] = None
    return out
