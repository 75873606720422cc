"""The sections of the analysis report: a small registry.

A section is a name, a title, a one-paragraph reading guide and a function
``run(adapter, prompt, options) -> core.Result`` whose ``report()`` gives the section's
``Page``. ``options`` holds the analysis settings (``DEFAULT_OPTIONS``) and ``others``, the
adapters of the models to compare with (sections with ``needs_others`` run only when there
are some). ``register_optional`` adds a section from a package that may be absent (an analysis
installed separately); ``UNAVAILABLE`` says why such a section is missing.
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass
from typing import Callable

import torch

from ..core import Result
from ..interactions import compare_models, compute_interactions
from ..geometry import quick_geometry
from ..lens import quick_lens
from ..strace import trace
from .attention import attention_patterns

DEFAULT_OPTIONS: dict = {
    "strace_sizes": (1e-3, 1e-2, 1e-1),      # small strata set (the full graph is added)
    "strace_conditions": ("trace", "inverse"),
    "n_players": 8,                          # 2^8 = 256 masked inputs, exact LP
    "baseline": "pad",
    "attention_layers": None,                # None: first, middle, last
    "lens": "logit",
    "max_batch_tokens": None,
    "seed": 0,
}


class SectionUnavailable(RuntimeError):
    """A section that cannot run in this installation (missing package or function)."""


@dataclass(frozen=True)
class Section:
    name: str
    title: str
    guide: str
    run: Callable[..., Result]
    needs_others: bool = False


SECTIONS: dict[str, Section] = {}
UNAVAILABLE: dict[str, str] = {}


def register_section(section: Section) -> Section:
    """Add (or replace) a section; the report shows sections in registration order."""
    SECTIONS[section.name] = section
    UNAVAILABLE.pop(section.name, None)
    return section


def check_options(options: dict | None) -> dict:
    """``DEFAULT_OPTIONS`` updated with ``options``; unknown keys are an error."""
    options = dict(options or {})
    bad = sorted(set(options) - set(DEFAULT_OPTIONS) - {"others"})
    if bad:
        raise ValueError(f"unknown analysis option(s) {bad}; known: {sorted(DEFAULT_OPTIONS)}")
    return {**DEFAULT_OPTIONS, **options}


def check_sections(names) -> list[str]:
    """``names`` as a list (None: every registered section); unknown names are an error."""
    names = list(SECTIONS) if names is None else list(names)
    unknown = [n for n in names if n not in SECTIONS and n not in UNAVAILABLE]
    if unknown:
        raise ValueError(f"unknown section(s) {unknown}; known: {list(SECTIONS) + list(UNAVAILABLE)}")
    return names


# ---------------------------------------------------------------------- built-in sections
def _strace(adapter, prompt, options) -> Result:
    sizes = sorted(options["strace_sizes"])
    return trace(adapter, prompt, sizes=sizes, conditions=options["strace_conditions"], seed=options["seed"],
                 max_batch_tokens=options["max_batch_tokens"], keep_subgraphs=(sizes[len(sizes) // 2],),
                 token_freq=None)


def _interactions(adapter, prompt, options) -> Result:
    return compute_interactions(adapter, prompt, n=options["n_players"], baseline=options["baseline"], method="lp",
                                max_batch_tokens=options["max_batch_tokens"], progress=options.get("progress", False))


def _comparison(adapter, prompt, options) -> Result:
    # compared on the first model's next word (an error if it is not one token in every model)
    with torch.no_grad():
        top = int(adapter.forward(adapter.as_tokens(prompt))[0, -1].argmax())
    target = adapter.tokenizer.decode([top])
    return compare_models([adapter, *options["others"]], prompt, n=options["n_players"], baselines=options["baseline"],
                          target=target, method="lp", max_batch_tokens=options["max_batch_tokens"],
                          progress=options.get("progress", False),
                          known=[options.get("done", {}).get("interactions")])  # reused when it matches


def _attention(adapter, prompt, options) -> Result:
    return attention_patterns(adapter, prompt, options["attention_layers"])


def _optional(module: str, function: str, **kwargs_from_options: str) -> Callable[..., Result]:
    """Section function calling ``module.function(model, prompt, **kwargs)``."""

    def run(adapter, prompt, options) -> Result:
        fn = getattr(importlib.import_module(module), function, None)
        if fn is None:
            raise SectionUnavailable(f"{module} has no {function}()")
        return fn(adapter.model, prompt, **{k: options[v] for k, v in kwargs_from_options.items()})

    return run


def register_optional(name: str, module: str, function: str, title: str, guide: str, **kwargs) -> None:
    """Register the section when ``module`` is part of the installation, else note why not."""
    if importlib.util.find_spec(module) is None:
        UNAVAILABLE[name] = f"{module} is not part of this installation"
        return
    register_section(Section(name, title, guide, _optional(module, function, **kwargs)))


register_section(Section(
    "strace", "s-Trace: the computation graph of the next token",
    "Every edge of the prompt's computation graph (each head from each source position, each MLP, each "
    "residual path) gets an importance; best-first growth from the output keeps a fraction s of the edges. "
    "The drawing shows the stratum of the middle size (s = 0.01 by default) over positions (x) and layers "
    "(y: a = attention, m = MLP): where the most important computation happens. The curve gives the total variation (TV) between the full model's "
    "next-token distribution and the stratum's: trace-only keeps only the stratum (low TV at small s = a "
    "small subgraph suffices), inverse removes only the stratum (high TV = the stratum is needed). The "
    "table lists the numbers and each stratum's top prediction.",
    _strace))

register_section(Section(
    "interactions", "AND-OR interactions between the words",
    "The target token's log-odds is computed on every subset of n words of the prompt (the other words "
    "replaced by a baseline embedding) and decomposed exactly into AND interactions (words that count only "
    "together) and OR interactions (any one of them suffices), with the sparsest such decomposition (exact "
    "LP). The table lists the strongest interactions drawn on the prompt (blue raises the target, red lowers "
    "it); strength by order shows whether the prediction rests on single words or on combinations; "
    "Shapley values share each interaction equally among its words.",
    _interactions))

register_section(Section(
    "comparison", "Interactions shared between the models",
    "The same words and the same target in both models (the first model's next word). The scatter puts each subset's interaction in "
    "one model against the other: points near the diagonal are shared interactions. Sign-aware overlap and "
    "transferability measure how many salient interactions the models share; the joint extraction chooses "
    "the AND/OR split for both models at once, which shows how much sharing the split alone can create.",
    _comparison, needs_others=True))

def _lens(adapter, prompt, options) -> Result:
    return quick_lens(adapter.model, prompt, lens=options["lens"])


def _geometry(adapter, prompt, options) -> Result:
    return quick_geometry(adapter.model, prompt)


register_section(Section(
    "lens", "Logit lens: the prediction layer by layer",
    "The residual stream after each layer is decoded with the model's own final norm and unembedding. "
    "Read the heatmap by rows (layers, bottom to top) and columns (positions): a cell shows what the model "
    "would predict if it stopped there. The layer at which the final prediction first appears and stays is "
    "its earliest decision depth; early guesses that later flip show the model refining its prediction.",
    _lens))

register_section(Section(
    "geometry", "Latent geometry of the hidden states",
    "The hidden state of every position after every layer, projected to two dimensions. Points of one layer "
    "drifting together show the residual stream's evolution with depth; norms by position show the first "
    "token's outsized norm (attention sink); a curve ordered by position reveals the positional "
    "structure.",
    _geometry))

register_section(Section(
    "attention", "Attention patterns",
    "Each thumbnail is one head's attention pattern (rows: query positions, columns: key positions; darker = "
    "more attention); click a head to enlarge it and hover over tokens to read the weights. Heads that put "
    "most weight on the first token act as attention sinks; a stripe just below the diagonal marks "
    "previous-token heads. Layers shown: the first, the middle and the last; the static figure gives the "
    "last position's attention in every head.",
    _attention))
