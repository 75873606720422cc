"""s-Trace on the real offline models (short prompts): GQA on SmolLM2, post-norms on Gemma 3."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from interp_toolkit.adapter import as_adapter
from interp_toolkit.strace import build_graph, expected_counts, trace
from interp_toolkit.strace.graph import edge_skeleton, run_cached
from interp_toolkit.strace.importance import edge_scores, edge_vectors

pytestmark = pytest.mark.real

PROMPT = "The capital of France is Paris, and the capital of Italy is"


@pytest.fixture(params=["smollm2", "gemma3"])
def real(request):
    return request.getfixturevalue(request.param)


def test_graph_sizes_and_l1_shortcut(real):
    adapter, tokens, logits, cache = run_cached(real, PROMPT)
    T = tokens.shape[1]
    sk = edge_skeleton(adapter.n_layers, adapter.n_heads, T)
    assert sk["src"].shape[0] == expected_counts(adapter.n_layers, adapter.n_heads, T)[0]
    vec = edge_vectors(adapter, cache, sk, T)
    short = edge_scores(adapter, cache, sk, T, p=1)
    np.testing.assert_allclose(short, vec.abs().sum(-1).numpy(), rtol=2e-4, atol=1e-5 * float(short.max()))
    # completeness: the linearised post-norms (Gemma) and final norm make edges add up
    L = adapter.n_layers
    sums = torch.zeros((2 * L + 1) * T, adapter.d_model, dtype=torch.float64)
    sums.index_add_(0, torch.as_tensor(sk["dst"]), vec)
    for l in (0, L // 2, L - 2):
        mid = cache[adapter.hook_name("resid_mid", l)][0].double()
        b = adapter.b_O(l).double()
        if adapter.has_post_norms:
            scale = cache[adapter.hook_name("ln1_post_scale", l)][0]
            b = adapter.linear_norm(adapter.b_O(l), scale, "ln1_post", l).double()
        torch.testing.assert_close(sums[(2 * l + 1) * T:(2 * l + 2) * T] + b, mid, rtol=1e-3, atol=1e-3 * float(mid.abs().max()))


def test_trace_full_graph_and_attention_ablation(real):
    res = trace(real, PROMPT, sizes=(0.01, 0.3), conditions=("trace", "inverse"))
    assert res.n_edges == expected_counts(res.n_layers, res.n_heads, res.n_pos)[0]
    assert res.tv["trace"][-1] < 1e-5 and res.nucleus["trace"][-1] == 99
    assert res.tv["inverse"][-1] > 0.1  # everything ablated
    assert res.tv["trace"][0] > res.tv["trace"][-2]
    assert not np.isnan(res.unigram_full) and -1 <= res.unigram_full <= 1
    assert res.meta["name"] in ("smollm2-135m", "gemma3-270m")


def test_grouped_query_heads(smollm2):
    adapter = as_adapter(smollm2)
    assert adapter.n_kv_heads < adapter.n_heads
    g = build_graph(smollm2, "Once upon a time")
    assert set(np.unique(g.head[g.head >= 0])) == set(range(adapter.n_heads))
