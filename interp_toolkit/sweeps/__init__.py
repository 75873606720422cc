"""Sweeps: many inputs × models × one analysis, as keyed work items run by a runner
(in-process or on Ray) into a resumable parquet store. See ``sweep.run_sweep``."""

from .items import InputError, UnknownModelError, WorkItem, item_key, make_items, read_inputs
from .registry import (ANALYSIS_MODULES, Analysis, ItemOutput, UnknownAnalysisError, analysis_names, get_analysis,
                       register_analysis)
from .runners import LocalRunner, RayRunner, RunnerError, make_runner
from .store import SCHEMA_VERSION, StoreError, SweepStore
from .sweep import SweepRun, run_sweep

__all__ = ["run_sweep", "SweepRun", "SweepStore", "SCHEMA_VERSION", "StoreError", "WorkItem", "item_key",
           "make_items", "read_inputs", "InputError", "UnknownModelError", "Analysis", "ItemOutput",
           "register_analysis", "get_analysis", "analysis_names", "ANALYSIS_MODULES", "UnknownAnalysisError",
           "LocalRunner", "RayRunner", "RunnerError", "make_runner"]
