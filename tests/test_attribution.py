"""Attribution patching is exact to first order; integrated gradients converge to the exact effect."""

from __future__ import annotations

import pytest
import torch
from backends import TINY_BACKENDS
from _engine_support import single_thread  # noqa: F401  (autouse fixture)

from interp_toolkit.adapter import ModelAdapter
from interp_toolkit.attribution import (
    AttributionResult,
    KLToClean,
    LogitDiff,
    LogProb,
    Run,
    attribution_patching,
    exact_effects,
    integrated_gradients,
)
from interp_toolkit.engine import MaskError, MaskSpec, Reference, masked_forward
from interp_toolkit.models import tiny_model

TOK = torch.arange(3, 9)


@pytest.fixture(scope="module", params=[(a, b) for a in ("gpt2", "llama") for b in TINY_BACKENDS],
                ids=lambda p: "-".join(p))
def setup(request):
    """(model in float64, clean embedding, a fixed noise direction) per architecture and
    model class."""
    arch, backend = request.param
    model = tiny_model(arch, backend=backend, n_layers=2, n_heads=4, init_std=0.3, dtype=torch.float64)
    embed = ModelAdapter(model).embed(TOK[None])[0]
    noise = torch.randn(embed.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    return model, embed, noise


def _metrics(model):
    clean_logits = model(TOK)[0, -1].detach()
    other_logits = model(torch.arange(10, 16))[0, -1].detach()
    return {"logit_diff": LogitDiff(3, 7), "log_prob": LogProb(int(clean_logits.argmax())),
            # KL to a distribution away from the runs (at the clean output KL is flat: see below)
            "kl": KLToClean(other_logits)}


def _max_err(a: AttributionResult, b: AttributionResult) -> tuple[float, float]:
    err = max(float((a.scores[s] - b.scores[s]).abs().max()) for s in a.scores)
    size = max(float(b.scores[s].abs().max()) for s in a.scores)
    return err, size


@pytest.mark.parametrize("direction", ["denoising", "noising"])
@pytest.mark.parametrize("metric_name", ["logit_diff", "log_prob", "kl"])
def test_attribution_patching_first_order(setup, metric_name, direction):
    model, embed, noise = setup
    metric = _metrics(model)[metric_name]
    errors = {}
    for eps in (1e-2, 1e-3):
        corrupt = Run(TOK, embed + eps * noise)
        atp = attribution_patching(model, TOK, corrupt, metric, direction=direction)
        exact = exact_effects(model, TOK, corrupt, metric, direction=direction)
        assert set(atp.scores) == {"z", "mlp_out", "pattern"}
        for s in atp.scores:
            assert atp.scores[s].shape == exact.scores[s].shape
        err, size = _max_err(atp, exact)
        assert size > 1e-4
        errors[eps] = err
        if eps == 1e-3:
            assert err <= 0.04 * size, f"relative error {err / size:.3g} at eps={eps}"
    # the error is second order: ten times smaller perturbation, ~100 times smaller error
    assert errors[1e-2] > 20 * errors[1e-3], errors


def test_sign_conventions(setup):
    """Denoising and noising effects are 'after the patch minus before': opposite totals."""
    model, embed, noise = setup
    corrupt = Run(TOK, embed + 1e-3 * noise)
    metric = LogitDiff(3, 7)
    den = attribution_patching(model, TOK, corrupt, metric, sites=["mlp_out"])
    noi = attribution_patching(model, TOK, corrupt, metric, sites=["mlp_out"], direction="noising")
    assert den.total_effect == pytest.approx(-noi.total_effect)
    clean_value = float(metric(model(TOK)[:, -1].detach()))
    assert den.other_value == pytest.approx(clean_value) and noi.base_value == pytest.approx(clean_value)
    torch.testing.assert_close(den.scores["mlp_out"], -noi.scores["mlp_out"], rtol=0.05, atol=1e-6)


def test_kl_to_clean_is_flat_at_clean(setup):
    model, embed, noise = setup
    metric = KLToClean(model(TOK)[0, -1].detach())
    res = attribution_patching(model, TOK, Run(TOK, embed + 0.1 * noise), metric, direction="noising")
    assert res.base_value == pytest.approx(0, abs=1e-12)
    for s in res.scores:
        assert float(res.scores[s].abs().max()) < 1e-10


def test_per_position_layouts(setup):
    model, embed, noise = setup
    corrupt = Run(TOK, embed + 1e-3 * noise)
    sites = ["z", "mlp_out", "attn_out", "resid_post"] + ([] if ModelAdapter(model).is_bridge else ["resid_mid"])
    atp = attribution_patching(model, TOK, corrupt, LogitDiff(3, 7), sites=sites, per_position=True)
    exact = exact_effects(model, TOK, corrupt, LogitDiff(3, 7), sites=sites, per_position=True)
    T, H = len(TOK), model.cfg.n_heads
    assert atp.scores["z"].shape == (2, T, H) and atp.axes["z"] == ("layer", "pos", "head")
    assert atp.scores["mlp_out"].shape == (2, T) and atp.axes["mlp_out"] == ("layer", "pos")
    err, size = _max_err(atp, exact)
    assert err <= 0.04 * size
    whole = attribution_patching(model, TOK, corrupt, LogitDiff(3, 7), sites=sites)
    torch.testing.assert_close(whole.scores["z"], atp.scores["z"].sum(1))
    torch.testing.assert_close(whole.scores["mlp_out"], atp.scores["mlp_out"].sum(1))


def _site_patch_effect(model, corrupt_embed, site, layer, metric):
    """Exact denoising effect of patching a whole site at one layer (all components at once)."""
    adapter = ModelAdapter(model)
    hook = adapter.hook_name(site, layer)
    _, clean_cache = adapter.run_with_cache(TOK, [hook])
    n_axes = {"z": 2, "pattern": 3}.get(site, 1)
    spec = MaskSpec(2, {("embed", None): torch.zeros(2, 1, dtype=torch.bool)})
    spec.set(site, layer, torch.tensor([1.0, 0.0]).reshape(2, *[1] * n_axes))
    v = masked_forward(model, TOK, spec, output=metric,
                       reference=Reference({hook: clean_cache[hook]}, baseline=corrupt_embed))
    return float(v[1] - v[0])


@pytest.mark.parametrize("site", ["mlp_out", "z", "pattern"])
def test_integrated_gradients_converge_to_exact(setup, site):
    model, embed, noise = setup
    corrupt_embed = embed + 1.0 * noise  # a large corruption: first order is poor here
    corrupt = Run(TOK, corrupt_embed)
    metric = LogitDiff(3, 7)
    exact = exact_effects(model, TOK, corrupt, metric, sites=[site])
    atp = attribution_patching(model, TOK, corrupt, metric, sites=[site])
    errs = {}
    for steps in (4, 64):
        ig = integrated_gradients(model, TOK, corrupt, metric, sites=[site], steps=steps, max_batch_tokens=5 * len(TOK))
        assert ig.scores[site].shape == exact.scores[site].shape
        # completeness per layer: the scores add up to the effect of patching the whole site
        err = 0.0
        for i, layer in enumerate(ig.layers):
            whole = _site_patch_effect(model, corrupt_embed, site, layer, metric)
            err = max(err, abs(float(ig.scores[site][i].sum()) - whole))
        errs[steps] = err
    assert errs[64] < 1e-3 and errs[64] < errs[4]
    if site == "mlp_out":  # one component per layer: IG is its exact effect, AtP is not
        torch.testing.assert_close(ig.scores[site], exact.scores[site].to(ig.scores[site].dtype), atol=1e-3, rtol=1e-3)
        assert float((atp.scores[site] - exact.scores[site]).abs().max()) > 1e-2


def test_integrated_gradients_token_corruption(setup):
    """A corruption by different tokens (no embedding override), noising direction."""
    model, _, _ = setup
    corrupt = torch.tensor([3, 4, 5, 11, 7, 8])
    metric = LogProb(5)
    ig = integrated_gradients(model, TOK, corrupt, metric, sites=["mlp_out"], steps=64, direction="noising")
    exact = exact_effects(model, TOK, corrupt, metric, sites=["mlp_out"], direction="noising")
    torch.testing.assert_close(ig.scores["mlp_out"], exact.scores["mlp_out"].to(ig.scores["mlp_out"].dtype),
                               atol=1e-3, rtol=1e-3)
    assert float(exact.scores["mlp_out"].abs().max()) > 1e-2


def test_integrated_gradients_input_path_completeness(setup):
    model, embed, noise = setup
    corrupt = Run(TOK, embed + noise)
    metric = LogitDiff(3, 7)
    errs = {}
    for steps in (2, 64):
        ig = integrated_gradients(model, TOK, corrupt, metric, sites=["resid_pre", "z"], steps=steps,
                                  path="inputs", per_position=True)
        assert ig.scores["z"].shape == (2, len(TOK), model.cfg.n_heads)
        # resid_pre of layer 0 is the embedding (plus positions, unchanged): a complete cut
        errs[steps] = abs(float(ig.scores["resid_pre"][0].sum()) - ig.total_effect)
    assert errs[64] < 5e-3 * max(1.0, abs(ig.total_effect)) and errs[64] < errs[2] / 100


def test_refuses_train_mode(setup):
    model, _, _ = setup
    model.train()
    try:
        for fn in (attribution_patching, integrated_gradients, exact_effects):
            with pytest.raises(RuntimeError, match="train mode"):
                fn(model, TOK, TOK + 1, LogitDiff(3, 7))
    finally:
        model.eval()


def test_bad_input(setup):
    model, embed, _ = setup
    m = LogitDiff(3, 7)
    with pytest.raises(MaskError, match="differ in length"):
        attribution_patching(model, TOK, TOK[:-1], m)
    with pytest.raises(ValueError, match="unknown attribution site"):
        attribution_patching(model, TOK, TOK + 1, m, sites=["mlp_in"])
    with pytest.raises(ValueError, match="direction"):
        attribution_patching(model, TOK, TOK + 1, m, direction="sideways")
    with pytest.raises(ValueError, match="steps"):
        integrated_gradients(model, TOK, TOK + 1, m, steps=0)
    with pytest.raises(MaskError, match="Run.embed must be"):
        attribution_patching(model, TOK, Run(TOK, embed[:-1]), m)
    bad = embed.clone()
    bad[0, 0] = float("nan")
    with pytest.raises(MaskError, match="NaN"):
        attribution_patching(model, TOK, Run(TOK, bad), m)
    with pytest.raises(MaskError, match="layer 7 out of range"):
        attribution_patching(model, TOK, TOK + 1, m, layers=[7])


def test_result_roundtrip_top_and_plot(setup, tmp_path):
    model, embed, noise = setup
    res = attribution_patching(model, TOK, Run(TOK, embed + 0.1 * noise), LogitDiff(3, 7), layers=[1])
    assert res.layers == [1] and res.scores["z"].shape == (1, model.cfg.n_heads)
    top = res.top(3)
    assert len(top) == 3 and all(t[1][0] == 1 for t in top)
    assert abs(top[0][2]) >= abs(top[-1][2])
    loaded = AttributionResult.load(res.save(tmp_path / "atp.json"))
    assert loaded.method == "attribution_patching" and loaded.direction == "denoising"
    torch.testing.assert_close(loaded.scores["pattern"], res.scores["pattern"].cpu())
    for site in res.scores:
        fig = res.plot(site)
        assert fig.axes
