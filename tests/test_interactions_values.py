"""Values through the engine (tiny models), players as token positions, baselines, results."""

import json

import numpy as np
import pytest
import torch

from interp_toolkit.interactions import (InteractionResult, PlayerError, PlayerTokens, compute_interactions,
                                         fixed_baseline, learn_baseline, log_odds, subset_masks,
                                         subset_values, subset_values_loop)
from interp_toolkit.interactions.baselines import draw_subsets
from interp_toolkit.models import tiny_model

PLAYERS = [[1], [2, 3], [5], [7], [9, 10]]


@pytest.fixture(scope="module")
def tiny64():
    return tiny_model("llama", init_std=0.3, dtype=torch.float64, seed=3)


def _tokens(n_tok=12):
    return PlayerTokens.from_positions(list(range(5, 5 + n_tok)), PLAYERS)


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_batched_values_equal_one_forward_per_subset_float64(arch):
    model = tiny_model(arch, init_std=0.3, dtype=torch.float64, seed=1)
    toks = _tokens()
    b = torch.randn(model.cfg.d_model, dtype=torch.float64)
    v = subset_values(model, toks, target=7, baseline=b, max_batch_tokens=5 * 12)  # 5 rows per chunk
    v_loop = subset_values_loop(model, toks, target=7, baseline=b)
    assert v.dtype == np.float64 and v.shape == (32,)
    assert np.abs(v - v_loop).max() <= 1e-9
    assert np.ptp(v) > 1e-3  # masking players changes the output


@pytest.mark.parametrize("reuse", [False, True])
def test_values_with_and_without_causal_reuse(tiny64, reuse):
    """Causal prefix reuse gives the loop's values in float64, and computes the closed-form
    count of token positions for these players (multi-token players vary together)."""
    toks = _tokens()
    b = torch.randn(tiny64.cfg.d_model, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    plan = {}
    v = subset_values(tiny64, toks, target=7, baseline=b, max_batch_tokens=10 ** 5, position_reuse=reuse,
                      reuse_plan=plan)
    assert np.abs(v - subset_values_loop(tiny64, toks, target=7, baseline=b)).max() <= 1e-9
    if reuse:
        # players start at positions 1, 2, 5, 7, 9 of 12: Σ_i 2^i (p_{i+1} − p_i)
        bounds = [0, 1, 2, 5, 7, 9, 12]
        assert plan["computed_positions"] == sum(2 ** i * (bounds[i + 1] - bounds[i]) for i in range(6))
        assert plan["dense_positions"] == 32 * 12
    else:
        assert plan == {}


def test_batched_values_on_tiny_fixture_backends(tiny):
    toks = PlayerTokens.from_positions(list(range(5, 17)), PLAYERS[:4])
    b = fixed_baseline(tiny, "zero").vector
    v = subset_values(tiny, toks, target=3, baseline=b)
    v_loop = subset_values_loop(tiny, toks, target=3, baseline=b)
    assert np.abs(v - v_loop).max() <= 1e-4


def test_keep_matrix_masks_only_players():
    toks = _tokens()
    keep = toks.keep_matrix(subset_masks(5))
    assert keep.shape == (32, 12)
    assert keep[:, [0, 4, 6, 8, 11]].all()  # non-players always kept
    assert not keep[0, [1, 2, 3, 5, 7, 9, 10]].any()  # ∅ masks every player token
    assert keep[0b00010, 2] and keep[0b00010, 3] and not keep[0b00010, 1]


def test_log_odds_is_stable_in_float64():
    logits = torch.tensor([[800.0, 0.0, 0.0], [0.0, 0.0, 0.0], [-50.0, 10.0, 0.0]])
    v = log_odds(logits, 0)
    assert v.dtype == torch.float64
    np.testing.assert_allclose(v.numpy(), [800.0 - np.log(2), np.log(1 / 2), -50.0 - np.logaddexp(10.0, 0.0)],
                               rtol=1e-12)
    p = torch.softmax(logits.double(), -1)[:, 0]
    naive = torch.log(p / (1 - p))
    assert not torch.isfinite(naive[0])  # the naive form overflows where ours does not


def test_too_many_players_is_a_clear_error():
    with pytest.raises(PlayerError, match=r"2\^21 = 2,097,152"):
        PlayerTokens.from_positions(list(range(30)), [[i] for i in range(21)])
    with pytest.raises(PlayerError, match="two players"):
        PlayerTokens.from_positions(list(range(5)), [[1], [1, 2]])
    with pytest.raises(PlayerError, match="outside"):
        PlayerTokens.from_positions(list(range(5)), [[7]])


def test_draw_subsets_are_disjoint_and_sized():
    rng = np.random.default_rng(0)
    d = draw_subsets(6, 200, rng)
    full, s1s3, s2s3, s3 = d[:, 0], d[:, 1], d[:, 2], d[:, 3]
    s1, s2 = s1s3 & ~s3, s2s3 & ~s3
    assert not (s1 & s2).any() and (full == (s1 | s2 | s3)).all()
    assert set(s1.sum(1)) <= {1, 2, 3} and set(s2.sum(1)) <= {1, 2, 3}
    assert s3.sum(1).max() >= 2 and (s3.sum(1) == 0).any()


def test_learned_baseline_moves_is_seeded_and_leaves_weights(tiny64):
    toks = _tokens()
    before = [(p.detach().clone(), p.requires_grad) for p in tiny64.parameters()]
    kw = dict(init="zero", epochs=3, lr=1e-2, seed=5, progress=False)
    b1 = learn_baseline(tiny64, [(toks, 7)], **kw)
    b2 = learn_baseline(tiny64, [(toks, 7)], **kw)
    assert b1.kind == "learned" and len(b1.history) == 3 and b1.seed == 5
    assert b1.vector.abs().max() > 0  # moved away from the zero init
    torch.testing.assert_close(b1.vector, b2.vector)
    for p, (q, grad) in zip(tiny64.parameters(), before):
        assert torch.equal(p, q) and p.requires_grad == grad


def test_learned_baseline_eval_curve_is_on_fixed_draws(tiny64):
    """eval_history: the loss on one fixed draw set before and after every epoch; it does not
    change the training (own generator), is constant at lr 0, and its first value is the loss
    of the initial baseline computed directly."""
    from interp_toolkit.interactions.baselines import draw_subsets, interaction_loss

    toks = _tokens()
    kw = dict(init="zero", epochs=3, lr=1e-2, seed=5, progress=False)
    plain = learn_baseline(tiny64, [(toks, 7)], **kw)
    tracked = learn_baseline(tiny64, [(toks, 7)], eval_draws=6, **kw)
    torch.testing.assert_close(plain.vector, tracked.vector)
    assert plain.eval_history == [] and len(tracked.eval_history) == 4
    subs = draw_subsets(toks.n, 6, np.random.default_rng(6))
    with torch.no_grad():
        direct = interaction_loss(tiny64, toks, 7, fixed_baseline(tiny64, "zero").vector, subs).item()
    assert tracked.eval_history[0] == pytest.approx(direct, rel=1e-5)
    frozen = learn_baseline(tiny64, [(toks, 7)], eval_draws=6, **{**kw, "lr": 0.0})
    assert frozen.eval_history == pytest.approx([direct] * 4, rel=1e-5)
    assert tracked.eval_history[-1] != pytest.approx(direct, rel=1e-3)
    back = type(tracked).from_dict(tracked.to_dict())
    assert back.eval_history == tracked.eval_history


def test_compute_interactions_result_round_trip_and_report(tiny64, tmp_path):
    res = compute_interactions(tiny64, None, players=_tokens(), baseline="zero", target=4)
    assert res.n == 5 and res.v[0] == 0.0 and res.relative
    assert res.timings["n_forward_rows"] == 32
    path = res.save(tmp_path / "r.json")
    back = InteractionResult.load(path)
    np.testing.assert_array_equal(back.v, res.v)
    np.testing.assert_array_equal(back.i_and, res.i_and)
    assert back.baseline.kind == "zero" and back.model == json.loads(json.dumps(res.model))
    page = res.to_html()
    assert "<script" not in page and "http" not in page.replace("http-equiv", "")
    assert "data:image/png;base64," in page
    assert res.shapley().sum() == pytest.approx(res.v[-1] + res.sparsification.q[-1]
                                                - res.sparsification.q[0], abs=1e-9)


def test_learned_baseline_is_learned_over_other_prompts_not_the_explained_one(tiny64):
    toks = _tokens()
    others = [(PlayerTokens.from_positions(list(range(20, 32)), PLAYERS), 3),
              (PlayerTokens.from_positions(list(range(30, 42)), PLAYERS), 9)]
    kw = dict(init="zero", epochs=2, lr=1e-2, seed=1, progress=False)
    res = compute_interactions(tiny64, None, players=toks, baseline="learned", target=4,
                               baseline_options={"samples": others, **kw})
    expected = learn_baseline(tiny64, others, **kw)
    on_prompt = learn_baseline(tiny64, [(toks, 4)], **kw)
    torch.testing.assert_close(res.baseline.vector, expected.vector)
    assert not torch.allclose(res.baseline.vector, on_prompt.vector)
    with pytest.raises(ValueError, match="dataset of prompts"):
        compute_interactions(tiny64, None, players=toks, baseline="learned", target=4,
                             baseline_options={"prompts": [], **kw})
