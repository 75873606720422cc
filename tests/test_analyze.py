"""``interp_toolkit.analyze``: attention patterns against their definition, each section
against a direct call of its analysis, the report's save/load and HTML, the optional-section
registry, and the ``analyze`` subcommand — on tiny random models."""

from __future__ import annotations

import importlib.machinery
import math
import re
import sys
import types
from html import escape

import numpy as np
import pytest
import torch

from _engine_support import single_thread  # noqa: F401  (autouse fixture)
from interp_toolkit.adapter import as_adapter
from interp_toolkit.analyze import (SECTIONS, UNAVAILABLE, AnalysisReport, AttentionResult, Section, analyze,
                                    attention_patterns)
from interp_toolkit.analyze import sections as S
from interp_toolkit.analyze.attention import default_layers
from interp_toolkit.core import load_result
from interp_toolkit.interactions import compute_interactions
from interp_toolkit.strace import trace

PROMPT = "the cat sat on the mat and ran"


@pytest.fixture
def model(make_tiny):
    return make_tiny("gpt2", n_layers=3, n_heads=2, init_std=0.3)


def test_default_layers_spread_over_depth():
    assert default_layers(1) == [0]
    assert default_layers(2) == [0, 1]
    assert default_layers(5) == [0, 2, 4]
    assert default_layers(30) == [0, 14, 29] or default_layers(30) == [0, 15, 29]


def test_attention_patterns_match_softmax_of_queries_and_keys(model):
    """A[l,h,q,k] = softmax_k(q·k/√d_head) over k ≤ q, recomputed from the cached q and k."""
    a = as_adapter(model)
    res = attention_patterns(model, PROMPT, layers=[0, -1])
    assert res.layers == [0, 2] and res.str_tokens == a.to_str_tokens(PROMPT)
    tokens = a.as_tokens(PROMPT)
    T = tokens.shape[1]
    names = a.hook_names("q", [0, 2]) + a.hook_names("k", [0, 2])
    with torch.no_grad():
        _, cache = a.run_with_cache(tokens, names)
    for i, layer in enumerate((0, 2)):
        q = cache[a.hook_name("q", layer)][0].double()  # [pos, head, d_head]
        k = cache[a.hook_name("k", layer)][0].double()
        scores = torch.einsum("qhd,khd->hqk", q, k) / math.sqrt(a.d_head)
        scores = scores.masked_fill(torch.triu(torch.ones(T, T, dtype=torch.bool), 1), -math.inf)
        expected = scores.softmax(-1).numpy()
        np.testing.assert_allclose(res.patterns[i], expected, atol=2e-5)
    np.testing.assert_allclose(res.patterns.sum(-1), 1.0, atol=1e-5)
    assert res.top_attended(2)[0][0][1] == pytest.approx(res.last_token()[0].mean(0).max(), abs=1e-6)
    with pytest.raises(ValueError, match="out of range"):
        attention_patterns(model, PROMPT, layers=[3])


def test_sections_equal_direct_calls_and_report_round_trips(model, tmp_path):
    rep = analyze(model, PROMPT, options={"n_players": 4}, progress=False, errors="raise")
    assert list(rep.sections) == [n for n, sec in SECTIONS.items() if not sec.needs_others]
    assert set(UNAVAILABLE) <= set(rep.skipped)
    # each section is its analysis with the report's defaults
    direct = trace(model, PROMPT, sizes=S.DEFAULT_OPTIONS["strace_sizes"], conditions=("trace", "inverse"),
                   keep_subgraphs=(1e-2,), token_freq=None)
    assert rep["strace"].tv == direct.tv and rep["strace"].sizes == direct.sizes
    assert rep["strace"].subgraphs == direct.subgraphs
    inter = compute_interactions(model, PROMPT, n=4, method="lp")
    np.testing.assert_array_equal(rep["interactions"].v, inter.v)
    np.testing.assert_array_equal(rep["interactions"].i_and, inter.i_and)
    np.testing.assert_array_equal(rep["attention"].patterns, attention_patterns(model, PROMPT).patterns)
    # save / load through the result registry
    back = load_result(rep.save(tmp_path / "rep.json"))
    assert isinstance(back, AnalysisReport) and list(back.sections) == list(rep.sections)
    assert back["strace"].tv == rep["strace"].tv
    np.testing.assert_array_equal(back["interactions"].i_or, rep["interactions"].i_or)
    np.testing.assert_allclose(back["attention"].patterns, rep["attention"].patterns, atol=1e-6)
    assert back.skipped == rep.skipped and back.guides == rep.guides
    # one offline page: the circuitsvis bundle once, one widget per layer shown, every guide
    html = back.to_html()
    assert html.count('data-bundle="circuitsvis"') == 1
    assert html.count('class="cv-widget"') == len(rep["attention"].layers)
    for name in rep.sections:
        assert escape(rep.titles[name]) in html and escape(rep.guides[name]) in html
    for why in rep.skipped.values():
        assert escape(why) in html
    assert not re.search(r"<(script|img|link)[^>]*(src|href)=[\"']?(https?:)?//", html)  # nothing external


@pytest.mark.slow
def test_every_analyze_result_displays_itself(model):
    rep = analyze(model, PROMPT, options={"n_players": 3}, progress=False, errors="raise")
    for r in [rep, *rep.sections.values()]:
        frag = r._repr_html_()
        assert frag.startswith('<div class="itk">') and "<img" in frag, type(r).__name__
        assert r.summary().strip()


def test_comparison_section_needs_a_second_model(make_tiny):
    a = make_tiny("gpt2", n_layers=2, n_heads=2, init_std=0.3)
    b = make_tiny("gpt2", n_layers=2, n_heads=2, init_std=0.3, seed=1)
    one = analyze(a, PROMPT, options={"n_players": 3}, progress=False, sections=["comparison"])
    assert one.sections == {}
    two = analyze(a, PROMPT, others=[b], options={"n_players": 3}, progress=False, sections=["comparison"],
                  errors="raise")
    cmp = two["comparison"]
    assert [r.model["seed"] for r in cmp.results] == [0, 1]
    assert cmp.results[0].target == cmp.results[1].target  # the first model's next token, in both
    assert "Sharing (separate extraction)" in two.to_html()


def test_comparison_reuses_the_interactions_section_where_it_matches(make_tiny, monkeypatch):
    """With both sections, the first model's 2^n values are computed once (the comparison takes
    the interactions section's result); results equal a run of the comparison alone."""
    from interp_toolkit.interactions import pipeline

    a = make_tiny("gpt2", n_layers=2, n_heads=2, init_std=0.3)
    b = make_tiny("gpt2", n_layers=2, n_heads=2, init_std=0.3, seed=1)
    calls = []
    real = pipeline.subset_values
    monkeypatch.setattr(pipeline, "subset_values", lambda adapter, *x, **k: calls.append(adapter.meta["seed"])
                        or real(adapter, *x, **k))
    both = analyze(a, PROMPT, others=[b], options={"n_players": 3}, progress=False,
                   sections=["interactions", "comparison"], errors="raise")
    assert calls == [0, 1]  # model a once (interactions), model b once (comparison)
    assert both["comparison"].results[0] is both["interactions"]
    calls.clear()
    alone = analyze(a, PROMPT, others=[b], options={"n_players": 3}, progress=False, sections=["comparison"],
                    errors="raise")
    assert calls == [0, 1]
    for r1, r2 in zip(both["comparison"].results, alone["comparison"].results):
        np.testing.assert_array_equal(r1.v, r2.v)
    assert both["comparison"].sharing == alone["comparison"].sharing


def test_reusable_refuses_what_differs(make_tiny):
    from interp_toolkit.interactions.pipeline import reusable

    a = make_tiny("gpt2", n_layers=2, n_heads=2, init_std=0.3)
    b = make_tiny("gpt2", n_layers=2, n_heads=2, init_std=0.3, seed=1)
    r = compute_interactions(a, PROMPT, n=3, baseline="zero", method="lp")
    adapter = as_adapter(a)
    assert reusable(r, adapter, r.tokens, r.target_id, "zero", "lp")
    assert reusable(r, adapter, r.tokens, r.target_id, torch.zeros(adapter.d_model), "auto")
    assert not reusable(r, as_adapter(b), r.tokens, r.target_id, "zero", "lp")  # another model
    assert not reusable(r, adapter, r.tokens, r.target_id + 1, "zero", "lp")  # another target
    assert not reusable(r, adapter, r.tokens, r.target_id, "mean", "lp")  # another baseline
    assert not reusable(r, adapter, r.tokens, r.target_id, "zero", "pdhg")  # another method
    assert not reusable(r, adapter, r.tokens, r.target_id, "learned", "lp")
    other = type(r.tokens)(tokens=r.tokens.tokens, positions=r.tokens.positions[:-1])
    assert not reusable(r, adapter, other, r.target_id, "zero", "lp")  # other players
    assert not reusable(None, adapter, r.tokens, r.target_id, "zero", "lp")


def test_bad_input_is_a_clear_error_and_failed_sections_are_recorded(model, monkeypatch):
    with pytest.raises(ValueError, match="unknown analysis option"):
        analyze(model, PROMPT, options={"n_player": 3})
    with pytest.raises(ValueError, match="unknown section"):
        analyze(model, PROMPT, sections=["strace", "nope"])
    with pytest.raises(ValueError, match="non-empty"):
        analyze(model, "  ")

    def broken(adapter, prompt, options):
        raise ValueError("no good")

    monkeypatch.setitem(SECTIONS, "broken", Section("broken", "Broken", "guide", broken))
    rep = analyze(model, PROMPT, sections=["broken", "attention"], progress=False)
    assert rep.skipped == {"broken": "failed: ValueError: no good"} and list(rep.sections) == ["attention"]
    assert escape("failed: ValueError: no good") in rep.to_html()
    with pytest.raises(ValueError, match="no good"):
        analyze(model, PROMPT, sections=["broken"], progress=False, errors="raise")


def test_optional_sections_register_only_when_their_package_exists(model, monkeypatch):
    # entries made here are removed afterwards (monkeypatch records them as absent first)
    monkeypatch.setitem(UNAVAILABLE, "_absent", None)
    monkeypatch.setitem(SECTIONS, "_fake", None)
    del UNAVAILABLE["_absent"], SECTIONS["_fake"]
    S.register_optional("_absent", "interp_toolkit.no_such_analysis", "quick", "Absent", "g")
    assert "_absent" not in SECTIONS and "not part of this installation" in UNAVAILABLE["_absent"]

    fake = types.ModuleType("itk_fake_lens")
    fake.__spec__ = importlib.machinery.ModuleSpec("itk_fake_lens", None)
    fake.quick_lens = lambda m, prompt, lens: attention_patterns(m, prompt, layers=[1] if lens == "logit" else [0])
    monkeypatch.setitem(sys.modules, "itk_fake_lens", fake)
    S.register_optional("_fake", "itk_fake_lens", "quick_lens", "Fake lens", "read me", lens="lens")
    rep = analyze(model, PROMPT, sections=["_fake", "_absent"], progress=False, errors="raise")
    assert isinstance(rep["_fake"], AttentionResult) and rep["_fake"].layers == [1]
    assert "not part of this installation" in rep.skipped["_absent"]
    del fake.quick_lens
    rep = analyze(model, PROMPT, sections=["_fake"], progress=False)
    assert rep.skipped == {"_fake": "itk_fake_lens has no quick_lens()"}


def test_the_registry_is_left_as_found():
    """(Run after the test above:) no test section stays registered."""
    assert not [n for n in list(SECTIONS) + list(UNAVAILABLE) if n.startswith("_")]


def test_analyze_command(tmp_path, capsys):
    from interp_toolkit.cli import main

    out, js = tmp_path / "r.html", tmp_path / "r.json"
    status = main(["analyze", PROMPT, "--model", "tiny-random-gpt2,tiny-random-gpt2", "--out", str(out),
                   "--json", str(js), "--n-players", "3", "--sections", "interactions,comparison,attention"])
    assert status == 0
    text = capsys.readouterr().out
    assert "Attention patterns" in text and f"report: {out}" in text
    rep = load_result(js)
    assert list(rep.sections) == ["interactions", "comparison", "attention"] and len(rep.models) == 2
    assert out.read_text().count('data-bundle="circuitsvis"') == 1
    assert main(["analyze", PROMPT, "--model", "tiny-random", "--sections", "nope", "--out", ""]) == 2


def test_loading_refuses_sections_it_cannot_read(model, tmp_path):
    import json

    from interp_toolkit.core import ResultFormatError

    path = analyze(model, PROMPT, sections=["attention"], progress=False, errors="raise").save(tmp_path / "r.json")
    doc = json.loads(path.read_text())
    for change, message in ((("kind", "analyze.nope"), "cannot read"), (("format_version", 99), "format version 99")):
        bad = json.loads(json.dumps(doc))
        bad["data"]["sections"]["attention"][change[0]] = change[1]
        (tmp_path / "bad.json").write_text(json.dumps(bad))
        with pytest.raises(ResultFormatError, match=message):
            load_result(tmp_path / "bad.json")
