"""The batched masked forward equals its one-forward-per-row twin, for every mask kind."""

from __future__ import annotations

import pytest
import torch
from backends import TINY_BACKENDS
from _engine_support import single_thread  # noqa: F401  (autouse fixture)
from backends import REAL_FIXTURES

from interp_toolkit.adapter import ModelAdapter
from interp_toolkit.engine import MaskError, MaskSpec, Reference, masked_forward, masked_forward_loop
from interp_toolkit.models import tiny_model

N_LAYERS, N_HEADS, T, ROWS = 3, 4, 7, 6


@pytest.fixture(scope="module", params=[(a, b) for a in ("gpt2", "llama") for b in TINY_BACKENDS],
                ids=lambda p: "-".join(p))
def tiny(request):
    """(model, prompt, other prompt's cache) for each architecture (llama: 2 KV heads) and
    each model class this TransformerLens has."""
    arch, backend = request.param
    model = tiny_model(arch, backend=backend, n_layers=N_LAYERS, n_heads=N_HEADS, init_std=0.3)
    g = torch.Generator().manual_seed(1)
    tokens = torch.randint(0, model.cfg.d_vocab, (T,), generator=g)
    other = torch.randint(0, model.cfg.d_vocab, (T,), generator=g)
    _, cache = model.run_with_cache(other)
    return model, tokens, cache


def _keep(g, *shape, soft=False):
    if soft:
        return torch.rand(ROWS, *shape, generator=g)
    keep = torch.rand(ROWS, *shape, generator=g) > 0.5
    keep[0] = True  # one unmasked row per spec
    return keep


def _spec(kind: str, T: int, H: int, Hkv: int, L: int, seed: int = 0) -> MaskSpec:
    """A MaskSpec of ``ROWS`` rows exercising one mask kind (or a mixture)."""
    g = torch.Generator().manual_seed(seed)
    spec = MaskSpec(ROWS)
    last = L - 1
    if kind == "pattern_edges":
        spec.set("pattern", 1 % L, _keep(g, H, T, T))
    elif kind == "pattern_head":
        spec.set("pattern", 0, _keep(g, H, 1, 1)).set("pattern", last, _keep(g, H, 1, 1))
    elif kind == "pattern_head_dest":
        spec.set("pattern", last, _keep(g, H, T, 1))
    elif kind == "pattern_soft":
        spec.set("pattern", 1 % L, _keep(g, H, T, T, soft=True))
    elif kind in ("z", "q"):
        spec.set(kind, 1 % L, _keep(g, T, H))
    elif kind in ("k", "v"):
        spec.set(kind, 0, _keep(g, T, Hkv))
    elif kind in ("attn_out", "mlp_out", "resid_pre", "resid_mid", "resid_post", "skip_attn", "skip_mlp"):
        spec.set(kind, 1 % L, _keep(g, T))
    elif kind == "mlp_whole":
        spec.set("mlp_out", last, _keep(g, 1))
    elif kind == "embed":
        spec.set("embed", None, _keep(g, T))
    elif kind == "mixed":
        # several sites, layers and rows touching different layers first (prefix reuse
        # reorders the rows), skip cuts sharing hook points with patches
        spec.set("pattern", last, _keep(g, H, T, T))
        spec.set("skip_attn", 1 % L, _keep(g, T)).set("resid_mid", 1 % L, _keep(g, T))
        spec.set("skip_mlp", 1 % L, _keep(g, T)).set("resid_pre", 1 % L, _keep(g, T))
        spec.set("mlp_out", 0, _keep(g, T)).set("z", last, _keep(g, T, H))
        for site, layer in list(spec.entries):
            keep = spec.entries[(site, layer)].clone()
            keep[1 + (layer or 0) % (ROWS - 1)] = True  # vary the first touched layer per row
            spec.set(site, layer, keep)
    else:
        raise ValueError(kind)
    return spec


KINDS = ["pattern_edges", "pattern_head", "pattern_head_dest", "pattern_soft", "z", "q", "k", "v",
         "attn_out", "mlp_out", "mlp_whole", "resid_pre", "resid_mid", "resid_post", "skip_attn",
         "skip_mlp", "embed", "mixed"]


def _sizes(model):
    cfg = model.cfg
    return cfg.n_heads, cfg.n_key_value_heads or cfg.n_heads, cfg.n_layers


def _assert_close(a, b, scale):
    tol = 1e-5 * max(1.0, float(scale))
    assert a.shape == b.shape
    err = float((a - b).abs().max())
    assert err <= tol, f"kernel differs from the loop twin by {err:.3g} (tolerance {tol:.3g})"


@pytest.mark.parametrize("with_reference", [False, True], ids=["zero", "reference"])
@pytest.mark.parametrize("kind", KINDS)
def test_kernel_equals_loop_tiny(tiny, kind, with_reference):
    model, tokens, cache = tiny
    H, Hkv, L = _sizes(model)
    spec = _spec(kind, T, H, Hkv, L)
    kwargs = {"reference": cache} if with_reference else {}
    if kind == "embed" and not with_reference:
        kwargs["baseline"] = torch.randn(model.cfg.d_model, generator=torch.Generator().manual_seed(3))
    expected = masked_forward_loop(model, tokens, spec, **kwargs)
    plain = model(tokens)[0, -1].detach()
    scale = expected.abs().max()
    # the masks must matter, or equality would prove nothing
    assert float((expected[1:] - plain).abs().max()) > 1e-2
    for config in [dict(prefix_reuse=True), dict(prefix_reuse=True, max_batch_tokens=2 * T),
                   dict(prefix_reuse=False, max_batch_tokens=T)]:
        got = masked_forward(model, tokens, spec, **config, **kwargs)
        _assert_close(got, expected, scale)


def test_unmasked_rows_equal_plain_logits(tiny):
    model, tokens, _ = tiny
    plain = model(tokens)[0].detach()
    got = masked_forward(model, tokens, MaskSpec.full(3))
    _assert_close(got, plain[-1].expand(3, -1), plain.abs().max())
    # rows that keep everything through explicit all-ones masks
    H, _, L = _sizes(model)
    spec = MaskSpec(2).set("pattern", 0, torch.ones(2, H, T, T, dtype=torch.bool))
    spec.set("mlp_out", L - 1, torch.ones(2, T))
    for reuse in (True, False):
        _assert_close(masked_forward(model, tokens, spec, prefix_reuse=reuse), plain[-1].expand(2, -1),
                      plain.abs().max())
    full = masked_forward(model, tokens, MaskSpec.full(2), output="logits")
    _assert_close(full, plain.expand(2, -1, -1), plain.abs().max())


@pytest.mark.parametrize("output", ["logits", "log_probs", "last_log_probs", "metric_last", "metric_full"])
def test_outputs_equal_loop(tiny, output):
    model, tokens, cache = tiny
    H, Hkv, L = _sizes(model)
    spec = _spec("mixed", T, H, Hkv, L, seed=5)
    if output == "metric_last":
        kw = dict(output=lambda lg: lg[:, 3] - lg[:, 5])
    elif output == "metric_full":
        kw = dict(output=lambda lg: lg[:, :, 3].sum(-1), metric_input="logits")
    else:
        kw = dict(output=output)
    expected = masked_forward_loop(model, tokens, spec, reference=cache, **kw)
    got = masked_forward(model, tokens, spec, reference=cache, max_batch_tokens=3 * T, **kw)
    _assert_close(got, expected, expected.abs().max())


def test_per_row_reference(tiny):
    """A reference with one row per mask row (e.g. a different corrupted run per row)."""
    model, tokens, cache = tiny
    H, Hkv, L = _sizes(model)
    spec = _spec("resid_mid", T, H, Hkv, L, seed=2)
    name = "blocks.1.hook_resid_mid"
    ref = {name: cache[name].expand(ROWS, -1, -1) * torch.linspace(0, 2, ROWS)[:, None, None]}
    expected = masked_forward_loop(model, tokens, spec, reference=ref)
    got = masked_forward(model, tokens, spec, reference=Reference(ref), max_batch_tokens=2 * T)
    _assert_close(got, expected, expected.abs().max())


def test_zeroing_all_attention_edges_changes_output(tiny):
    model, tokens, _ = tiny
    H, _, L = _sizes(model)
    spec = MaskSpec(1)
    for l in range(L):
        spec.set("pattern", l, torch.zeros(1, H, T, T, dtype=torch.bool))
    plain = model(tokens)[0, -1].detach()
    assert float((masked_forward(model, tokens, spec)[0] - plain).abs().max()) > 1e-2


class _CountingAdapter(ModelAdapter):
    """Records (start_at_layer, batch size) of every forward the kernel runs."""

    def __init__(self, model):
        super().__init__(model)
        self.calls = []

    def forward(self, input, **kw):
        self.calls.append((kw.get("start_at_layer"), kw.get("stop_at_layer"), input.shape[0]))
        return super().forward(input, **kw)


def test_prefix_reuse_starts_late_and_reorders_rows(tiny):
    model, tokens, _ = tiny
    H, _, L = _sizes(model)
    # rows alternate between a mask at the last layer and one at layer 0
    keep = torch.ones(8, T, dtype=torch.bool)
    keep[:, 2] = False
    spec = MaskSpec(8)
    spec.set("mlp_out", L - 1, keep * torch.tensor([1, 0] * 4, dtype=torch.bool)[:, None]
             | torch.tensor([0, 1] * 4, dtype=torch.bool)[:, None])
    spec.set("mlp_out", 0, keep * torch.tensor([0, 1] * 4, dtype=torch.bool)[:, None]
             | torch.tensor([1, 0] * 4, dtype=torch.bool)[:, None])
    adapter = _CountingAdapter(model)
    got = masked_forward(adapter, tokens, spec, max_batch_tokens=4 * T)
    starts = sorted((c[0] or 0) for c in adapter.calls if c[1] == L or c[1] is None)
    # one chunk of the 4 layer-0 rows from the tokens, one chunk of 4 last-layer rows from the prefix
    assert starts == [0, L - 1], adapter.calls
    assert all(c[2] == 4 for c in adapter.calls if c[1] == L)
    _assert_close(got, masked_forward_loop(model, tokens, spec), got.abs().max())


# ---------------------------------------------------------------------------- bad input
@pytest.fixture(scope="module")
def gpt2():
    return tiny_model("gpt2", n_layers=2, n_heads=4, init_std=0.3)


@pytest.fixture(scope="module")
def llama():
    return tiny_model("llama", n_layers=2, n_heads=4, init_std=0.3)


TOK = torch.arange(5)


def test_error_mask_head_count(gpt2):
    with pytest.raises(MaskError, match="expected 1 or 4 .heads"):
        masked_forward(gpt2, TOK, MaskSpec(2).set("pattern", 0, torch.ones(2, 3, 1, 1)))


def test_error_mask_kv_head_count(llama):
    with pytest.raises(MaskError, match="key-value heads"):
        masked_forward(llama, TOK, MaskSpec(2).set("k", 0, torch.ones(2, 5, 4)))


def test_error_mask_prompt_length(gpt2):
    with pytest.raises(MaskError, match="prompt length"):
        masked_forward(gpt2, TOK, MaskSpec(2).set("mlp_out", 0, torch.ones(2, 6)))
    with pytest.raises(MaskError, match="along 'src'"):
        masked_forward(gpt2, TOK, MaskSpec(1).set("pattern", 0, torch.ones(1, 4, 5, 4)))


def test_error_mask_rank_and_rows():
    with pytest.raises(MaskError, match=r"shape \[rows, head, dest, src\]"):
        MaskSpec(2).set("pattern", 0, torch.ones(2, 4, 5))
    with pytest.raises(MaskError, match="3 rows, the spec has 2"):
        MaskSpec(2).set("mlp_out", 0, torch.ones(3, 5))
    with pytest.raises(MaskError, match="unknown site"):
        MaskSpec(2).set("mlp_in", 0, torch.ones(2, 5))


def test_error_layer_beyond_model(gpt2):
    with pytest.raises(MaskError, match="layer 2, but the model has 2 layers"):
        masked_forward(gpt2, TOK, MaskSpec(1).set("mlp_out", 2, torch.ones(1, 1)))
    with pytest.raises(MaskError, match="needs a layer >= 0"):
        MaskSpec(1).set("mlp_out", -1, torch.ones(1, 1))


def test_error_empty_batch_and_prompt(gpt2):
    with pytest.raises(MaskError, match="empty batch"):
        masked_forward(gpt2, TOK, MaskSpec(0))
    with pytest.raises(MaskError, match="empty prompt"):
        masked_forward(gpt2, torch.zeros(0, dtype=torch.long), MaskSpec(1))
    with pytest.raises(MaskError, match="pass prompt_index"):
        masked_forward(gpt2, torch.zeros(2, 5, dtype=torch.long), MaskSpec(1))


def test_error_nan_inputs(gpt2):
    keep = torch.ones(1, 5)
    keep[0, 1] = float("nan")
    with pytest.raises(MaskError, match="keep contains NaN"):
        MaskSpec(1).set("mlp_out", 0, keep)
    with pytest.raises(MaskError, match=r"in \[0, 1\]"):
        MaskSpec(1).set("mlp_out", 0, torch.full((1, 5), 1.5))
    spec = MaskSpec(1).set("mlp_out", 0, torch.zeros(1, 5))
    ref = torch.zeros(1, 5, gpt2.cfg.d_model)
    ref[0, 0, 0] = float("nan")
    with pytest.raises(MaskError, match="reference activation 'blocks.0.hook_mlp_out' contains NaN"):
        masked_forward(gpt2, TOK, spec, reference={"blocks.0.hook_mlp_out": ref})
    base = torch.zeros(gpt2.cfg.d_model)
    base[3] = float("nan")
    with pytest.raises(MaskError, match="baseline embedding contains NaN"):
        masked_forward(gpt2, TOK, MaskSpec.from_tokens(torch.zeros(1, 5, dtype=torch.bool)), baseline=base)


def test_error_reference_other_prompt_length(gpt2):
    _, cache = gpt2.run_with_cache(torch.arange(6))
    spec = MaskSpec(1).set("z", 1, torch.zeros(1, 5, 4))
    with pytest.raises(MaskError, match="another length .this prompt has 5 tokens"):
        masked_forward(gpt2, TOK, spec, reference=cache)
    spec = MaskSpec(1).set("pattern", 1, torch.zeros(1, 4, 1, 1))
    with pytest.raises(MaskError, match="another length"):
        masked_forward(gpt2, TOK, spec, reference=cache)
    spec = MaskSpec(1).set("skip_mlp", 0, torch.zeros(1, 5))
    with pytest.raises(MaskError, match="blocks.0.hook_resid_mid"):
        masked_forward(gpt2, TOK, spec, reference=cache)


def test_error_reference_rows(gpt2):
    ref = {"blocks.0.hook_mlp_out": torch.zeros(3, 5, gpt2.cfg.d_model)}
    with pytest.raises(MaskError, match="3 rows; expected 1 or 2"):
        masked_forward(gpt2, TOK, MaskSpec(2).set("mlp_out", 0, torch.zeros(2, 5)), reference=ref)


def test_error_budget_smaller_than_one_row(gpt2):
    spec = MaskSpec(1).set("mlp_out", 0, torch.zeros(1, 5))
    for budget in (4, 0):
        with pytest.raises(MaskError, match="smaller than one row .5 tokens"):
            masked_forward(gpt2, TOK, spec, max_batch_tokens=budget)


def test_error_output_kind(gpt2):
    with pytest.raises(ValueError, match="output must be one of"):
        masked_forward(gpt2, TOK, MaskSpec(1), output="probs")
    with pytest.raises(ValueError, match="metric_input"):
        masked_forward(gpt2, TOK, MaskSpec(1), output=lambda x: x, metric_input="probs")


# ---------------------------------------------------------------------------- real models
REAL_KINDS = ["pattern_edges", "pattern_head", "pattern_head_dest", "z", "k", "mlp_out", "attn_out",
              "resid_pre", "resid_mid", "resid_post", "skip_attn", "skip_mlp", "embed", "mixed"]


@pytest.mark.real
@pytest.mark.slow
@pytest.mark.parametrize("fixture", list(REAL_FIXTURES))
def test_kernel_equals_loop_real(request, fixture):
    model = request.getfixturevalue(fixture)  # the session's model (conftest.py)
    tokens = model.to_tokens("The cat sat on the", prepend_bos=True)[0]
    other = model.to_tokens("A dog ran to the", prepend_bos=True)[0]
    assert tokens.shape == other.shape
    n = tokens.shape[0]
    _, cache = model.run_with_cache(other)
    H, Hkv, L = _sizes(model)
    plain = model(tokens)[0, -1].detach()
    unmasked = masked_forward(model, tokens, MaskSpec.full(2))
    assert float((unmasked - plain).abs().max()) <= 1e-4 * max(1.0, float(plain.abs().max()))
    for i, kind in enumerate(REAL_KINDS):
        # masks in the middle of the network
        spec = _spec(kind, n, H, Hkv, L, seed=i)
        spec = MaskSpec(2, {(s, None if l is None else (l + L // 2) % L): k[1:3] for (s, l), k in spec.entries.items()})
        for with_reference in (False, True):
            kwargs = {"reference": cache} if with_reference else {}
            if kind == "embed" and not with_reference:
                kwargs["baseline"] = cache["hook_embed"][0, 1]
            expected = masked_forward_loop(model, tokens, spec, **kwargs)
            assert float((expected - plain).abs().max()) > 1e-3, kind
            for config in [dict(prefix_reuse=True, max_batch_tokens=n)]:  # reuse off: tiny-model tests
                got = masked_forward(model, tokens, spec, **config, **kwargs)
                tol = 2e-4 * max(1.0, float(expected.abs().max()))
                err = float((got - expected).abs().max())
                assert err <= tol, f"{name} {kind} ref={with_reference} {config}: {err:.3g} > {tol:.3g}"


# ---------------------------------------------------------------------------- one entry point
def test_several_prompts_in_one_call_equal_one_call_each(tiny):
    """Rows carry a prompt index; each row reads its own prompt's reference values."""
    model, tokens, cache = tiny
    a = ModelAdapter(model)
    other = torch.roll(tokens, 1)
    both = torch.stack([tokens, other])
    spec = _spec("mixed", T, a.n_heads, a.n_kv_heads, a.n_layers, seed=3)
    _, c2 = model.run_with_cache(both.flip(0))
    hooks = [a.hook_name("mlp_out", 1), a.hook_name("z", 1), a.hook_name("resid_pre", 0)]
    ref2 = Reference({h: c2[h] for h in hooks}, per_prompt=True)
    spec = MaskSpec(ROWS).set("mlp_out", 1, spec.entries.get(("mlp_out", 1), torch.rand(ROWS, T) > 0.5))
    spec.set("z", 1, torch.rand(ROWS, T, a.n_heads) > 0.3).set("resid_pre", 0, torch.rand(ROWS, T) > 0.5)
    rows = torch.arange(ROWS).repeat_interleave(2)
    got = masked_forward(model, both, spec.select(rows), reference=ref2, prompt_index=torch.arange(2).repeat(ROWS),
                         max_batch_tokens=3 * T)
    for b in range(2):
        want = masked_forward_loop(model, both[b], spec, reference={h: c2[h][b:b + 1] for h in hooks})
        torch.testing.assert_close(got[b::2], want, atol=1e-4, rtol=1e-4)
    with pytest.raises(MaskError, match="per-prompt reference"):
        masked_forward(model, tokens, spec, reference=ref2)


def test_capture_returns_activations_after_the_edits(tiny):
    model, tokens, _ = tiny
    a = ModelAdapter(model)
    keep = torch.rand(ROWS, T) > 0.5
    spec = MaskSpec(ROWS).set("mlp_out", 0, keep).set("pattern", a.n_layers - 1, torch.rand(ROWS, a.n_heads, 1, 1) > 0.5)
    hooks = [a.hook_name("mlp_out", 0), a.hook_name("resid_pre", 0)]
    out, acts = masked_forward(model, tokens, spec, capture=hooks, max_batch_tokens=2 * T)
    _, cache = model.run_with_cache(tokens)
    # layer 0's MLP reads the unmasked residual, so the captured output is keep · unmasked
    torch.testing.assert_close(acts[hooks[0]], keep[..., None] * cache[hooks[0]], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(acts[hooks[1]], cache[hooks[1]].expand(ROWS, -1, -1), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out, masked_forward_loop(model, tokens, spec), atol=1e-4, rtol=1e-4)


def test_gradient_mode_matches_finite_differences(backend):
    model = tiny_model("llama", backend=backend, n_layers=2, n_heads=4, init_std=0.3, dtype=torch.float64)
    a = ModelAdapter(model)
    keep = torch.rand(5, T, generator=torch.Generator().manual_seed(0)) > 0.5
    b0 = torch.randn(a.d_model, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    tokens = torch.arange(T) + 3

    def f(b, grad=False):
        out = masked_forward(model, tokens, MaskSpec.from_tokens(keep), baseline=b, grad=grad,
                             output=lambda lg: lg.log_softmax(-1)[:, 7], max_batch_tokens=2 * T)
        return out.sum()

    b = b0.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(f(b, grad=True), [b])
    d = torch.randn(a.d_model, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    # (a bridge's Hugging Face attention takes its softmax in float32: a larger step)
    eps = 1e-3
    fd = (f(b0 + eps * d) - f(b0 - eps * d)) / (2 * eps)
    assert abs(float(g @ d) - float(fd)) <= 1e-3 * max(1.0, abs(float(fd)))
    assert all(not p.requires_grad or p.grad is None for p in model.parameters())


def test_shared_prefix_equals_the_unshared_run(tiny):
    """Rows that differ from a base mask only from some layer on start there, from the base's
    residual; the result is the same as running every row from the tokens."""
    model, tokens, _ = tiny
    a = ModelAdapter(model)
    g = torch.Generator().manual_seed(4)
    base = torch.rand(1, a.n_layers, a.n_heads, generator=g) > 0.4
    keep = base.expand(ROWS, -1, -1).clone()
    for r in range(ROWS):  # each row flips one head at its own layer
        keep[r, r % a.n_layers, r % a.n_heads] ^= True
    spec = MaskSpec.from_heads(keep)
    want = masked_forward_loop(model, tokens, spec)
    for chunk_rows in (1, 2, None):
        got = masked_forward(model, tokens, spec, shared_prefix=MaskSpec.from_heads(base), chunk_rows=chunk_rows)
        torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
    with pytest.raises(MaskError, match="one-row"):
        masked_forward(model, tokens, spec, shared_prefix=spec)


def test_model_adapter_satisfies_the_engine_protocol(tiny):
    from interp_toolkit.engine.protocol import EngineAdapter

    model, tokens, _ = tiny
    a = ModelAdapter(model)
    assert isinstance(a, EngineAdapter)
    assert a.resid_mid_on_residual_path == (a.backend == "hooked")
    r = a.forward_to(a.as_tokens(tokens), a.n_layers)
    torch.testing.assert_close(a.logits_from_resid(r), model(tokens[None]), atol=1e-4, rtol=1e-4)
