"""Edge sites of the engine (path patching sender → receiver input): the batched kernel equals
the loop twin, and single edges equal a brute-force per-edge hook loop written here."""

from __future__ import annotations

import pytest
import torch
from _engine_support import single_thread  # noqa: F401  (autouse fixture)

from interp_toolkit.adapter import ModelAdapter
from interp_toolkit.engine import LogitDiff, MaskError, MaskSpec, masked_forward, masked_forward_loop
from interp_toolkit.engine.masks import n_senders, sender_index
from interp_toolkit.models import tiny_model

pytestmark = pytest.mark.hooked_only
L, H, T = 2, 4, 6


@pytest.fixture(scope="module", params=["gpt2", "llama"])
def case(request):
    model = tiny_model(request.param, backend="hooked", n_layers=L, n_heads=H, init_std=0.3)
    g = torch.Generator().manual_seed(3)
    clean = torch.randint(4, model.cfg.d_vocab, (1, T), generator=g)
    corrupt = torch.randint(4, model.cfg.d_vocab, (1, T), generator=g)
    _, cache = model.run_with_cache(corrupt)
    return model, clean, corrupt, cache


def _edge_spec(rows: int, seed: int) -> MaskSpec:
    g = torch.Generator().manual_seed(seed)
    S = n_senders(L, H)
    spec = MaskSpec(rows)
    spec.set("edge_q", 1, torch.rand(rows, 1, H, S, generator=g) > 0.4)
    spec.set("edge_k", 1, torch.rand(rows, T, H, S, generator=g) > 0.4)
    spec.set("edge_v", 0, torch.rand(rows, 1, H, S, generator=g))  # soft keeps
    spec.set("edge_mlp", 0, torch.rand(rows, 1, S, generator=g) > 0.5)
    spec.set("edge_logits", None, torch.rand(rows, 1, S, generator=g) > 0.5)
    return spec


@pytest.mark.parametrize("with_reference", [True, False], ids=["patch", "zero"])
def test_edges_kernel_equals_loop(case, with_reference):
    model, clean, _, cache = case
    spec = _edge_spec(5, seed=1)
    ref = dict(cache.items()) if with_reference else None
    fast = masked_forward(model, clean, spec, reference=ref, max_batch_tokens=2 * T)
    slow = masked_forward_loop(model, clean, spec, reference=ref)
    torch.testing.assert_close(fast, slow, atol=1e-4, rtol=1e-4)


def _brute_force_edge(model, clean, cache, receiver: str, layer, head, sender):
    """Patch one edge with plain hooks: the receiver input gets (corrupt − clean) output of the
    sender, both read from full caches (one edge: the sender's own output is its clean one)."""
    ad = ModelAdapter(model)
    with ad.edge_inputs():
        _, clean_cache = model.run_with_cache(clean)
    kind, sl, sh = sender

    def out(c):
        if kind == "embed":
            e = c["hook_embed"][0]
            return e + c["hook_pos_embed"][0] if ad.positional == "standard" else e
        if kind == "mlp":
            return c[f"blocks.{sl}.hook_mlp_out"][0]
        return c[f"blocks.{sl}.attn.hook_z"][0, :, sh] @ model.blocks[sl].attn.W_O[sh]

    diff = out(cache) - out(clean_cache)
    name = {"q": f"blocks.{layer}.hook_q_input", "k": f"blocks.{layer}.hook_k_input",
            "v": f"blocks.{layer}.hook_v_input", "mlp": f"blocks.{layer}.hook_mlp_in",
            "logits": f"blocks.{L - 1}.hook_resid_post"}[receiver]

    def hook(x, hook):
        x = x.clone()
        for p in range(T):
            if receiver in ("q", "k", "v"):
                x[0, p, head] += diff[p]
            else:
                x[0, p] += diff[p]
        return x

    with ad.edge_inputs():
        return model.run_with_hooks(clean, fwd_hooks=[(name, hook)])[0, -1]


@pytest.mark.parametrize("receiver,layer,head,sender", [
    ("q", 1, 2, ("head", 0, 1)), ("k", 1, 0, ("embed", None, None)), ("v", 1, 3, ("mlp", 0, None)),
    ("mlp", 0, None, ("head", 0, 3)), ("mlp", 1, None, ("head", 1, 0)), ("logits", None, None, ("mlp", 1, None)),
])
def test_single_edge_equals_brute_force(case, receiver, layer, head, sender):
    model, clean, _, cache = case
    S = n_senders(L, H)
    s = sender_index(L, H, *sender)
    site = {"q": "edge_q", "k": "edge_k", "v": "edge_v", "mlp": "edge_mlp", "logits": "edge_logits"}[receiver]
    keep = torch.ones(1, 1, H, S, dtype=torch.bool) if receiver in "qkv" else torch.ones(1, 1, S, dtype=torch.bool)
    if receiver in "qkv":
        keep[0, 0, head, s] = False
    else:
        keep[0, 0, s] = False
    spec = MaskSpec(1).set(site, layer, keep)
    got = masked_forward(model, clean, spec, reference=dict(cache.items()))[0]
    want = _brute_force_edge(model, clean, cache, receiver, layer, head, sender)
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
    assert not torch.allclose(got, model(clean)[0, -1], atol=1e-4)  # the edge mattered


def test_all_edges_cut_is_the_corrupt_run(case):
    model, clean, corrupt, cache = case
    S = n_senders(L, H)
    spec = MaskSpec(1)
    for l in range(L):
        for site in ("edge_q", "edge_k", "edge_v"):
            spec.set(site, l, torch.zeros(1, 1, H, S, dtype=torch.bool))
        spec.set("edge_mlp", l, torch.zeros(1, 1, S, dtype=torch.bool))
    spec.set("edge_logits", None, torch.zeros(1, 1, S, dtype=torch.bool))
    got = masked_forward(model, clean, spec, reference=dict(cache.items()))[0]
    torch.testing.assert_close(got, model(corrupt)[0, -1], atol=1e-4, rtol=1e-4)


def test_per_row_prompts_and_row_metric(case):
    model, clean, corrupt, cache = case
    tokens = torch.cat([clean, corrupt, clean])
    spec = _edge_spec(3, seed=2)
    ref = {k: v.expand(3, *v.shape[1:]) for k, v in cache.items()}
    metric = LogitDiff(torch.tensor([5, 6, 7]), torch.tensor([8, 9, 10]))
    metric.per_row_targets = True
    fast = masked_forward(model, tokens, spec, reference=ref, output=metric, max_batch_tokens=T,
                          prompt_index=torch.arange(3))
    slow = masked_forward_loop(model, tokens, spec, reference=ref, output=metric)
    torch.testing.assert_close(fast, slow, atol=1e-4, rtol=1e-4)


def test_edge_errors(case):
    model = case[0]
    with pytest.raises(MaskError, match="sender"):
        masked_forward(model, case[1], MaskSpec(1).set("edge_mlp", 0, torch.ones(1, 1, 3, dtype=torch.bool)))
    with pytest.raises(MaskError, match="prompt_index"):
        masked_forward(model, torch.zeros(2, T, dtype=torch.long), MaskSpec.full(3))


def test_bridge_refuses_edges():
    bridge = tiny_model("gpt2", backend="bridge", n_layers=L, n_heads=H)
    spec = MaskSpec(1).set("edge_mlp", 0, torch.zeros(1, 1, n_senders(L, H), dtype=torch.bool))
    with pytest.raises(NotImplementedError, match="HookedTransformer"):
        masked_forward(bridge, torch.zeros(T, dtype=torch.long), spec)
