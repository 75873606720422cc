"""``trace``: graph → strata → one batched masked forward → metrics, for one prompt."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import torch

from ..adapter import as_adapter
from ..engine import masked_forward
from . import metrics as M
from .ablation import keep_from_rank, masks_from_keep
from .frequency import token_frequencies
from .graph import EDGE_TYPES, RESID_ATTN, RESID_MLP, ComputationGraph, build_graph
from .importance import check_mode
from .results import CONDITIONS, TraceResult
from .stratify import SIZE_GRID, Strata, check_sizes, stratify


#: how the inverse and random rows treat residual skip paths (see ``strata_spec``)
CONTROLS = ("reference", "strict")


def check_controls(controls: str) -> str:
    if controls not in CONTROLS:
        raise ValueError(f"controls must be one of {CONTROLS}, got {controls!r}")
    return controls


@dataclass
class StrataOutputs:
    """Next-token probabilities of every stratum under every condition."""

    probs: dict[str, np.ndarray]  # condition -> [n_strata, vocab] float64
    n_rows: int
    seconds: float


def check_conditions(conditions) -> tuple[str, ...]:
    conditions = (conditions,) if isinstance(conditions, str) else tuple(conditions)
    bad = [c for c in conditions if c not in CONDITIONS]
    if bad or not conditions:
        raise ValueError(f"unknown condition(s) {bad}; choose from {CONDITIONS}")
    if "trace" not in conditions:
        raise ValueError("the 'trace' condition is required (metrics are defined on it)")
    return tuple(c for c in CONDITIONS if c in conditions)


def condition_strata(graph: ComputationGraph, sizes, conditions, seed: int = 0,
                     controls: str = "reference") -> dict[str, Strata]:
    """The strata each condition evaluates: best-first for ``trace`` (and ``inverse``, which
    ablates the same strata), a random connected growth for ``random`` — node-uniform with
    residual/MLP edges first under ``controls="reference"``, edge-uniform under ``"strict"``."""
    best = stratify(graph, sizes)
    strata = {"trace": best}
    if "inverse" in conditions:
        strata["inverse"] = best
    if "random" in conditions:
        strata["random"] = stratify(graph, sizes, method="random_nodes" if controls == "reference" else "random",
                                    seed=seed)
    return strata


def strata_spec(graph: ComputationGraph, strata: dict[str, Strata], ablate_attention: bool = True,
                controls: str = "reference"):
    """One ``MaskSpec`` with a row per (condition, stratum), conditions in ``strata`` order.
    ``strata["random"]`` is a random growth whose prefixes are kept like trace-only rows.
    ``controls="reference"`` (default, as the reference defines them): the inverse and random
    rows keep every residual skip path (residual-attention and residual-MLP edges), so only
    attention and MLP edges are ablated there; ``"strict"``: skip paths follow the mask like
    every other edge. Trace-only rows are the same either way.
    Components outside the pruned graph cannot reach the output; they are kept in every row,
    so that rows keeping the whole graph cost no forward at all (the engine reuses the
    unmasked model for rows that touch nothing)."""
    check_controls(controls)
    resid = (graph.kind == RESID_ATTN) | (graph.kind == RESID_MLP)
    keeps, labels = [], []
    for cond, st in strata.items():
        keep = keep_from_rank(st.rank(), st.counts, invert=cond == "inverse")
        if controls == "reference" and cond in ("inverse", "random"):
            keep[:, resid] = True
        keeps.append(keep)
        labels += [(cond, s) for s in st.sizes]
    return masks_from_keep(graph, np.concatenate(keeps), True, labels, ablate_attention=ablate_attention)


def evaluate_strata(model, graph: ComputationGraph, strata: dict[str, Strata], *,
                    max_batch_tokens: int | None = None, prefix_reuse: bool = True,
                    rows_per_forward: int | None = None, ablate_attention: bool = True,
                    controls: str = "reference") -> StrataOutputs:
    """All strata × conditions through ``engine.masked_forward`` in one call.

    ``rows_per_forward=1`` evaluates one stratum per forward (for timing comparisons);
    ``ablate_attention=False`` reproduces the reference code's defect (see ``ablation``)."""
    adapter = as_adapter(model)
    t0 = time.perf_counter()
    spec = strata_spec(graph, strata, ablate_attention=ablate_attention, controls=controls)
    tokens = torch.tensor(graph.tokens, device=adapter.device)[None]
    if rows_per_forward is not None:
        max_batch_tokens = int(rows_per_forward) * graph.n_pos
    # causal prefix reuse where strata leave early positions untouched ("auto": only when it
    # saves work; never for the one-stratum-per-forward timing baseline)
    logits = masked_forward(adapter, tokens, spec, output="last_logits", max_batch_tokens=max_batch_tokens,
                            prefix_reuse=prefix_reuse, progress=False,
                            position_reuse="auto" if rows_per_forward is None and prefix_reuse else False)
    probs = logits.double().softmax(-1).cpu().numpy()
    out, start = {}, 0
    for cond, st in strata.items():
        out[cond] = probs[start:start + len(st)]
        start += len(st)
    return StrataOutputs(out, spec.n_rows, time.perf_counter() - t0)


def _edges_of(graph: ComputationGraph, idx: np.ndarray) -> dict[str, list]:
    return {"src": graph.src[idx].tolist(), "dst": graph.dst[idx].tolist(), "kind": graph.kind[idx].tolist(),
            "head": graph.head[idx].tolist(), "weight": [round(float(w), 6) for w in graph.weight[idx]]}


def trace(model, prompt, *, sizes=SIZE_GRID, mode: str = "l1", conditions=CONDITIONS, seed: int = 0,
          max_batch_tokens: int | None = None, prefix_reuse: bool = True, rows_per_forward: int | None = None,
          keep_subgraphs=(1e-3, 1e-2), token_freq="auto", ablate_attention: bool = True,
          controls: str = "reference", final_norm: str = "all") -> TraceResult:
    """s-Trace one prompt (DESIGN §3).

    Args:
        model: HookedTransformer, TransformerBridge or ModelAdapter.
        prompt: text or token ids (at least 2 tokens, at most the model's context).
        sizes: stratum sizes in (0, 1] (fractions of the graph's edges); the full graph is
            added. Default: the reference's 26-size grid.
        mode: edge importance, ``"l1"`` (default), ``"l2"`` or ``"random"``.
        conditions: subset of ``("trace", "inverse", "random")``; ``"trace"`` is required.
        seed: seed of the random-connected control (and of ``mode="random"``).
        max_batch_tokens: engine memory budget (rows × positions per forward).
        prefix_reuse: passed to the engine.
        rows_per_forward: evaluate this many strata per forward (1 = one forward per
            stratum, for timing); default: as many as fit ``max_batch_tokens``.
        keep_subgraphs: stratum sizes whose edges are stored in the result (for drawing).
        token_freq: unigram frequencies per token id, None to skip, or ``"auto"`` (from
            ``wordfreq`` through the model's tokenizer).
        ablate_attention: True (always, for results). False leaves attention edges
            unablated, reproducing the stored reference code's defect — only to measure
            what the defect changes.
        controls: ``"reference"`` (default): inverse and random rows keep every residual skip
            path and the random control grows node-uniformly, residual/MLP edges first
            (``stratify.random_growth_nodes``), as the reference defines them; ``"strict"``:
            skip paths follow the mask and the random control grows edge-uniformly.
        final_norm: last-layer edges scored through the linearised final norm: ``"all"``
            (default) or ``"mlp"`` (edges into the last MLP node only, as the reference).
    """
    mode = check_mode(mode)
    sizes = check_sizes(sizes)
    conditions = check_conditions(conditions)
    controls = check_controls(controls)
    adapter = as_adapter(model)
    timings = {}
    clock = _Clock(timings)

    clock.start()
    graph = build_graph(adapter, prompt, mode=mode, seed=seed, final_norm=final_norm)
    clock.stop("graph")

    clock.start()
    strata = condition_strata(graph, sizes, conditions, seed, controls)
    best = strata["trace"]
    clock.stop("stratify")

    clock.start()
    outputs = evaluate_strata(adapter, graph, strata, max_batch_tokens=max_batch_tokens,
                              prefix_reuse=prefix_reuse, rows_per_forward=rows_per_forward,
                              ablate_attention=ablate_attention, controls=controls)
    clock.stop("evaluate")

    clock.start()
    p = torch.as_tensor(graph.logits).softmax(-1).numpy()
    if isinstance(token_freq, str) and token_freq == "auto":
        token_freq = token_frequencies(adapter.tokenizer, p.shape[-1])
    tv = {c: M.total_variation(p, q).tolist() for c, q in outputs.probs.items()}
    kl = {c: M.kl_divergence(p, q).tolist() for c, q in outputs.probs.items()}
    nucleus = {c: M.shared_nucleus(p, q).tolist() for c, q in outputs.probs.items()}
    auc = {c: M.auc_tv(sizes, v) for c, v in tv.items()}
    q_trace = outputs.probs["trace"]
    unigram = M.unigram_encoding(q_trace, token_freq).tolist()
    unigram_full = float(M.unigram_encoding(p[None], token_freq)[0])
    top = np.argsort(-p)[:5]
    str_of = _token_text(adapter)
    result = TraceResult(
        prompt=prompt if isinstance(prompt, str) else None,
        tokens=list(graph.tokens),
        str_tokens=[str_of(t) for t in graph.tokens],
        n_layers=graph.n_layers, n_heads=graph.n_heads, n_pos=graph.n_pos,
        n_edges=graph.n_edges, n_nodes=graph.n_nodes,
        sizes=list(sizes), counts=list(best.counts), mode=mode, seed=seed, conditions=list(conditions),
        tv=tv, kl=kl, nucleus=nucleus, auc_tv=auc,
        required_size=M.required_sizes(sizes, nucleus["trace"]),
        entropy=M.entropy(p),
        full_top=[(int(t), str_of(int(t)), float(p[t])) for t in top],
        stratum_top=[str_of(int(i)) for i in q_trace.argmax(-1)],
        composition_type=M.composition(graph.edge_type, best.order, best.counts, len(EDGE_TYPES)).tolist(),
        composition_depth=M.composition(graph.depth_quartile(), best.order, best.counts, 4).tolist(),
        unigram=unigram, unigram_full=unigram_full,
        subgraphs={float(s): _edges_of(graph, best.edges(best.sizes.index(s)))
                   for s in (keep_subgraphs or ()) if s in best.sizes},
        meta={**adapter.meta, "dtype": str(adapter.dtype).replace("torch.", ""), "seed": seed,
              "n_rows": outputs.n_rows, "max_batch_tokens": max_batch_tokens,
              "prefix_reuse": prefix_reuse, "rows_per_forward": rows_per_forward,
              "ablate_attention": ablate_attention, "controls": controls, "final_norm": final_norm,
              "unigram_source": "wordfreq en top-50k" if token_freq is not None else None},
    )
    clock.stop("metrics")
    result.timings = timings
    return result


class _Clock:
    """Wall-clock seconds per phase (``name``) and process CPU seconds (``name_cpu``; all
    threads together), so that timings on a shared machine can be read either way."""

    def __init__(self, timings: dict):
        self.timings = timings

    def start(self):
        self.t0, self.c0 = time.perf_counter(), time.process_time()

    def stop(self, name: str):
        self.timings[name] = time.perf_counter() - self.t0
        self.timings[f"{name}_cpu"] = time.process_time() - self.c0


def _token_text(adapter):
    tok = adapter.tokenizer
    if tok is None:
        return lambda t: f"<{int(t)}>"
    return lambda t: tok.decode([int(t)])


def size_for_target(result: TraceResult, target: int) -> float:
    """Convenience: the smallest size whose shared nucleus reaches ``target`` % (NaN if none)."""
    return result.required_size.get(int(target), math.nan)
