"""Guess-then-Refine: logit lens and tuned lens, frequency buckets, decision depth.

>>> from interp_toolkit.lens import run_lens, quick_lens
>>> r = quick_lens(model, "The capital of France is")      # logit lens, every layer
>>> print(r.table()); r.write_html("lens.html")
"""

from .decode import kl_div, ranks_of, run_lens, target_id
from .lenses import SITES, LogitLens
from .results import LensResult

__all__ = ["run_lens", "LensResult", "LogitLens", "SITES", "ranks_of", "kl_div", "target_id"]
