"""Interactions on the real offline models (small n)."""

import numpy as np
import pytest
import torch

from interp_toolkit.adapter import as_adapter
from interp_toolkit.interactions import (PlayerError, Players, compare_models, compute_interactions,
                                         fixed_baseline, subset_values, subset_values_loop)
from interp_toolkit.interactions.values import resolve_target

pytestmark = pytest.mark.real

PROMPT = "The Eiffel Tower is a famous landmark that stands in the French capital city of"
WORDS = ["Eiffel", "Tower", "French", "capital"]


def test_batched_values_equal_loop_on_smollm2(smollm2):
    toks = Players.from_prompt(PROMPT, WORDS).tokens_for(smollm2)
    target = resolve_target(smollm2, toks, None)
    assert as_adapter(smollm2).tokenizer.decode([target]) == " Paris"
    b = fixed_baseline(smollm2, "pad").vector
    v = subset_values(smollm2, toks, target, b, max_batch_tokens=6 * len(toks.tokens))
    v_loop = subset_values_loop(smollm2, toks, target, b)
    assert np.abs(v - v_loop).max() <= 2e-4  # float32 model: batch shape changes the rounding
    assert v[-1] > v[0] + 1.0  # the cue words raise ' Paris'


def test_same_words_address_both_tokenizers(smollm2, gemma3):
    players = Players.from_prompt(PROMPT, WORDS)
    for model, bos in ((smollm2, 0), (gemma3, 1)):
        toks = players.tokens_for(model)
        tok = as_adapter(model).tokenizer
        assert len(toks.tokens) == len(tok(PROMPT, add_special_tokens=False)["input_ids"]) + bos
        for word, pos in zip(WORDS, toks.positions):
            assert 0 not in pos or bos == 0
            assert tok.decode([toks.tokens[p] for p in pos]).strip() == word


def test_unalignable_players_and_bad_targets(smollm2, gemma3):
    start = PROMPT.index("capital")
    split_word = Players.from_prompt(PROMPT, [(start, start + 3), (start + 3, start + 7)])
    with pytest.raises(PlayerError, match="spans players"):
        split_word.tokens_for(smollm2)
    toks = Players.from_prompt(PROMPT, WORDS).tokens_for(smollm2)
    with pytest.raises(PlayerError, match="single token"):
        resolve_target(smollm2, toks, " Parisianistically")
    assert resolve_target(smollm2, toks, " Paris") == resolve_target(smollm2, toks, None)
    with pytest.raises(PlayerError, match="different next words"):
        compare_models([smollm2, gemma3], "Bees collect sweet nectar from flowers and use it to make golden",
                       n=2, joint=False)


def test_fixed_baselines(smollm2):
    a = as_adapter(smollm2)
    for kind in ("pad", "unk", "zero", "mean"):
        b = fixed_baseline(smollm2, kind)
        assert b.vector.shape == (a.d_model,) and torch.isfinite(b.vector).all()
    assert fixed_baseline(smollm2, "zero").vector.abs().max() == 0
    mean = fixed_baseline(smollm2, "mean").vector
    torch.testing.assert_close(mean, a.W_E.mean(0).detach().float(), atol=1e-5, rtol=1e-4)


def test_compare_models_end_to_end(smollm2, gemma3, tmp_path):
    cmp = compare_models([smollm2, gemma3], PROMPT, players=WORDS[:3], n=3)
    r1, r2 = cmp.results
    assert r1.target.strip() == r2.target.strip() == "Paris"
    assert r1.players == r2.players and r1.n == 3
    for r in (r1, r2):
        assert np.abs(r.i_and.sum() + r.i_or.sum() - (r.v[-1] + r.sparsification.q[-1])) <= 1e-9
    assert 0 <= cmp.sharing["overlap"] <= 1 and 0 <= cmp.joint_sharing["transfer_1to2"] <= 1
    path = cmp.save(tmp_path / "cmp.json")
    from interp_toolkit.interactions import Comparison
    back = Comparison.load(path)
    np.testing.assert_array_equal(back.results[1].v, r2.v)
    page = back.write_html(tmp_path / "cmp.html").read_text()
    assert "smollm2-135m" in page and "gemma3-270m" in page and "<script" not in page


def test_cli_prints_top_interactions_and_writes_html(smollm2, monkeypatch, tmp_path, capsys):
    import interp_toolkit.models as models
    from interp_toolkit.cli import main

    monkeypatch.setattr(models, "load_model", lambda name, **kw: smollm2)
    html = tmp_path / "r.html"
    status = main(["interactions", PROMPT, "--model", "smollm2-135m", "--players", "Eiffel,French,city",
                   "--out", str(html), "--top", "3"])
    out = capsys.readouterr().out
    assert status == 0 and "' Paris'" in out and html.exists()
    assert main(["interactions", PROMPT, "--players", "Berlin"]) == 2
