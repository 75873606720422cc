"""ModelAdapter on tiny models (both architectures, every available backend) and real models."""

from __future__ import annotations

import pytest
import torch

from backends import DEFAULT_BACKEND, REAL_FIXTURES, TINY_BACKENDS
from interp_toolkit.adapter import BLOCK_SITES, MODEL_SITES, ModelAdapter, as_adapter
from interp_toolkit.models import tiny_model

PROMPT = "the capital of france is"

# Of these models only Gemma 3 has post-attention / post-MLP norms (tests assert it).
WITH_POST_NORMS = {"gemma3"}


def _cases(post_norms: bool | None = None) -> list:
    """Adapter parameters: tiny models on every backend, real models on the default one;
    ``post_norms`` keeps only the models with (True) or without (False) post norms."""
    cases = [pytest.param(("tiny", arch, b), id=f"tiny-{arch}-{b}")
             for arch in ("gpt2", "llama") for b in TINY_BACKENDS]
    cases += [pytest.param(("real", fixture, DEFAULT_BACKEND), id=f"{fixture}-{DEFAULT_BACKEND}",
                           marks=pytest.mark.real) for fixture in REAL_FIXTURES]
    if post_norms is None:
        return cases
    return [c for c in cases if (c.values[0][1] in WITH_POST_NORMS) == post_norms]


_CASES = _cases()


@pytest.fixture(params=_CASES)
def adapter(request) -> ModelAdapter:
    kind, name, backend = request.param
    if kind == "tiny":
        return ModelAdapter(tiny_model(name, backend=backend, init_std=0.3))
    return ModelAdapter(request.getfixturevalue(name))


def _expected_sites(a: ModelAdapter) -> list[tuple[str, int | None]]:
    sites = []
    for s in BLOCK_SITES:
        if "_post" in s and not a.has_post_norms:
            continue
        sites += [(s, 0), (s, a.n_layers - 1)]
    for s in MODEL_SITES:
        if s == "pos_embed" and a.positional != "standard":
            continue
        sites.append((s, None))
    return sites


def _cache(a: ModelAdapter, tokens, names=None):
    with torch.no_grad():
        return a.run_with_cache(tokens, names)


def test_every_site_resolves_in_run_with_cache(adapter):
    a = adapter
    tokens = a.as_tokens(PROMPT)
    T = tokens.shape[1]
    names = {a.hook_name(s, l) for s, l in _expected_sites(a)}
    logits, cache = _cache(a, tokens, names)
    assert logits.shape == (1, T, a.d_vocab)
    missing = names - set(cache.keys())
    assert not missing, f"hooks that never fired on {a.backend}: {sorted(missing)}"
    shapes = {
        "resid_pre": (1, T, a.d_model), "attn_out": (1, T, a.d_model), "embed": (1, T, a.d_model),
        "q": (1, T, a.n_heads, a.d_head), "k": (1, T, a.n_kv_heads, a.d_head),
        "v": (1, T, a.n_kv_heads, a.d_head), "z": (1, T, a.n_heads, a.d_head),
        "pattern": (1, a.n_heads, T, T), "scores": (1, a.n_heads, T, T),
        "final_scale": (1, T, 1), "ln1_scale": (1, T, 1),
    }
    for site, shape in shapes.items():
        layer = None if site in MODEL_SITES else 0
        assert tuple(cache[a.hook_name(site, layer)].shape) == shape, site
    pattern = cache[a.hook_name("pattern", 0)]
    torch.testing.assert_close(pattern.sum(-1), torch.ones_like(pattern.sum(-1)), rtol=0, atol=1e-5)
    assert torch.triu(pattern[0], diagonal=1).abs().max() == 0, "causal"


def test_residual_stream_adds_up(adapter):
    a = adapter
    tokens = a.as_tokens(PROMPT)
    l = a.n_layers - 1
    names = a.hook_names("resid_pre", [0, l]) + [a.hook_name(s, l) for s in ("resid_mid", "resid_post", "attn_out", "mlp_out")]
    names += [a.hook_name("embed")] + ([a.hook_name("pos_embed")] if a.positional == "standard" else [])
    _, c = _cache(a, tokens, names)
    get = lambda s, layer=None: c[a.hook_name(s, layer)]  # noqa: E731
    tol = dict(rtol=1e-5, atol=1e-4 * get("resid_post", l).abs().max().item())
    torch.testing.assert_close(get("resid_pre", l) + get("attn_out", l), get("resid_mid", l), **tol)
    torch.testing.assert_close(get("resid_mid", l) + get("mlp_out", l), get("resid_post", l), **tol)
    start = get("embed") + (get("pos_embed") if a.positional == "standard" else 0)
    torch.testing.assert_close(start, get("resid_pre", 0), **tol)


def test_logits_from_last_resid_post_equal_model_logits(adapter):
    a = adapter
    tokens = a.as_tokens(PROMPT)
    logits, c = _cache(a, tokens, [a.hook_name("resid_post", -1)])
    with torch.no_grad():
        lens = a.logits_from_resid(c[a.hook_name("resid_post", a.n_layers - 1)])
    torch.testing.assert_close(lens, logits, rtol=1e-4, atol=1e-4 * logits.abs().max().item())


def test_final_norm_recomputes_its_scale(adapter):
    a = adapter
    tokens = a.as_tokens(PROMPT)
    _, c = _cache(a, tokens, [a.hook_name("resid_post", -1), a.hook_name("final_scale")])
    resid = c[a.hook_name("resid_post", -1)]
    with torch.no_grad():
        out = a.final_norm(resid)
        assert torch.allclose(a.final_norm(3.0 * resid), out, rtol=1e-3, atol=1e-3)  # scale-invariant
        earlier = a.final_norm(c[a.hook_name("resid_post", -1)][:, :2])
    assert out.shape == resid.shape and earlier.shape == (1, 2, a.d_model)


@pytest.mark.parametrize("where", ["first", "middle", "last"])
def test_start_at_layer_reproduces_logits(adapter, where):
    a = adapter
    l = {"first": 0, "middle": a.n_layers // 2, "last": a.n_layers - 1}[where]
    tokens = a.as_tokens(PROMPT)
    logits, c = _cache(a, tokens, [a.hook_name("resid_pre", l)])
    with torch.no_grad():
        out = a.forward(c[a.hook_name("resid_pre", l)], start_at_layer=l)
    torch.testing.assert_close(out, logits, rtol=1e-4, atol=1e-4 * logits.abs().max().item())


def test_start_at_layer_hooks_and_cache(adapter):
    """From layer l: hooks of layers >= l fire (on the given residual), earlier ones do not."""
    a = adapter
    l = a.n_layers - 1
    tokens = a.as_tokens(PROMPT)
    logits, c = _cache(a, tokens, [a.hook_name("resid_pre", l), a.hook_name("mlp_out", l)])
    resid = c[a.hook_name("resid_pre", l)]
    fired = []

    def record(x, hook):
        fired.append(hook.name)

    def zero(x, hook):
        return x * 0

    with torch.no_grad():
        a.forward(resid, start_at_layer=l, fwd_hooks=[(lambda n: n.endswith("hook_resid_pre"), record),
                                                       (a.hook_name("mlp_out", 0), zero)])
        edited = a.forward(resid, start_at_layer=l, fwd_hooks=[(a.hook_name("mlp_out", l), zero)])
        logits2, c2 = a.run_with_cache(resid, [a.hook_name("mlp_out", l), a.hook_name("resid_pre", 0)],
                                       start_at_layer=l)
    # (a bridge reports its own name for an aliased hook point, e.g. blocks.{l}.hook_in)
    assert len(fired) == 1 and fired[0].startswith(f"blocks.{l}.")
    assert (edited - logits).abs().max() > 1e-3
    torch.testing.assert_close(logits2, logits, rtol=1e-4, atol=1e-4 * logits.abs().max().item())
    assert a.hook_name("resid_pre", 0) not in c2
    torch.testing.assert_close(c2[a.hook_name("mlp_out", l)], c[a.hook_name("mlp_out", l)], rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="out of range"):
        a.forward(resid, start_at_layer=a.n_layers)


@pytest.mark.parametrize("site", ["final", "ln1", "ln2"])
def test_linear_norm_with_cached_scale_is_the_norm(adapter, site):
    a = adapter
    l = a.n_layers - 1
    inputs = {"final": ("resid_post", l), "ln1": ("resid_pre", l), "ln2": ("resid_mid", l)}
    scale_site = {"final": ("final_scale", None), "ln1": ("ln1_scale", l), "ln2": ("ln2_scale", l)}[site]
    names = [a.hook_name(*inputs[site]), a.hook_name(*scale_site)]
    _, c = _cache(a, a.as_tokens(PROMPT), names)
    layer = None if site == "final" else l
    _check_linear_norm(a, site, layer, c[names[0]], c[names[1]])


@pytest.mark.parametrize("site", ["ln1_post", "ln2_post"])
@pytest.mark.parametrize("adapter", _cases(post_norms=True), indirect=True)
def test_linear_post_norm_with_cached_scale_is_the_norm(adapter, site):
    """The post norm's input is read by a forward pre-hook on the norm module itself (neither
    class has a hook point there on every backend)."""
    a = adapter
    assert a.has_post_norms
    l = a.n_layers - 1
    module = a.norm_module(site, l)
    seen = {}
    handle = module.register_forward_pre_hook(lambda m, args: seen.__setitem__("x", args[0].detach().clone()))
    try:
        scale_name = a.hook_name(f"{site}_scale", l)
        _, c = _cache(a, a.as_tokens(PROMPT), [scale_name])
    finally:
        handle.remove()
    _check_linear_norm(a, site, l, seen["x"], c[scale_name])


def _check_linear_norm(a, site, layer, x, scale):
    module = a.norm_module(site, layer)
    with torch.no_grad():
        expected = module(x)
        bias = getattr(module, "b", None)
        got = a.linear_norm(x, scale, site, layer)
        if bias is not None and a._norm_kind(module) == "LN":
            got = got + bias
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4 * expected.abs().max().item())


def test_stop_at_layer_returns_resid(adapter):
    a = adapter
    tokens = a.as_tokens(PROMPT)
    _, c = _cache(a, tokens, [a.hook_name("resid_pre", 1)])
    with torch.no_grad():
        resid = a.forward(tokens, stop_at_layer=1)
    torch.testing.assert_close(resid, c[a.hook_name("resid_pre", 1)], rtol=1e-5, atol=1e-5)


def test_weights_shapes_and_embedding(adapter):
    a = adapter
    assert a.W_O(0).shape == (a.n_heads, a.d_head, a.d_model)
    assert a.b_O(0).shape == (a.d_model,)
    assert a.W_V(0).shape == (a.n_heads, a.d_model, a.d_head)
    assert a.W_U.shape == (a.d_model, a.d_vocab) and a.b_U.shape == (a.d_vocab,)
    assert a.W_E.shape[1] == a.d_model
    tokens = a.as_tokens(PROMPT)
    _, c = _cache(a, tokens, [a.hook_name("embed")])
    with torch.no_grad():
        torch.testing.assert_close(a.W_E[tokens], c[a.hook_name("embed")], rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(a.embed(tokens), c[a.hook_name("embed")], rtol=0, atol=0)


@pytest.mark.parametrize("adapter", _cases(post_norms=False), indirect=True)
def test_head_outputs_sum_to_attn_out(adapter):  # with post norms, attn_out is taken after the norm
    a = adapter
    assert not a.has_post_norms
    tokens = a.as_tokens(PROMPT)
    l = a.n_layers - 1
    _, c = _cache(a, tokens, [a.hook_name("z", l), a.hook_name("attn_out", l)])
    with torch.no_grad():
        recon = torch.einsum("bphd,hdm->bpm", c[a.hook_name("z", l)], a.W_O(l)) + a.b_O(l)
    out = c[a.hook_name("attn_out", l)]
    torch.testing.assert_close(recon, out, rtol=1e-4, atol=1e-4 * out.abs().max().item())


def test_expand_kv_matches_value_heads(adapter):
    """v from hook_v (KV heads), expanded, equals the value computed per query head from W_V."""
    a = adapter
    tokens = a.as_tokens(PROMPT)
    l = a.n_layers - 1
    _, c = _cache(a, tokens, [a.hook_name("v", l), a.hook_name("resid_pre", l)])
    v = c[a.hook_name("v", l)]
    assert v.shape[2] == a.n_kv_heads
    expanded = a.expand_kv(v, dim=2)
    assert expanded.shape[2] == a.n_heads
    block = a.model.blocks[l]
    with torch.no_grad():
        x = block.ln1(c[a.hook_name("resid_pre", l)])
        b_V = getattr(block.attn, "b_V", None)
        if b_V is not None and b_V.shape[0] != a.n_heads:
            b_V = a.expand_kv(b_V, dim=0)
        direct = torch.einsum("bpm,hmd->bphd", x, a.W_V(l)) + (0 if b_V is None else b_V)
    torch.testing.assert_close(expanded, direct, rtol=1e-4, atol=1e-4 * direct.abs().max().item())
    # query head h reads KV head h // group_size
    g = a.group_size
    for h in range(a.n_heads):
        assert torch.equal(expanded[:, :, h], v[:, :, h // g])


@pytest.mark.hooked_only
def test_expand_kv_equals_transformer_lens_expanded_W_V():
    a = ModelAdapter(tiny_model("llama", backend="hooked", n_heads=6, n_kv_heads=2))
    attn = a.model.blocks[0].attn
    assert attn._W_V.shape[0] == 2 and a.group_size == 3
    assert torch.equal(a.expand_kv(attn._W_V, dim=0), attn.W_V)
    assert torch.equal(a.W_V(0), attn.W_V)


@pytest.mark.real
@pytest.mark.hooked_only
def test_expand_kv_on_smollm2_equals_transformer_lens(smollm2):
    a = ModelAdapter(smollm2)
    assert (a.n_heads, a.n_kv_heads) == (9, 3)
    for layer in (0, a.n_layers - 1):
        attn = smollm2.blocks[layer].attn
        assert torch.equal(a.expand_kv(attn._W_V, dim=0), attn.W_V)
        assert torch.equal(a.expand_kv(attn._W_K, dim=0), attn.W_K)


def test_expand_kv_errors(adapter):
    a = adapter
    with pytest.raises(ValueError, match="kv heads"):
        a.expand_kv(torch.zeros(2, a.n_kv_heads + 1, 3), dim=1)
    same = torch.zeros(2, a.n_heads, 3)
    assert a.expand_kv(same, dim=1) is same


def test_hook_edits_propagate_per_row(adapter):
    """Per-row edits at hook_pattern, hook_mlp_out and hook_embed reach the output of that row only."""
    a = adapter
    tokens = a.as_tokens(PROMPT).repeat(2, 1)
    with torch.no_grad():
        clean = a.forward(tokens)

    def row1(scale):
        def hook(x, hook):
            x = x.clone()
            x[1] = x[1] * scale
            return x
        return hook

    for site, layer in (("pattern", 0), ("mlp_out", 0), ("embed", None)):
        with torch.no_grad():
            out = a.forward(tokens, fwd_hooks=[(a.hook_name(site, layer), row1(0.0 if site != "embed" else 0.5))])
        torch.testing.assert_close(out[0], clean[0], rtol=1e-5, atol=1e-5)
        assert (out[1] - clean[1]).abs().max() > 1e-3, site
    with torch.no_grad():
        after = a.forward(tokens)
    torch.testing.assert_close(after, clean, rtol=0, atol=0)  # hooks were removed


def test_hooks_context_manager_removes_hooks(adapter):
    a = adapter
    tokens = a.as_tokens(PROMPT)
    with torch.no_grad():
        clean = a.forward(tokens)
        with a.hooks([(a.hook_name("mlp_out", 0), lambda x, hook: x * 0)]) as m:
            edited = m(tokens)
        after = a.forward(tokens)
    assert (edited - clean).abs().max() > 1e-3
    torch.testing.assert_close(after, clean, rtol=0, atol=0)


def test_bad_layer_and_site_errors(adapter):
    a = adapter
    L = a.n_layers
    with pytest.raises(ValueError, match="out of range"):
        a.hook_name("resid_pre", L)
    with pytest.raises(ValueError, match="out of range"):
        a.hook_name("resid_post", -L - 1)
    assert a.hook_name("resid_post", -1) == f"blocks.{L - 1}.hook_resid_post"
    with pytest.raises(ValueError, match="unknown site"):
        a.hook_name("resid_middle", 0)
    with pytest.raises(ValueError, match="needs a layer"):
        a.hook_name("pattern")
    with pytest.raises(ValueError, match="out of range"):
        a.W_O(L)
    with pytest.raises(ValueError, match="out of range"):
        a.W_V(L)


def test_as_tokens_validation(adapter):
    a = adapter
    with pytest.raises(ValueError, match="integer"):
        a.as_tokens(torch.zeros(3))
    with pytest.raises(ValueError, match="token ids"):
        a.as_tokens(torch.tensor([0, a.cfg.d_vocab]))
    with pytest.raises(ValueError, match="batch, pos"):
        a.as_tokens(torch.zeros(1, 1, 2, dtype=torch.long))
    t = a.as_tokens(torch.tensor([1, 2, 3]))
    assert t.shape == (1, 3)
    assert as_adapter(a) is a and ModelAdapter(a).model is a.model


def test_adapter_metadata(adapter):
    a = adapter
    meta = a.meta
    assert meta["backend"] == a.backend
    assert meta["dtype"] == "float32" and meta["name"]
    assert a.dtype == torch.float32 and a.device.type == "cpu"


def test_adapter_rejects_other_objects():
    with pytest.raises(TypeError, match="HookedTransformer or TransformerBridge"):
        ModelAdapter(torch.nn.Linear(2, 2))


@pytest.mark.real
def test_gemma3_specifics(gemma3):
    a = ModelAdapter(gemma3)
    assert a.has_post_norms and (a.n_heads, a.n_kv_heads, a.n_layers) == (4, 1, 18)
    assert a.to_tokens("hi")[0, 0].item() == a.tokenizer.bos_token_id  # Gemma prepends BOS
    # W_E carries the sqrt(d_model) embedding scale on both backends
    tokens = a.as_tokens("The capital of France is")
    _, c = _cache(a, tokens, ["hook_embed"])
    torch.testing.assert_close(a.W_E[tokens], c["hook_embed"], rtol=1e-6, atol=1e-6)


@pytest.mark.hooked_only
@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_every_site_equal_across_backends(arch):
    """Same weights, same activations at every adapter site: HookedTransformer vs TransformerBridge."""
    hooked = ModelAdapter(tiny_model(arch, backend="hooked", init_std=0.3))
    bridge = ModelAdapter(tiny_model(arch, backend="bridge", init_std=0.3))
    tokens = hooked.as_tokens(PROMPT)
    names = [hooked.hook_name(s, l) for s, l in _expected_sites(hooked) if s != "scores"]
    (lh, ch), (lb, cb) = _cache(hooked, tokens, names), _cache(bridge, tokens, names)
    torch.testing.assert_close(lh, lb, rtol=1e-4, atol=1e-4)
    for n in names:
        torch.testing.assert_close(ch[n], cb[n], rtol=1e-4, atol=1e-4, msg=n)
    for get in (lambda a: a.W_O(1), lambda a: a.W_V(1), lambda a: a.b_O(1), lambda a: a.W_U,
                lambda a: a.W_E, lambda a: a.b_U):
        torch.testing.assert_close(get(hooked), get(bridge), rtol=0, atol=0)
