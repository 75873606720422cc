"""One report of several analyses of one prompt (``interp-toolkit analyze``).

    rep = analyze(model, "The capital of France is Paris, and the capital of Italy is")
    rep                      # displays itself in Jupyter / Colab (offline HTML)
    rep.write_html("report.html"); rep.save("report.json")

Sections (``sections.SECTIONS``): s-Trace, AND-OR interactions (and their comparison across
models), the logit lens and latent geometry when those packages are installed, attention
patterns (circuitsvis widgets).
"""

from .attention import AttentionResult, attention_patterns
from .result import AnalysisReport
from .run import analyze
from .sections import DEFAULT_OPTIONS, SECTIONS, UNAVAILABLE, Section, register_section

__all__ = ["analyze", "AnalysisReport", "AttentionResult", "attention_patterns", "Section", "SECTIONS",
           "UNAVAILABLE", "DEFAULT_OPTIONS", "register_section"]
