"""s-Trace graph: closed-form sizes, importance normalisation, the L1 shortcut, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from _engine_support import single_thread  # noqa: F401  (autouse fixture)
from backends import arch_backend_params
from interp_toolkit.models import tiny_model
from interp_toolkit.strace import build_graph, expected_counts
from interp_toolkit.strace.graph import ATTN, MLP, RESID_ATTN, RESID_MLP, edge_skeleton, run_cached
from interp_toolkit.strace.importance import edge_scores, edge_vectors


# llama: grouped-query attention, 4 query heads on 2 key/value heads
SIZES = {"gpt2": dict(n_layers=3, n_heads=3), "llama": dict(n_layers=3, n_heads=4)}


@pytest.fixture(scope="module", **arch_backend_params(SIZES))
def model(request):
    arch, backend = request.param
    return tiny_model(arch, init_std=0.3, backend=backend, **SIZES[arch])


@pytest.fixture(scope="module")
def gpt2():
    return tiny_model("gpt2", init_std=0.3, **SIZES["gpt2"])


def prompt(n, seed=0):
    return torch.randint(4, 64, (n,), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("L,H,T", [(1, 1, 2), (2, 3, 5), (3, 4, 7), (4, 2, 11), (30, 9, 40)])
def test_skeleton_matches_closed_form(L, H, T):
    sk = edge_skeleton(L, H, T)
    E, N = expected_counts(L, H, T)
    assert sk["src"].shape[0] == E
    assert np.union1d(np.unique(sk["src"]), [(2 * L) * T + T - 1]).shape[0] == N
    # every edge goes one slot up; the last layer keeps only the last position
    assert np.all(sk["dst"] // T == sk["src"] // T + 1)
    last = sk["layer"] == L - 1
    assert np.all(sk["dst"][last] % T == T - 1)
    # per kind: attention edges s <= t, one per head; node edges stay at their position
    attn = sk["kind"] == ATTN
    assert np.all(sk["src"][attn] % T <= sk["dst"][attn] % T)
    assert np.all(sk["src"][~attn] % T == sk["dst"][~attn] % T)
    assert attn.sum() == (L - 1) * H * T * (T + 1) // 2 + H * T


def test_graph_counts_on_models(model):
    for T in (2, 6):
        g = build_graph(model, prompt(T))
        E, N = expected_counts(model.cfg.n_layers, model.cfg.n_heads, T)
        assert (g.n_edges, g.n_nodes) == (E, N)


@pytest.mark.parametrize("mode", ["l1", "l2", "random"])
def test_incoming_weights_sum_to_one(model, mode):
    g = build_graph(model, prompt(6), mode=mode)
    sums = g.incoming_sums()
    has_in = np.bincount(g.dst, minlength=sums.shape[0]) > 0
    np.testing.assert_allclose(sums[has_in], 1.0, atol=1e-12)
    assert np.all(g.weight >= 0)
    assert g.mode == mode


def test_norm_shortcut_equals_brute_force(model):
    adapter, tokens, _, cache = run_cached(model, prompt(6))
    sk = edge_skeleton(adapter.n_layers, adapter.n_heads, 6)
    vec = edge_vectors(adapter, cache, sk, 6)  # [E, d_model], built edge by edge
    for p, brute in ((1, vec.abs().sum(-1)), (2, vec.norm(dim=-1))):
        short = edge_scores(adapter, cache, sk, 6, p=p)
        np.testing.assert_allclose(short, brute.numpy(), rtol=1e-5, atol=1e-6)


def test_edge_vectors_add_up_to_the_node_states(model):
    """Completeness: the vectors entering a node (plus b_O) sum to the node's state; in the
    last layer, after the linearised final norm, to the normalised output (without bias)."""
    adapter, tokens, _, cache = run_cached(model, prompt(5))
    T, L = 5, adapter.n_layers
    sk = edge_skeleton(L, adapter.n_heads, T)
    vec = edge_vectors(adapter, cache, sk, T)
    sums = torch.zeros((2 * L + 1) * T, adapter.d_model, dtype=torch.float64)
    sums.index_add_(0, torch.as_tensor(sk["dst"]), vec)
    for l in range(L - 1):
        mid = cache[adapter.hook_name("resid_mid", l)][0].double()
        post = cache[adapter.hook_name("resid_pre", l + 1)][0].double()
        b_O = adapter.b_O(l).double()
        torch.testing.assert_close(sums[(2 * l + 1) * T:(2 * l + 2) * T] + b_O, mid, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(sums[(2 * l + 2) * T:(2 * l + 3) * T], post, rtol=1e-4, atol=1e-4)
    final = (cache[adapter.hook_name("resid_mid", L - 1)] + cache[adapter.hook_name("mlp_out", L - 1)])[0, -1]
    scale = cache[adapter.hook_name("final_scale")][0, -1]
    expect = adapter.linear_norm(final, scale).double()
    torch.testing.assert_close(sums[(2 * L) * T + T - 1], expect, rtol=1e-4, atol=1e-4)


def test_attention_edges_follow_pattern_times_value_norm(gpt2):
    """Within a node, an attention edge's weight is A[h,t,s]·‖v[s,h]W_O[h]‖₁ / Σ."""
    adapter, tokens, _, cache = run_cached(gpt2, prompt(5))
    g = build_graph(gpt2, prompt(5))
    l, t = 0, 3
    node = (2 * l + 1) * 5 + t
    sel = np.flatnonzero(g.dst == node)
    pattern = cache[adapter.hook_name("pattern", l)][0]
    v = cache[adapter.hook_name("v", l)][0]
    raw = []
    for e in sel:
        if g.kind[e] == RESID_ATTN:
            raw.append(cache[adapter.hook_name("resid_pre", l)][0, t].abs().sum())
        else:
            h, s = g.head[e], g.src[e] % 5
            raw.append(pattern[h, t, s] * (v[s, h] @ adapter.W_O(l)[h]).abs().sum())
    raw = torch.stack(raw).detach().double().numpy()
    np.testing.assert_allclose(g.weight[sel], raw / raw.sum(), rtol=1e-5)


def test_kinds_per_node(gpt2):
    g = build_graph(gpt2, prompt(4))
    H = gpt2.cfg.n_heads
    for node in np.unique(g.dst):
        kinds = g.kind[g.dst == node]
        slot, t = node // 4, node % 4
        if slot % 2 == 1:
            assert (kinds == RESID_ATTN).sum() == 1 and (kinds == ATTN).sum() == H * (t + 1)
        else:
            assert sorted(kinds.tolist()) == [RESID_MLP, MLP]


def test_random_mode_is_seeded(gpt2):
    a = build_graph(gpt2, prompt(5), mode="random", seed=1).weight
    b = build_graph(gpt2, prompt(5), mode="random", seed=1).weight
    c = build_graph(gpt2, prompt(5), mode="random", seed=2).weight
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)


def test_depth_quartiles_and_types(gpt2):
    g = build_graph(gpt2, prompt(4))
    assert set(np.unique(g.depth_quartile())) <= {0, 1, 2, 3}
    assert set(np.unique(g.edge_type)) == {0, 1, 2}


def test_bad_input(gpt2):
    with pytest.raises(ValueError, match="unknown importance mode"):
        build_graph(gpt2, prompt(4), mode="alti")
    with pytest.raises(ValueError, match="at least 2 tokens"):
        build_graph(gpt2, prompt(1))
    with pytest.raises(ValueError, match="context"):
        build_graph(gpt2, prompt(gpt2.cfg.n_ctx + 1))
    with pytest.raises(ValueError, match="empty"):
        build_graph(gpt2, "   ")
    with pytest.raises(ValueError, match="one prompt"):
        build_graph(gpt2, torch.zeros(2, 4, dtype=torch.long))
