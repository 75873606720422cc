"""Batched activation patching equals TransformerLens's own patching functions."""

from __future__ import annotations

import itertools

import pandas as pd
import pytest
import torch
import transformer_lens.patching as tl_patching
from backends import HAS_HOOKED, TINY_BACKENDS
from _engine_support import single_thread  # noqa: F401  (autouse fixture)

import interp_toolkit.patching as patching
from interp_toolkit.engine import MaskError
from interp_toolkit.models import tiny_model

TL_NAMES = sorted(n for n in dir(patching) if n.startswith("get_act_patch") and hasattr(tl_patching, n))


SLOW_TL = ("get_act_patch_attn_head_pattern_dest_src_pos", "get_act_patch_attn_head_by_pos_every",
           "get_act_patch_attn_head_all_pos_every", "get_act_patch_block_every")


def _tl_metric(logits):
    """A TransformerLens-style metric: full logits in, one scalar out."""
    return (logits[:, -1, 3] - logits[:, -1, 7]).mean()


_TL_RESULTS: dict = {}


@pytest.fixture(scope="module", params=[(a, b) for a in ("gpt2", "llama") for b in TINY_BACKENDS],
                ids=lambda p: "-".join(p))
def setup(request):
    """(model, corrupted prompts, clean cache, TransformerLens's results on the same weights).

    TransformerLens's functions run on a HookedTransformer where this TransformerLens has one
    (its hook semantics define patching; the bridge's ``hook_resid_mid`` is the MLP norm's
    input), else on the model itself."""
    arch, backend = request.param
    model = tiny_model(arch, backend=backend, n_layers=2, n_heads=4, init_std=0.3)
    tl_model = tiny_model(arch, backend="hooked", n_layers=2, n_heads=4, init_std=0.3) if HAS_HOOKED else model
    g = torch.Generator().manual_seed(0)
    clean = torch.randint(0, model.cfg.d_vocab, (2, 5), generator=g)
    corrupt = torch.randint(0, model.cfg.d_vocab, (2, 5), generator=g)
    _, cache = model.run_with_cache(clean)
    _, tl_cache = tl_model.run_with_cache(clean)

    def tl(name, tokens, metric):
        key = (arch, tl_model is model and backend, name, tokens.shape[0], metric)
        if key not in _TL_RESULTS:  # the hooked reference is shared by both backends' runs
            c = {k: v[:tokens.shape[0]] for k, v in tl_cache.items()}
            _TL_RESULTS[key] = getattr(tl_patching, name)(tl_model, tokens, c, metric)
        return _TL_RESULTS[key]

    return model, corrupt, cache, tl


# Added in TransformerLens 4.x and not (yet) offered here: path patching of direct paths.
NOT_COVERED = {"get_act_patch_direct_path", "get_act_patch_direct_path_all_sources"}


def test_all_tl_functions_covered():
    tl_funcs = {n for n in dir(tl_patching) if n.startswith("get_act_patch")} - NOT_COVERED
    assert tl_funcs <= set(TL_NAMES), tl_funcs - set(TL_NAMES)


# TransformerLens runs one forward per patch: its slowest functions are compared with the batch
# of 2 only. Its resid_mid patching on a bridge patches the MLP norm's input only (not compared).
EQUALITY_CASES = [(name, batch) for name in TL_NAMES for batch in (1, 2)
                  if not (batch == 1 and name in SLOW_TL)
                  and not (not HAS_HOOKED and name == "get_act_patch_resid_mid")]


@pytest.mark.parametrize("name,batch", EQUALITY_CASES)
def test_equals_transformer_lens(setup, name, batch):
    model, corrupt, cache, tl = setup
    tokens = corrupt[:batch]
    clean_cache = {k: v[:batch] for k, v in cache.items()} if batch == 1 else cache
    expected = tl(name, tokens, _tl_metric)
    got = getattr(patching, name)(model, tokens, clean_cache, _tl_metric)
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, atol=2e-5, rtol=1e-5)
    assert float(expected.std()) > 1e-3  # the patches differ: equality is informative


@pytest.mark.parametrize("name", ["get_act_patch_mlp_out", "get_act_patch_attn_head_out_by_pos",
                                  "get_act_patch_attn_head_pattern_all_pos"])
def test_last_position_metric(setup, name):
    """Our metrics need only the last position (kernel decodes just it); same values."""
    model, corrupt, cache, tl = setup
    metric = patching.LogitDiff(3, 7)
    assert metric.metric_on == "last_logits"
    one = {k: v[:1] for k, v in cache.items()}
    expected = tl(name, corrupt[:1], _tl_metric)
    torch.testing.assert_close(getattr(patching, name)(model, corrupt[:1], one, metric), expected,
                               atol=2e-5, rtol=1e-5)
    # several prompts: one value per prompt, averaged (as the TL metric above does)
    expected = tl(name, corrupt, _tl_metric)
    torch.testing.assert_close(getattr(patching, name)(model, corrupt, cache, metric), expected,
                               atol=2e-5, rtol=1e-5)


@pytest.mark.parametrize("name", ["get_act_patch_resid_pre", "get_act_patch_attn_head_out_by_pos",
                                  "get_act_patch_attn_head_pattern_dest_src_pos", "get_act_patch_mlp_out"])
@pytest.mark.parametrize("reuse", [True, False])
def test_position_reuse_equals_transformer_lens(setup, name, reuse):
    """Patches at one position with causal prefix reuse forced on (positions before the
    patch computed once) and off: both equal TransformerLens."""
    model, corrupt, cache, tl = setup
    one = {k: v[:1] for k, v in cache.items()}
    expected = tl(name, corrupt[:1], _tl_metric)
    got = getattr(patching, name)(model, corrupt[:1], one, _tl_metric, position_reuse=reuse, max_batch_tokens=15)
    torch.testing.assert_close(got, expected, atol=2e-5, rtol=1e-5)


def test_layers_subset_and_chunking(setup):
    model, corrupt, cache, _ = setup
    full = patching.get_act_patch_attn_head_out_by_pos(model, corrupt, cache, _tl_metric)
    part = patching.get_act_patch_attn_head_out_by_pos(model, corrupt, cache, _tl_metric, layers=[1],
                                                       max_batch_tokens=12)
    torch.testing.assert_close(part[0], full[1], atol=2e-5, rtol=1e-5)


def test_bad_input(setup):
    model, corrupt, cache, _ = setup
    with pytest.raises(MaskError, match="batch 2; the corrupted batch has 1"):
        patching.get_act_patch_resid_pre(model, corrupt[:1], cache, _tl_metric)
    with pytest.raises(MaskError, match="another length"):
        patching.get_act_patch_resid_pre(model, corrupt[:, :4], cache, _tl_metric)
    with pytest.raises(MaskError, match="layer 5 out of range"):
        patching.get_act_patch_resid_pre(model, corrupt, cache, _tl_metric, layers=[5])
    with pytest.raises(MaskError, match="no 'blocks.0.hook_mlp_out'"):
        patching.get_act_patch_mlp_out(model, corrupt, {}, _tl_metric)
    with pytest.raises(ValueError, match="metric_on"):
        patching.get_act_patch_mlp_out(model, corrupt, cache, _tl_metric, metric_on="probs")


# ---------------------------------------------------------------------------- SmolLM2
REAL_CASES = {
    # name -> index axes of TL's generic patcher
    "get_act_patch_resid_pre": ("layer", "pos"),
    "get_act_patch_attn_out": ("layer", "pos"),
    "get_act_patch_mlp_out": ("layer", "pos"),
    "get_act_patch_attn_head_out_by_pos": ("layer", "pos", "head"),
    "get_act_patch_attn_head_v_by_pos": ("layer", "pos", "head"),
    "get_act_patch_attn_head_k_all_pos": ("layer", "head"),
    "get_act_patch_attn_head_pattern_all_pos": ("layer", "head_index"),
    "get_act_patch_attn_head_pattern_dest_src_pos": ("layer", "head_index", "dest_pos", "src_pos"),
}


@pytest.mark.real
@pytest.mark.slow
def test_equals_transformer_lens_smollm2(smollm2):
    model = smollm2
    clean = model.to_tokens("The Eiffel Tower is in", prepend_bos=False)
    corrupt = model.to_tokens("The Colosseum is in", prepend_bos=False)
    assert clean.shape == corrupt.shape
    T = clean.shape[1]
    paris, rome = model.to_single_token(" Paris"), model.to_single_token(" Rome")
    _, cache = model.run_with_cache(clean)
    layers = [1, 29]

    def metric(logits):
        return logits[0, -1, paris] - logits[0, -1, rome]

    sizes = {"layer": layers, "pos": range(T), "head": None, "head_index": range(model.cfg.n_heads),
             "dest_pos": range(T), "src_pos": range(T)}
    g = torch.Generator().manual_seed(0)
    for name, axes in REAL_CASES.items():
        got = getattr(patching, name)(model, corrupt, cache, patching.LogitDiff(paris, rome), layers=layers)
        n_heads = model.cfg.n_key_value_heads if "_k_" in name or "_v_" in name else model.cfg.n_heads
        ranges = [range(n_heads) if a == "head" else sizes[a] for a in axes]
        index = list(itertools.product(*[list(r) for r in ranges]))
        if "dest_src" in name:
            index = [i for i in index if i[3] <= i[2]]  # attention to later positions is 0 in both runs
        pick = torch.randperm(len(index), generator=g)[:4].tolist()
        rows = [index[i] for i in pick]
        df = pd.DataFrame(rows, columns=list(axes))
        expected = getattr(tl_patching, name)(model, corrupt, cache, metric, index_axis_names=None, index_df=df)
        ours = torch.stack([got[(layers.index(r[0]),) + tuple(r[1:])] for r in rows])
        torch.testing.assert_close(ours, expected, atol=2e-3, rtol=1e-4, msg=name)
    # the patches change the metric (clean vs corrupt differ a lot at the subject)
    resid = patching.get_act_patch_resid_pre(model, corrupt, cache, patching.LogitDiff(paris, rome), layers=[0])
    assert float(resid.max() - resid.min()) > 1.0
