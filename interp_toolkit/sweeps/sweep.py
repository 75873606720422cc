"""``run_sweep``: validate everything, then run the missing items of a sweep into its store.

    from interp_toolkit.sweeps import run_sweep
    run = run_sweep("trace", inputs=[("0", "The cat sat on the mat")], models=["smollm2-135m"],
                    out_dir="runs/trace", config={"sizes": [0.01, 0.1]})
    run.table          # one row per (input, model), from the parquet store

Order of checks: analysis and config, models, inputs, the store (read-only), the runner
(connect) — only then is anything written, so bad input never overwrites a results directory.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Sequence

import pandas as pd

from .items import check_inputs, check_models, make_items
from .registry import get_analysis
from .runners import LocalRunner, Runner
from .store import SweepStore


@dataclass
class SweepRun:
    """What a call to ``run_sweep`` did: the full table (all rows in the store, including
    earlier runs'), how many items ran now and how many were already there."""

    table: pd.DataFrame
    store: SweepStore
    analysis: str
    config: dict
    n_items: int
    n_run: int
    n_skipped: int
    seconds: float
    runner: str
    extra: dict = field(default_factory=dict)

    @property
    def n_missing(self) -> int:
        return self.n_items - self.n_skipped - self.n_run

    def summary(self) -> dict:
        from .registry import get_analysis

        a = get_analysis(self.analysis)
        out = {"analysis": self.analysis, "runner": self.runner, "items": self.n_items, "ran": self.n_run,
               "resumed": self.n_skipped, "missing": self.n_missing, "seconds": round(self.seconds, 2),
               "errors": int(self.table["error"].notna().sum()) if "error" in self.table else 0}
        if a.summarize is not None and len(self.table):
            out["aggregate"] = a.summarize(self.table)
        return out


def prepare_config(analysis: str, config: dict | None) -> dict:
    a = get_analysis(analysis)
    config = dict(config or {})
    return a.check_config(config) if a.check_config else config


def run_sweep(analysis: str, inputs: Sequence[tuple[str, str]], models: Sequence[str], out_dir, *,
              config: dict | None = None, runner: Runner | None = None, load: dict | None = None,
              options: dict | None = None, progress: bool = True, max_items: int | None = None,
              max_total: int | None = None, time_budget_s: float | None = None,
              allow_download: bool = False) -> SweepRun:
    """Run ``analysis`` over inputs × models into the parquet store at ``out_dir`` (resumes).

    Args:
        analysis: a registered analysis name (``registry.analysis_names()``).
        inputs: ``(id, text)`` pairs (ids unique); see ``items.read_inputs``.
        models: model names (offline or ``tiny-random…``; any with ``allow_download``).
        config: the analysis' settings (``check_config`` fills defaults).
        runner: ``LocalRunner()`` (default) or ``RayRunner(...)`` (started here if needed; closing
            it — its actors, a Ray instance it started — is the caller's, e.g. ``with RayRunner() as r``).
        options: settings passed to every item that do not change results (not in the key).
        load: model load options for workers (``device``, ``dtype``, ``backend``).
        max_items: run at most this many new items; max_total: stop once this many of the
            sweep's items are stored (counting earlier runs'); time_budget_s: stop starting
            new items after this many seconds.
    """
    t0 = time.perf_counter()
    a = get_analysis(analysis)
    config = prepare_config(analysis, config)
    models = check_models(models, allow_download=allow_download)
    inputs = check_inputs(inputs)
    store = SweepStore(out_dir)
    store.check(analysis, config)
    items = make_items(analysis, inputs, models, config, options)
    done = store.done_keys() if store.rows_dir.exists() else set()
    todo = [it for it in items if it.key not in done]
    n_done = len(items) - len(todo)
    if max_items is not None:
        todo = todo[: max(0, max_items)]
    if max_total is not None:
        todo = todo[: max(0, max_total - n_done)]
    own = runner is None  # a runner passed in is the caller's to close (Ray actors kept for the next sweep)
    runner = runner or LocalRunner()
    runner.start()
    try:
        store.create(analysis, config)
        deadline = time.monotonic() + time_budget_s if time_budget_s is not None else None
        n = runner.run(a, todo, inputs, store.write_row, load={**(load or {}), "allow_download": allow_download},
                       progress=progress, deadline=deadline) if todo else 0
    finally:
        if own:
            runner.close()
    keys = {it.key for it in items}
    table = store.table()
    table = table[table["key"].isin(keys)].reset_index(drop=True)
    return SweepRun(table, store, analysis, config, len(items), n, n_done, time.perf_counter() - t0, runner.name)
