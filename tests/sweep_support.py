"""Sweep analyses for the tests: a work function that kills its own process once.

Importable by Ray workers (the tests put this folder on the PYTHONPATH of the Ray instance
they start), so an ``Analysis`` built here pickles by reference.
"""

from __future__ import annotations

import os
from pathlib import Path

from interp_toolkit.interactions.sweep import check_interactions_config, interactions_work, prepare_baseline
from interp_toolkit.sweeps import register_analysis


def crash_once_work(adapter, item, state):
    """``interactions_work``, except that the item named in ``options["crash_on"]`` kills the
    worker process (``os._exit``) the first time it runs (marker file ``options["marker"]``)."""
    marker = Path(item.options["marker"])
    if item.input_id == item.options["crash_on"] and not marker.exists():
        marker.write_text(str(os.getpid()))
        os._exit(17)
    return interactions_work(adapter, item, state)


CRASH_ONCE = register_analysis("interactions-crash-once", crash_once_work, prepare=prepare_baseline,
                               check_config=check_interactions_config)
