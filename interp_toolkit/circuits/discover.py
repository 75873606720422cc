"""One call from a model and a task name to a ``CircuitResult``: score, select, evaluate."""

from __future__ import annotations

import time

import numpy as np
import torch

from ..adapter import as_adapter
from ..core.memory import peak_memory
from .evaluate import SIZES, check_sizes, faithfulness_curves
from .graph import CircuitGraph
from .methods import Setting, get_method
from .result import CircuitResult
from .tasks import TaskData, build_task

DEFAULT_METHODS = ("eap", "eap-ig-inputs", "eap-ig-activations", "exact", "strace", "random")


def _method_options(name: str, steps: int, exact_max_edges: int, exact_prompts: int | None,
                    greedy_steps: int, greedy_pool: int) -> dict:
    if name.startswith("eap-ig"):
        return {"steps": steps}
    if name == "exact":
        return {"max_edges": exact_max_edges, "n_prompts": exact_prompts}
    if name == "greedy":
        return {"max_steps": greedy_steps, "pool": greedy_pool, "n_prompts": exact_prompts}
    return {}


def discover_circuit(model, task: str | TaskData = "ioi", methods=DEFAULT_METHODS, *, n_prompts: int = 16,
                     seed: int = 0, sizes=SIZES, selection: str = "top_n", ablation: str = "corrupt",
                     steps: int = 5, exact_max_edges: int = 3000, exact_prompts: int | None = None,
                     greedy_steps: int = 32, greedy_pool: int = 256, max_batch_tokens: int = 2048,
                     n_attention_heads: int = 6, progress: bool = False) -> CircuitResult:
    """Score the circuit graph's edges with each method, evaluate circuits of ``sizes``.

    Args:
        model: HookedTransformer (or adapter) without post-sublayer norms.
        task: a task name (``tasks.TASKS``) built with ``n_prompts`` and ``seed``, or ``TaskData``.
        methods: names in ``methods.METHODS``.
        sizes: circuit sizes, fractions of the edges in (0, 1].
        selection: ``top_n`` or ``greedy_connected``; ablation: ``corrupt``, ``zero``, ``mean``.
        steps: integration steps of the EAP-IG methods.
        exact_max_edges: exact patching per edge up to this many edges, else per node.
        exact_prompts: exact patching and the exact greedy on the first this many prompts only
            (default all).
        greedy_steps, greedy_pool: edges the exact greedy adds, and its candidate pool (all
            edges when there are at most this many, else the top |EAP| edges).
    """
    adapter = as_adapter(model)
    methods = list(methods)
    for m in methods:
        get_method(m)  # unknown names fail before any work
    sizes = check_sizes(sizes)
    data = task if isinstance(task, TaskData) else build_task(adapter, task, n_prompts=n_prompts, seed=seed)
    graph = CircuitGraph(adapter.n_layers, adapter.n_heads)
    st = Setting(adapter, graph, data, ablation=ablation, max_batch_tokens=max_batch_tokens, seed=seed)
    scores, times, mems = {}, {}, {}
    for name in methods:
        with peak_memory(adapter.device) as mem:
            t0 = time.perf_counter()
            opts = _method_options(name, steps, exact_max_edges, exact_prompts, greedy_steps, greedy_pool)
            s = get_method(name)(st, progress=progress, **opts)
            if adapter.device.type == "cuda":
                torch.cuda.synchronize()
            times[name] = time.perf_counter() - t0
        mems[name] = mem["mb"]
        scores[name] = np.asarray(s, dtype=np.float64)
    curves = faithfulness_curves(st, scores, sizes, selection)
    res = CircuitResult(
        task=data.name, task_summary=data.summary(), n_prompts=data.n_prompts, n_layers=adapter.n_layers,
        n_heads=adapter.n_heads, methods=methods, scores={k: v.tolist() for k, v in scores.items()},
        sizes=list(sizes), curves=curves, time_s=times, peak_mem_mb=mems, selection=selection, ablation=ablation,
        example=({"clean": data.examples[0].clean, "corrupt": data.examples[0].corrupt} if data.examples else {}),
        meta={**adapter.meta, "seed": seed, "steps": steps, "device": str(adapter.device),
              "max_batch_tokens": max_batch_tokens, "n_edges": graph.n_edges,
              **({"greedy_steps": greedy_steps, "greedy_pool": greedy_pool} if "greedy" in methods else {})})
    res.attention = top_head_attention(adapter, res, data, n_attention_heads)
    return res


@torch.no_grad()
def top_head_attention(adapter, res: CircuitResult, data: TaskData, k: int) -> dict:
    """Attention patterns of the ``k`` heads with the largest summed |edge score| on the first
    clean prompt (plain observation forward)."""
    if k <= 0 or not data.batches:
        return {}
    imp = res.head_importance()
    flat = np.argsort(-imp.ravel(), kind="stable")[:k]
    heads = [(int(i // res.n_heads), int(i % res.n_heads)) for i in flat]
    tokens = data.batches[0].clean[:1].to(adapter.device)
    names = [adapter.hook_name("pattern", l) for l in sorted({l for l, _ in heads})]
    _, cache = adapter.run_with_cache(tokens, names=names, return_type=None)
    patterns = np.stack([cache[adapter.hook_name("pattern", l)][0, h].float().cpu().numpy() for l, h in heads])
    return {"str_tokens": adapter.to_str_tokens(tokens[0]), "heads": [f"L{l}H{h}" for l, h in heads],
            "patterns": patterns.round(4)}
