"""s-Trace conditions as the reference defines them (inverse/random rows keep every residual
skip path; the random control grows node-uniformly, residual/MLP edges first) and the
final-norm linearisation on the MLP node's edges only, with the stricter variants."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from _engine_support import single_thread  # noqa: F401  (autouse fixture)
from backends import arch_backend_params
from interp_toolkit.adapter import as_adapter
from interp_toolkit.engine import masked_forward
from interp_toolkit.models import tiny_model
from interp_toolkit.strace import build_graph, stratify, trace
from interp_toolkit.strace.evaluate import strata_spec
from interp_toolkit.strace.graph import ATTN, MLP, RESID_ATTN, RESID_MLP, edge_skeleton, run_cached
from interp_toolkit.strace.importance import edge_scores, edge_vectors
from interp_toolkit.strace.stratify import random_growth_nodes
from test_strace_stratify import synthetic_graph

SIZES = {"gpt2": dict(n_layers=2, n_heads=3), "llama": dict(n_layers=3, n_heads=4)}


@pytest.fixture(scope="module", **arch_backend_params(SIZES))
def model(request):
    arch, backend = request.param
    return tiny_model(arch, init_std=0.3, backend=backend, **SIZES[arch])


def prompt(n, seed=0):
    return torch.randint(4, 64, (n,), generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------------- random growth
def test_random_nodes_growth_takes_residual_and_mlp_edges_first():
    """(Connectivity and seeding: test_strace_stratify.) Every node takes all its residual/MLP
    edges before any of its attention edges."""
    g = synthetic_graph(3, 2, 6)
    a = random_growth_nodes(g, seed=3)
    pos = np.empty(g.n_edges, dtype=np.int64)
    pos[a] = np.arange(g.n_edges)
    for node in np.unique(g.dst):
        inc = np.flatnonzero(g.dst == node)
        att = g.kind[inc] == ATTN
        if att.any() and (~att).any():
            assert pos[inc[~att]].max() < pos[inc[att]].min()


def test_random_nodes_growth_draws_nodes_uniformly():
    """After the first edge (into the output node, a residual or MLP edge) two nodes are open:
    the output node (one edge left) and the first edge's source; each is drawn with p = 1/2,
    whatever their number of incoming edges (edge-uniform growth would favour the source)."""
    g = synthetic_graph(2, 4, 5)
    out_edges = np.flatnonzero(g.dst == g.output_node)
    hits = 0
    for seed in range(400):
        a = random_growth_nodes(g, n_max=2, seed=seed)
        assert a[0] in out_edges and g.kind[a[0]] != ATTN
        hits += int(a[1] in out_edges)
    assert abs(hits / 400 - 0.5) < 0.08


# ---------------------------------------------------------------------- conditions
def _rows(spec, site, layer):
    return spec.entries[(site, layer)] if (site, layer) in spec.entries else None


def test_reference_controls_keep_every_skip_path(model):
    g = build_graph(model, prompt(6))
    st = stratify(g, (0.05, 0.3))
    rnd = stratify(g, (0.05, 0.3), method="random_nodes")
    ref = strata_spec(g, {"trace": st, "inverse": st, "random": rnd}, controls="reference")
    strict = strata_spec(g, {"trace": st, "inverse": st, "random": rnd}, controls="strict")
    R = len(st)
    for site in ("skip_attn", "skip_mlp"):
        cut_ref = [_rows(ref, site, l) for l in range(g.n_layers)]
        cut_strict = [_rows(strict, site, l) for l in range(g.n_layers)]
        for m in cut_ref:  # inverse and random rows: every skip path kept
            assert m is None or m[R:].all()
        assert any(m is not None and not m[R:].all() for m in cut_strict)
        for a, b in zip(cut_ref, cut_strict):  # trace-only rows identical (None = all kept)
            a = a[:R].all() if a is not None and a[:R].all() else a
            b = b[:R].all() if b is not None and b[:R].all() else b
            if a is None or b is None or a.ndim == 0 or b.ndim == 0:
                assert all(x is None or bool(x.all()) for x in (a, b))
            else:
                assert torch.equal(a[:R], b[:R])


def test_inverse_of_the_whole_graph_leaves_only_the_skip_paths(model):
    """Reference inverse row at s = 1 ablates every attention and MLP edge and keeps the skip
    paths: the output is the unembedded embedding of the last token (closed form)."""
    g = build_graph(model, prompt(6))
    st = stratify(g, (0.5,))
    spec = strata_spec(g, {"trace": st, "inverse": st}, controls="reference")
    logits = masked_forward(model, prompt(6), spec, output="last_logits")[-1].double()
    adapter, _, _, cache = run_cached(model, prompt(6))
    expect = adapter.logits_from_resid(cache[adapter.hook_name("resid_pre", 0)][0, -1]).double()
    torch.testing.assert_close(logits, expect, rtol=1e-5, atol=1e-5)


def test_trace_records_controls_and_rows_differ(model):
    ref = trace(model, prompt(7), sizes=(0.05, 0.3), token_freq=None)
    strict = trace(model, prompt(7), sizes=(0.05, 0.3), token_freq=None, controls="strict")
    assert ref.meta["controls"] == "reference" and strict.meta["controls"] == "strict"
    np.testing.assert_allclose(ref.tv["trace"], strict.tv["trace"], atol=1e-9)
    assert not np.allclose(ref.tv["inverse"], strict.tv["inverse"])
    with pytest.raises(ValueError, match="controls"):
        trace(model, prompt(7), sizes=(0.5,), token_freq=None, controls="loose")


# ---------------------------------------------------------------------- final norm
def test_final_norm_on_mlp_edges_only_shortcut_and_raw_vectors(model):
    adapter, tokens, _, cache = run_cached(model, prompt(6))
    sk = edge_skeleton(adapter.n_layers, adapter.n_heads, 6)
    vec = edge_vectors(adapter, cache, sk, 6, final_norm="mlp")
    np.testing.assert_allclose(edge_scores(adapter, cache, sk, 6, p=1, final_norm="mlp"),
                               vec.abs().sum(-1).numpy(), rtol=1e-5, atol=1e-6)
    L = adapter.n_layers
    last = sk["layer"] == L - 1
    # edges into the last attention node: raw residual vectors (no final norm)
    ra = np.flatnonzero(last & (sk["kind"] == RESID_ATTN))
    raw = cache[adapter.hook_name("resid_pre", L - 1)][0][sk["dst"][ra] % 6].double()
    torch.testing.assert_close(vec[ra], raw, rtol=1e-5, atol=1e-6)
    # edges into the last MLP node: the same as with the final norm on every edge
    vall = edge_vectors(adapter, cache, sk, 6, final_norm="all")
    into_mlp = np.flatnonzero(last & np.isin(sk["kind"], [RESID_MLP, MLP]))
    torch.testing.assert_close(vec[into_mlp], vall[into_mlp])
    into_attn = np.flatnonzero(last & np.isin(sk["kind"], [RESID_ATTN, ATTN]))
    assert not torch.allclose(vec[into_attn], vall[into_attn])
    g = build_graph(model, prompt(6), final_norm="mlp")
    assert g.final_norm == "mlp"
    with pytest.raises(ValueError, match="final_norm"):
        build_graph(model, prompt(6), final_norm="none")
