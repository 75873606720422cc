"""``analyze``: every registered section on one prompt, with progress bars."""

from __future__ import annotations

import datetime
import sys
import time
from typing import Sequence

import torch
from tqdm import tqdm

from .._version import __version__
from ..adapter import as_adapter
from .result import AnalysisReport
from .sections import SECTIONS, UNAVAILABLE, SectionUnavailable, check_options, check_sections


def analyze(model, prompt: str, *, others: Sequence = (), sections: Sequence[str] | None = None,
            options: dict | None = None, progress: bool | None = None, errors: str = "record") -> AnalysisReport:
    """Run the report's sections on ``prompt``.

    Args:
        model: the model every section runs on (HookedTransformer, TransformerBridge, adapter).
        prompt: the text (sections that choose words need a string).
        others: models to compare with (the ``comparison`` section runs only with some).
        sections: names to run (default: every registered section that applies).
        options: overrides of ``sections.DEFAULT_OPTIONS`` (unknown keys are an error).
        progress: tqdm bars on stderr (default: when stderr is a terminal).
        errors: ``"record"`` (a section that raises is listed under ``skipped`` as
            ``"failed: <error>"`` and the others still run) or ``"raise"``.
    """
    if not isinstance(prompt, str) or not prompt.strip():
        raise ValueError("prompt must be a non-empty string")
    if errors not in ("record", "raise"):
        raise ValueError(f"errors must be 'record' or 'raise', not {errors!r}")
    adapter = as_adapter(model)
    other_adapters = [as_adapter(m) for m in others]
    opts = check_options(options)
    progress = sys.stderr.isatty() if progress is None else progress
    wanted = check_sections(sections)
    skipped = {n: UNAVAILABLE[n] for n in (UNAVAILABLE if sections is None else wanted) if n in UNAVAILABLE}
    todo = [SECTIONS[n] for n in wanted if n in SECTIONS and (other_adapters or not SECTIONS[n].needs_others)]
    results, timings = {}, {}
    bar = tqdm(todo, desc="analyze", unit="section", disable=not progress, file=sys.stderr)
    for sec in bar:
        bar.set_postfix_str(sec.name)
        t0 = time.perf_counter()
        try:
            results[sec.name] = sec.run(adapter, prompt, {**opts, "others": other_adapters, "progress": progress,
                                                          "done": dict(results)})  # earlier sections' results
        except SectionUnavailable as exc:
            skipped[sec.name] = str(exc)
        except Exception as exc:  # noqa: BLE001 (recorded in the report, or re-raised)
            if errors == "raise":
                raise
            skipped[sec.name] = f"failed: {type(exc).__name__}: {exc}"
        timings[sec.name] = time.perf_counter() - t0
    return AnalysisReport(
        prompt=prompt, models=[adapter.meta] + [a.meta for a in other_adapters], sections=results,
        titles={s.name: s.title for s in SECTIONS.values()}, guides={s.name: s.guide for s in SECTIONS.values()},
        skipped=skipped, timings=timings, options=opts,
        meta={"toolkit_version": __version__, "torch_threads": torch.get_num_threads(),
              "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")})
