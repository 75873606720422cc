"""Activation patching of the decision layer: the engine's rows equal a plain hook loop, the
first layer equals swapping the last token (rotary model), the last layer transfers every
answer, and the helpers equal brute force."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from _engine_support import single_thread  # noqa: F401  (autouse fixture)
from backends import DEFAULT_BACKEND, HAS_HOOKED

from interp_toolkit.adapter import ModelAdapter
from interp_toolkit.core import load_result
from interp_toolkit.lens.patching import DecisionPatching, decision_patching, first_stable_layer, pair_prompts
from interp_toolkit.models import tiny_model

PROMPTS = ["abcdef", "fedcba", "aabbcc", "cabbad", "bcd", "dcb", "ebd", "abcdefgh", "hgfedcba"]


MODELS = ([("llama", "hooked"), ("gpt2", "hooked")] if HAS_HOOKED else []) + [("llama", "bridge")]


@pytest.fixture(scope="module", params=MODELS, ids=lambda p: "-".join(p))
def model(request):
    arch, backend = request.param
    return tiny_model(arch, backend=backend, n_layers=3, init_std=0.3, dtype=torch.float64)


def test_helpers_equal_brute_force():
    for flags in itertools.product([False, True], repeat=4):
        f = np.array(flags)
        want = next((l for l in range(5) if f[l:].all()), 4)
        assert first_stable_layer(f) == want
    pairs = pair_prompts([3, 5, 3, 3, 5, 7])
    assert sorted(pairs) == sorted([(2, 0), (3, 2), (0, 3), (4, 1), (1, 4)])


@pytest.mark.parametrize("site", ["resid_pre", "resid_post"])
@torch.no_grad()
def test_rows_equal_a_hook_loop(model, site):
    a = ModelAdapter(model)
    r = decision_patching(model, PROMPTS, site=site, progress=False)
    assert r.n_pairs > 3 and r.transfer.shape == (r.n_pairs, a.n_layers)
    toks = [a.to_tokens(p)[0] for p in PROMPTS]
    for j, (s, t) in enumerate(zip(r.sources, r.targets)):
        y_s = int(a.forward(toks[s][None])[0, -1].argmax())
        assert y_s != int(a.forward(toks[t][None])[0, -1].argmax())
        for i, l in enumerate(r.layers):
            name = a.hook_name(site, l)
            _, cache = a.run_with_cache(toks[s][None], names=[name], return_type=None)
            src = cache[name][0, -1].clone()

            def hook(x, hook=None, src=src):
                x = x.clone()
                x[:, -1] = src
                return x
            probs = a.forward(toks[t][None], fwd_hooks=[(name, hook)])[0, -1].softmax(-1)
            assert r.transfer[j, i] == (int(probs.argmax()) == y_s)
            assert r.p_source[j, i] == pytest.approx(float(probs[y_s]), abs=1e-9)


@torch.no_grad()
def test_closed_forms(model):
    """resid_post of the last block: the output reads only that state, so every pair transfers
    with the source's own probability. resid_pre of block 0 in a rotary model is the token
    embedding: patching it is swapping the last token."""
    a = ModelAdapter(model)
    post = decision_patching(model, PROMPTS, site="resid_post", progress=False)
    assert post.transfer[:, -1].all()
    for j, s in enumerate(post.sources):
        p = a.forward(a.to_tokens(PROMPTS[s]))[0, -1].softmax(-1)
        assert post.p_source[j, -1] == pytest.approx(float(p.max()), abs=1e-9)
    assert (post.causal_layer <= a.n_layers - 1).all()
    if a.positional == "rotary":
        pre = decision_patching(model, PROMPTS, site="resid_pre", layers=[0], progress=False)
        for j, (s, t) in enumerate(zip(pre.sources, pre.targets)):
            swapped = a.to_tokens(PROMPTS[t]).clone()
            swapped[0, -1] = a.to_tokens(PROMPTS[s])[0, -1]
            p = a.forward(swapped)[0, -1].softmax(-1)
            y_s = int(a.forward(a.to_tokens(PROMPTS[s]))[0, -1].argmax())
            assert pre.p_source[j, 0] == pytest.approx(float(p[y_s]), abs=1e-9)


def test_result_roundtrip_report_and_errors(tmp_path):
    model = tiny_model("llama", backend=DEFAULT_BACKEND, n_layers=3, init_std=0.3)
    r = decision_patching(model, PROMPTS, progress=False)
    back = load_result(r.save(tmp_path / "d.json"))
    assert isinstance(back, DecisionPatching)
    np.testing.assert_array_equal(back.transfer, r.transfer)
    np.testing.assert_allclose(back.p_source, r.p_source)
    np.testing.assert_array_equal(back.lens_layer, r.lens_layer)
    assert "transfer rate by layer" in r.summary() and "<img" in r.to_html()
    assert r.lens_decided()[-1] == 1.0  # the lens at the last resid_post is the output
    with pytest.raises(ValueError, match="site"):
        decision_patching(model, PROMPTS, site="attn_out")
    with pytest.raises(ValueError, match="two prompts"):
        decision_patching(model, PROMPTS[:1])
    with pytest.raises(ValueError, match="out of range"):
        decision_patching(model, PROMPTS, layers=[3])
    none = decision_patching(model, ["abc", "abcd"], progress=False)  # no two of equal length
    assert none.n_pairs == 0 and "no pair" in none.summary()
