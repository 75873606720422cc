"""The analyses a sweep can run: a name → one work function (plus optional hooks).

An analysis plugs into sweeps by registering, at import time of its own module::

    from interp_toolkit.sweeps.registry import register_analysis

    def work(adapter, item, state) -> dict: ...        # one item → one row of scalars/lists
    register_analysis("lens", work, summarize=..., check_config=..., bad_input=(ValueError,))

and by listing that module in ``ANALYSIS_MODULES`` below (imported on first lookup, so the
sweep package never imports an analysis it does not run). That is the whole change needed to
add ``lens`` or ``circuit`` sweeps: the module with its ``register_analysis`` call, and its
line here.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Callable

# Modules that call ``register_analysis`` when imported; add one line per analysis.
ANALYSIS_MODULES: tuple[str, ...] = (
    "interp_toolkit.strace.dataset",
    "interp_toolkit.interactions.sweep",
    "interp_toolkit.lens.sweep",
    "interp_toolkit.circuits.sweep",
)


class UnknownAnalysisError(ValueError):
    """No analysis of that name is registered."""


@dataclass(frozen=True)
class ItemOutput:
    """What a work function may return instead of a bare row: the row plus large artefacts
    (name → bytes), stored beside the table under ``artefacts/<item key>/<name>``."""

    row: dict
    artefacts: dict[str, bytes] = field(default_factory=dict)


@dataclass(frozen=True)
class Analysis:
    """One registered analysis.

    Attributes:
        name: the name sweeps refer to (``"trace"``, ``"interactions"`` …).
        work: ``work(adapter, item, state) -> dict | ItemOutput``; one row of JSON-able
            scalars and lists for one work item. Must be deterministic given the item (its
            config carries the seed): runners compare equal across machines.
        prepare: ``prepare(adapter, config, inputs) -> state``, once per model and worker
            before its first item (e.g. a baseline learned on the first inputs); None → state None.
        check_config: ``check_config(config) -> config``: validate and normalise (fill
            defaults) before any item is made; raises ValueError on bad settings.
        summarize: ``summarize(table) -> dict`` aggregate statistics over the stored rows.
        report: ``report(table, path) -> Path`` an offline HTML page of the aggregate figures.
        bad_input: exceptions that mark one input as bad (row with ``error`` set, the sweep
            goes on); any other exception stops the sweep.
    """

    name: str
    work: Callable[..., Any]
    prepare: Callable[..., Any] | None = None
    check_config: Callable[[dict], dict] | None = None
    summarize: Callable[[Any], dict] | None = None
    report: Callable[[Any, Any], Any] | None = None
    bad_input: tuple[type[BaseException], ...] = (ValueError,)
    help: str = ""


ANALYSES: dict[str, Analysis] = {}


def register_analysis(name: str, work: Callable, **kwargs) -> Analysis:
    """Add (or replace) the analysis ``name``; keyword arguments as in ``Analysis``."""
    a = Analysis(name, work, **kwargs)
    ANALYSES[name] = a
    return a


def _load_modules() -> None:
    for mod in ANALYSIS_MODULES:  # a listed module that is missing or broken is an error
        importlib.import_module(mod)


def analysis_names() -> list[str]:
    _load_modules()
    return sorted(ANALYSES)


def get_analysis(name: str) -> Analysis:
    """The registered analysis ``name``; UnknownAnalysisError listing the known ones otherwise."""
    if name not in ANALYSES:
        _load_modules()
    if name not in ANALYSES:
        raise UnknownAnalysisError(f"unknown analysis {name!r}; known: {', '.join(sorted(ANALYSES)) or 'none'}")
    return ANALYSES[name]
