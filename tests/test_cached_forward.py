"""The lean key/value-cache forward (models/cached_forward.py) against TransformerLens's own
cached forward: the same residuals and the same value at every hook point, segment by
segment; its bookkeeping (weights restored, nesting, caches of the other kind refused)."""

from __future__ import annotations

import pytest
import torch
from _engine_support import single_thread  # noqa: F401  (autouse fixture)

from interp_toolkit.adapter import as_adapter
from interp_toolkit.engine import MaskSpec, masked_forward
from interp_toolkit.models import tiny_model
from interp_toolkit.models.cached_forward import LeanCachedForward, lean_active, unsupported

pytestmark = pytest.mark.hooked_only

SEGMENTS = ((0, 3), (3, 4), (4, 8))
WATCHED = ("hook_q", "hook_k", "hook_v", "hook_rot_q", "hook_rot_k", "hook_attn_scores", "hook_pattern",
           "hook_z", "hook_pre", "hook_pre_linear", "hook_post", "hook_attn_out", "hook_mlp_out", "hook_in",
           "hook_out")


def _segments(adapter, tokens, lean: bool, edit=None):
    """Run ``tokens`` as consecutive cached segments; return (logits per segment,
    {hook name: [values per segment]})."""
    seen: dict[str, list[torch.Tensor]] = {}

    def record(x, hook):
        seen.setdefault(hook.name, []).append(x.detach().clone())
        return edit(x, hook) if edit is not None else x

    hooks = [(lambda name: name.split(".")[-1] in WATCHED, record)]
    adapter.lean_cache = lean
    outs = []
    with adapter.lean_cached_forward():
        cache = adapter.kv_cache(batch=tokens.shape[0])
        for a, b in SEGMENTS:
            outs.append(adapter.forward(tokens[:, a:b], fwd_hooks=hooks, past_kv_cache=cache))
    adapter.lean_cache = True
    return outs, seen


@pytest.fixture(params=["gpt2", "llama", "llama-mha"])
def model(request):
    arch = request.param.split("-")[0]
    extra = {"n_kv_heads": 4} if request.param == "llama-mha" else {}
    return tiny_model(arch, backend="hooked", n_layers=2, n_heads=4, init_std=0.3, **extra)


def test_lean_equals_transformer_lens_at_every_hook(model):
    adapter = as_adapter(model)
    tokens = torch.randint(0, model.cfg.d_vocab, (3, 8), generator=torch.Generator().manual_seed(0))
    want, want_hooks = _segments(adapter, tokens, lean=False)
    got, got_hooks = _segments(adapter, tokens, lean=True)
    assert unsupported(model) is None
    for w, g in zip(want, got):
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-5)
    expected_points = {n for n in want_hooks if n.split(".")[-1] in WATCHED}
    assert set(got_hooks) == expected_points and len(expected_points) >= 9 * model.cfg.n_layers + 2
    assert {"unembed.hook_in", "unembed.hook_out"} <= expected_points
    for name in expected_points:
        for w, g in zip(want_hooks[name], got_hooks[name]):
            assert g.shape == w.shape, name
            torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-5, msg=name)


def test_hook_edits_act_as_in_transformer_lens(model):
    """A hook that edits values (rotated keys, pattern, z, MLP activations) changes the lean
    forward exactly as it changes TransformerLens's."""
    adapter = as_adapter(model)
    tokens = torch.randint(0, model.cfg.d_vocab, (2, 8), generator=torch.Generator().manual_seed(1))

    def edit(x, hook):
        if hook.name.endswith(("hook_rot_k", "hook_v", "hook_pattern", "hook_post", "hook_z", "unembed.hook_in")):
            return x * 0.5
        return x

    want, _ = _segments(adapter, tokens, lean=False, edit=edit)
    got, _ = _segments(adapter, tokens, lean=True, edit=edit)
    plain, _ = _segments(adapter, tokens, lean=True)
    for w, g, p in zip(want, got, plain):
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(want[-1], plain[-1])


def test_block_restores_the_model_and_nests(model):
    attn, mlp = model.blocks[0].attn, model.blocks[0].mlp
    with LeanCachedForward(model) as outer:
        assert outer.active and lean_active(model) and "forward" in attn.__dict__
        with LeanCachedForward(model):
            pass
        assert lean_active(model) and "forward" in attn.__dict__  # the inner block left it on
    assert not lean_active(model)
    for module in (attn, mlp, model.unembed):
        assert "forward" not in module.__dict__ and not hasattr(module, "_lean_w") and not hasattr(module, "_lean_w_o")


def test_caches_of_the_other_kind_are_refused():
    model = tiny_model("llama", backend="hooked", n_layers=2, n_heads=4, init_std=0.3)
    adapter = as_adapter(model)
    tokens = torch.randint(0, model.cfg.d_vocab, (1, 6), generator=torch.Generator().manual_seed(2))
    with adapter.lean_cached_forward():
        rotated = adapter.kv_cache()
        adapter.forward(tokens[:, :3], past_kv_cache=rotated)
    with pytest.raises(RuntimeError, match="inside"):
        adapter.forward(tokens[:, 3:], past_kv_cache=rotated)
    plain = adapter.kv_cache()
    adapter.forward(tokens[:, :3], past_kv_cache=plain)
    with adapter.lean_cached_forward(), pytest.raises(RuntimeError, match="before rotary"):
        adapter.forward(tokens[:, 3:], past_kv_cache=plain)


def test_uncovered_configuration_keeps_transformer_lens_forward():
    model = tiny_model("llama", backend="hooked", n_layers=2, n_heads=4, init_std=0.3)
    model.set_use_attn_result(True)
    assert "use_attn_result" in unsupported(model)
    with LeanCachedForward(model) as lean:
        assert not lean.active and "forward" not in model.blocks[0].attn.__dict__
    adapter = as_adapter(model)
    tokens = torch.randint(0, model.cfg.d_vocab, (2, 8), generator=torch.Generator().manual_seed(3))
    want, _ = _segments(adapter, tokens, lean=False)
    got, _ = _segments(adapter, tokens, lean=True)
    for w, g in zip(want, got):
        torch.testing.assert_close(g, w, rtol=0, atol=0)


def _players_spec(n_pos: int, positions: list[int]) -> MaskSpec:
    rows = 2 ** len(positions)
    keep = torch.ones(rows, n_pos, dtype=torch.bool)
    for s in range(rows):
        for i, p in enumerate(positions):
            keep[s, p] = bool(s >> i & 1)
    return MaskSpec.from_tokens(keep)


@pytest.mark.real
def test_causal_reuse_lean_equals_transformer_lens_real(real_model):
    """SmolLM2 (grouped 9/3) and Gemma 3 (grouped 4/1, sliding-window layers, q/k norms):
    input-token masks and head masks through causal reuse, lean vs TransformerLens's forward."""
    adapter = as_adapter(real_model)
    assert unsupported(real_model) is None
    tokens = adapter.to_tokens("The Eiffel Tower is a famous landmark in the city of")[0]
    n = tokens.shape[0]
    spec = _players_spec(n, [1, 3, n - 4, n - 2])
    z = torch.rand(8, n, adapter.n_heads, generator=torch.Generator().manual_seed(0)) > 0.3
    z[:, : n // 2] = True
    spec_z = MaskSpec(8).set("z", adapter.n_layers - 2, z)
    for s, kw in ((spec, {"baseline": torch.zeros(adapter.d_model)}), (spec_z, {})):
        adapter.lean_cache = False
        want = masked_forward(adapter, tokens, s, position_reuse=True, output="last_log_probs", **kw)
        adapter.lean_cache = True
        got = masked_forward(adapter, tokens, s, position_reuse=True, output="last_log_probs", **kw)
        assert float((got - want).abs().max()) <= 1e-4
