"""Guess-then-Refine: logit lens and tuned lens, frequency buckets, decision depth.

>>> from interp_toolkit.lens import run_lens, quick_lens
>>> r = quick_lens(model, "The capital of France is")      # logit lens, every layer
>>> print(r.table()); r.write_html("lens.html")
"""

from .api import get_lens, lens_dir, quick_lens
from .decode import kl_div, ranks_of, run_lens, run_lenses, target_id
from .lenses import SITES, LogitLens
from .frequency import BUCKETS, FrequencyTable, from_corpus, from_wordfreq
from .metrics import K_GRID, DepthMetrics
from .patching import DecisionPatching, decision_patching
from .results import LensResult
from .tuned import LensMismatchError, TunedLens

__all__ = ["quick_lens", "get_lens", "lens_dir", "TunedLens", "LensMismatchError", "FrequencyTable",
           "from_corpus", "from_wordfreq", "BUCKETS", "K_GRID", "DepthMetrics", "DecisionPatching",
           "decision_patching", "run_lens", "run_lenses", "LensResult", "LogitLens", "SITES", "ranks_of", "kl_div", "target_id"]
