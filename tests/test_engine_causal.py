"""Causal prefix reuse by position (engine/causal.py) equals the dense kernel and the loop twin."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from _engine_support import single_thread  # noqa: F401  (autouse fixture)
from test_engine import KINDS, _assert_close, _sizes, _spec

from interp_toolkit.engine import MaskError, MaskSpec, masked_forward, masked_forward_loop
from interp_toolkit.engine.causal import build_trie, sort_rows
from interp_toolkit.engine.kernel import reuse_plan
from interp_toolkit.models import tiny_model

T = 7


@pytest.fixture(scope="module", params=["gpt2", "llama"])
def hooked(request):
    """(model, prompt, another prompt's cache) on HookedTransformer (learned positions /
    rotary with grouped-query attention)."""
    model = tiny_model(request.param, backend="hooked", n_layers=3, n_heads=4, init_std=0.3)
    g = torch.Generator().manual_seed(1)
    tokens = torch.randint(0, model.cfg.d_vocab, (T,), generator=g)
    _, cache = model.run_with_cache(torch.randint(0, model.cfg.d_vocab, (T,), generator=g))
    return model, tokens, cache


def _untouched_before(spec: MaskSpec, first: torch.Tensor) -> MaskSpec:
    """The spec with every row ``r`` keeping everything at (destination) positions
    ``< first[r]``: rows then share prefixes of different lengths."""
    out = MaskSpec(spec.n_rows)
    pos = torch.arange(T)
    for (site, layer), keep in spec.entries.items():
        keep = keep.clone().to(torch.float32)
        if site == "pattern":
            keep = keep.expand(-1, -1, T, -1).clone()
            keep[(pos[None] < first[:, None])[:, None, :, None].expand_as(keep)] = 1
        else:
            keep = keep.expand(-1, T, *keep.shape[2:]).clone()
            early = (pos[None] < first[:, None]).reshape(*first.shape, T, *[1] * (keep.ndim - 2))
            keep[early.expand_as(keep)] = 1
        out.set(site, layer, keep)
    return out


@pytest.mark.hooked_only
@pytest.mark.parametrize("with_reference", [False, True], ids=["zero", "reference"])
@pytest.mark.parametrize("kind", KINDS)
def test_causal_equals_dense_and_loop(hooked, kind, with_reference):
    model, tokens, cache = hooked
    H, Hkv, L = _sizes(model)
    first = torch.tensor([0, 2, 3, 3, 5, 6])
    spec = _untouched_before(_spec(kind, T, H, Hkv, L), first)
    kwargs = {"reference": cache} if with_reference else {}
    if kind == "embed" and not with_reference:
        kwargs["baseline"] = torch.randn(model.cfg.d_model, generator=torch.Generator().manual_seed(3))
    expected = masked_forward_loop(model, tokens, spec, **kwargs)
    dense = masked_forward(model, tokens, spec, **kwargs)
    smallest = _smallest_budget(model, tokens, spec, kwargs.get("reference"))
    computed = set()
    for budget in (None, smallest, smallest + T):  # one chunk; the smallest budget; a little more
        plan = {}
        got = masked_forward(model, tokens, spec, position_reuse=True, reuse_plan=plan,
                             max_batch_tokens=budget, **kwargs)
        assert plan["mode"] == "causal"
        computed.add(plan["computed_positions"])
        _assert_close(got, expected, expected.abs().max())
        _assert_close(got, dense, dense.abs().max())
    assert len(computed) == 1  # chunks keep the caches later chunks need: nothing is recomputed


def _smallest_budget(model, tokens, spec, reference=None) -> int:
    """The smallest ``max_batch_tokens`` that holds one prefix group (segments and caches)."""
    for budget in range(T, 50 * T):
        try:
            reuse_plan(model, tokens, spec, reference=reference, max_batch_tokens=budget)
            return budget
        except MaskError:
            continue
    raise AssertionError("no budget up to 50 rows fits")


@pytest.mark.hooked_only
@pytest.mark.parametrize("output", ["logits", "final_resid", "last_log_probs", "metric_full"])
def test_outputs_at_every_position(hooked, output):
    """Outputs at every position join the segments of each leaf's ancestors."""
    model, tokens, cache = hooked
    H, Hkv, L = _sizes(model)
    spec = _untouched_before(_spec("mixed", T, H, Hkv, L, seed=5), torch.tensor([1, 1, 4, 4, 4, 6]))
    kw = dict(output=output)
    if output == "metric_full":
        kw = dict(output=lambda lg: lg[:, :, 3].sum(-1), metric_input="logits")
    dense = masked_forward(model, tokens, spec, reference=cache, **kw)
    got = masked_forward(model, tokens, spec, reference=cache, position_reuse=True,
                         max_batch_tokens=_smallest_budget(model, tokens, spec, cache), **kw)
    _assert_close(got, dense, dense.abs().max())


@pytest.mark.hooked_only
def test_position_patching_with_per_row_references(hooked):
    """Per-row references take part in the prefix ids: rows whose reference values differ
    at a position do not share it."""
    model, tokens, _ = hooked
    K = 2 * T
    keep = torch.ones(K, T, dtype=torch.bool)
    keep[torch.arange(K), torch.arange(K) % T] = False  # row k patches position k mod T
    spec = MaskSpec(K).set("resid_pre", 1, keep)
    g = torch.Generator().manual_seed(4)
    ref = {"blocks.1.hook_resid_pre": torch.randn(K, T, model.cfg.d_model, generator=g)}
    ref["blocks.1.hook_resid_pre"][:, :3] = 0.5  # the same values early on: those are shared
    expected = masked_forward_loop(model, tokens, spec, reference=ref)
    plan = {}
    got = masked_forward(model, tokens, spec, reference=ref, position_reuse=True, reuse_plan=plan)
    _assert_close(got, expected, expected.abs().max())
    assert plan["computed_positions"] < plan["dense_positions"]


@pytest.mark.hooked_only
def test_row_order_does_not_matter(hooked):
    model, tokens, cache = hooked
    H, Hkv, L = _sizes(model)
    spec = _untouched_before(_spec("mixed", T, H, Hkv, L, seed=2), torch.tensor([2, 5, 2, 3, 5, 3]))
    perm = torch.tensor([3, 0, 5, 1, 4, 2])
    a = masked_forward(model, tokens, spec, reference=cache, position_reuse=True)
    b = masked_forward(model, tokens, spec.select(perm), reference=cache, position_reuse=True)
    _assert_close(b, a[perm], a.abs().max())


def _harsanyi_positions(positions: list[int], n_pos: int) -> int:
    """Closed form: players at ``p_1 < … < p_n`` (one token each), all 2^n subsets: the trie
    has 2^i nodes on ``[p_i, p_{i+1})`` (``p_0 = 0``, ``p_{n+1} = n_pos``)."""
    bounds = [0, *positions, n_pos]
    return sum(2 ** i * (bounds[i + 1] - bounds[i]) for i in range(len(bounds) - 1))


@pytest.mark.parametrize("positions", [[2, 4, 5], [0, 6], [1, 2, 3, 4]])
def test_plan_counts_closed_form(positions):
    model = tiny_model("gpt2", init_std=0.3)
    n = len(positions)
    keep = torch.ones(2 ** n, T, dtype=torch.bool)
    for s in range(2 ** n):
        for i, p in enumerate(positions):
            keep[s, p] = bool(s >> i & 1)
    plan = reuse_plan(model, torch.arange(T), MaskSpec.from_tokens(keep), max_batch_tokens=10 ** 6)
    assert plan.computed_positions == _harsanyi_positions(positions, T)
    assert plan.dense_positions == 2 ** n * T
    assert plan.n_nodes == 2 ** (n + 1) - 1  # a root of length 0 where a player is at 0


def test_trie_from_sorted_rows():
    """The trie of hand-made ids: every row's path covers [0, n_pos) exactly once, and rows
    of one node agree on [0, b)."""
    ids = torch.tensor([[0, 1, 2, 3], [0, 1, 2, 4], [0, 2, 2, 3], [1, 1, 1, 1], [0, 1, 2, 3]])
    order, lcp = sort_rows(ids)
    assert np.array_equal(ids[order].numpy(), ids[np.lexsort(ids.numpy().T[::-1])].numpy())
    nodes = build_trie(lcp, 0, 5, 4)
    s = ids[order]
    for n in nodes:
        assert (s[n.lo:n.hi, :n.b] == s[n.lo, :n.b]).all()
        if n.parent >= 0:
            assert nodes[n.parent].b == n.a
    leaves = [n for n in nodes if n.b == 4]
    assert sorted(i for n in leaves for i in range(n.lo, n.hi)) == list(range(5))
    # root [0,0) (rows differ at 0); [0,1) for the rows starting 0; [1,3) for those going on
    # 1,2; leaves [3,4) ×2 (the row [0,1,2,3] twice is one leaf), [1,4), and [0,4) for [1,1,1,1]
    assert sorted((n.a, n.b) for n in nodes) == [(0, 0), (0, 1), (0, 4), (1, 3), (1, 4), (3, 4), (3, 4)]
    assert sum(n.b - n.a for n in nodes) == 12


def test_fallback_and_errors(make_tiny, backend):
    """Where the model class has no key/value cache forward, position reuse runs the dense
    path (and says so); bad budgets and masks of another length fail clearly."""
    model = make_tiny("llama", init_std=0.3)
    tokens = torch.arange(T)
    keep = torch.ones(4, T, dtype=torch.bool)
    keep[1:, 4] = False
    keep[2:, 5] = False
    spec = MaskSpec.from_tokens(keep)
    base = torch.zeros(model.cfg.d_model)
    plan = {}
    got = masked_forward(model, tokens, spec, baseline=base, position_reuse=True, reuse_plan=plan)
    _assert_close(got, masked_forward(model, tokens, spec, baseline=base), got.abs().max())
    assert plan["mode"] == ("causal" if backend == "hooked" else "dense")
    with pytest.raises(MaskError, match="memory budget of 6 tokens"):
        masked_forward(model, tokens, spec, baseline=base, position_reuse=True, max_batch_tokens=T - 1)
    if backend == "hooked":  # the path to a leaf holds more than one row's positions
        with pytest.raises(MaskError, match="too small for one prefix group"):
            masked_forward(model, tokens, spec, baseline=base, position_reuse=True, max_batch_tokens=T)
    plan = {}  # "auto" and the dense fallback run dense instead
    got = masked_forward(model, tokens, spec, baseline=base, position_reuse="auto", max_batch_tokens=T,
                         reuse_plan=plan)
    assert plan["mode"] == "dense"
    _assert_close(got, masked_forward(model, tokens, spec, baseline=base), got.abs().max())
    with pytest.raises(MaskError, match="prompt length"):
        masked_forward(model, tokens[:-1], spec, baseline=base, position_reuse=True)
    with pytest.raises(ValueError, match="position_reuse"):
        masked_forward(model, tokens, spec, baseline=base, position_reuse="yes")


@pytest.mark.hooked_only
def test_auto_takes_the_cheaper_path(hooked):
    model, tokens, _ = hooked
    late = torch.ones(64, T, dtype=torch.bool)
    late[torch.arange(64), T - 1] = torch.arange(64) % 2 == 0  # only the last position differs
    early = torch.rand(8, T, generator=torch.Generator().manual_seed(0))  # soft masks, all
    # rows differ at position 0: nothing to share
    for keep, mode in ((late, "causal"), (early, "dense")):
        plan = {}
        masked_forward(model, tokens, MaskSpec.from_tokens(keep), position_reuse="auto", reuse_plan=plan)
        assert plan["mode"] == mode


# ---------------------------------------------------------------------------- real model
@pytest.mark.real
@pytest.mark.hooked_only
def test_causal_equals_dense_smollm2(smollm2):
    """SmolLM2: input-token masks, position-specific patching from a clean run, and mixed
    masks, with causal reuse equal to the dense kernel."""
    model = smollm2
    tokens = model.to_tokens("The capital of France is the city of")[0]
    n = tokens.shape[0]
    _, clean = model.run_with_cache(model.to_tokens("The capital of Italy is the city of")[0],
                                    names_filter=lambda h: h.endswith(("resid_pre", "hook_z")))
    players = [2, 4, n - 2]
    keep = torch.ones(8, n, dtype=torch.bool)
    for s in range(8):
        for i, p in enumerate(players):
            keep[s, p] = bool(s >> i & 1)
    patch = torch.ones(6, n, dtype=torch.bool)
    patch[torch.arange(6), n - 1 - torch.arange(6) % 3] = False  # last three positions
    patching = MaskSpec(6).set("resid_pre", 3, torch.cat([patch[:3], torch.ones(3, n, dtype=torch.bool)]))
    patching.set("resid_pre", 15, torch.cat([torch.ones(3, n, dtype=torch.bool), patch[3:]]))
    z = torch.rand(4, n, 9, generator=torch.Generator().manual_seed(0)) > 0.3
    z[:, :n - 3] = True
    mixed = MaskSpec(4).set("embed", None, keep[4:]).set("z", 20, z)
    cases = [(MaskSpec.from_tokens(keep), dict(baseline=torch.zeros(model.cfg.d_model))),
             (patching, dict(reference=clean)),
             (mixed, dict(reference=clean, baseline=torch.zeros(model.cfg.d_model)))]
    for spec, kw in cases:
        dense = masked_forward(model, tokens, spec, **kw)
        plan = {}
        got = masked_forward(model, tokens, spec, position_reuse=True, reuse_plan=plan, **kw)
        assert plan["computed_positions"] < plan["dense_positions"]
        err = float((got - dense).abs().max())
        assert err <= 1e-3 * max(1.0, float(dense.abs().max())), err
    assert math.isfinite(err)
