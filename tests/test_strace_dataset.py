"""Dataset runs: parquet rows, resume without recomputation, aggregates, the bundled set."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from _engine_support import single_thread  # noqa: F401  (autouse fixture)
from interp_toolkit.models import tiny_model
from interp_toolkit.strace import dataset as D
from interp_toolkit.strace.dataset import DatasetResult, cross_model_rho, load_eval_set, trace_dataset

SIZES = (0.02, 0.1, 0.3, 0.6)
TEXTS = ["the cat sat on", "a b c d e f", "x", "hello world again", "one two three four five"]


@pytest.fixture(scope="module")
def model():
    return tiny_model("gpt2", n_layers=2, n_heads=2, init_std=0.3)


def run(model, out, **kw):
    kw.setdefault("sizes", SIZES)
    kw.setdefault("progress", False)
    kw.setdefault("token_freq", None)
    return trace_dataset(model, TEXTS, out, **kw)


def test_rows_saved_and_bad_input_recorded(tmp_path, model):
    res = run(model, tmp_path / "run")
    parts = sorted((tmp_path / "run" / "rows").glob("*.parquet"))
    assert len(parts) == len(TEXTS)
    assert res.n == len(TEXTS) - 1  # "x" is one token
    bad = res.table[res.table["index"] == 2]["error"].iloc[0]
    assert "2 tokens" in bad
    cfg = json.loads((tmp_path / "run" / "sweep.json").read_text())["config"]
    assert cfg["sizes"] == list(SIZES) + [1.0] and cfg["mode"] == "l1" and res.config["model"]["name"]
    back = DatasetResult.load(tmp_path / "run")
    assert back.n == res.n
    np.testing.assert_allclose(back.matrix("tv_trace"), res.matrix("tv_trace"))


def test_resume_skips_finished_inputs(tmp_path, model, monkeypatch):
    run(model, tmp_path / "run", max_inputs=2)
    assert len(list((tmp_path / "run" / "rows").glob("*.parquet"))) == 2
    calls = []
    real = D.trace

    def counting(model, text, **kw):
        calls.append(text)
        return real(model, text, **kw)

    monkeypatch.setattr(D, "trace", counting)
    res = run(model, tmp_path / "run")
    assert calls == TEXTS[2:]
    assert len(res.table) == len(TEXTS)
    calls.clear()
    run(model, tmp_path / "run")
    assert calls == []
    # a changed text at an index is traced again
    texts = list(TEXTS)
    texts[0] = "the dog sat on"
    trace_dataset(model, texts, tmp_path / "run", sizes=SIZES, progress=False, token_freq=None)
    assert calls == ["the dog sat on"]


def test_other_configuration_refused(tmp_path, model):
    run(model, tmp_path / "run", max_inputs=1)
    with pytest.raises(ValueError, match="another configuration"):
        run(model, tmp_path / "run", mode="l2")
    res = run(model, tmp_path / "run", mode="l2", resume=False, max_inputs=1)
    assert res.config["mode"] == "l2" and len(res.table) == 1


def test_aggregates(tmp_path, model):
    res = run(model, None)
    summ = res.tv_summary()
    assert list(summ.index) == list(SIZES) + [1.0]
    assert np.all(summ["q25"] <= summ["median"]) and np.all(summ["median"] <= summ["q75"])
    assert summ["median"].iloc[-1] == pytest.approx(0, abs=1e-6)
    rho = res.entropy_auc_spearman()
    assert -1 <= rho["rho"] <= 1 and 0 <= rho["p"] <= 1 and rho["n"] == 4
    comp = res.composition_curves()
    assert np.allclose(comp[list(D.TYPE_COLUMNS)].sum(1).dropna(), 1)
    assert np.allclose(comp[list(D.DEPTH_COLUMNS)].sum(1).dropna(), 1)
    early = res.early_share(0.1)
    assert 0 <= early["first_quarter_mean"] <= early["first_half_mean"] <= 1
    assert set(res.two_phase()) >= {"construction_early_half_share", "refinement_attention_share"}
    assert len(res.required_sizes()) == 8
    assert "time_evaluate" in res.timings().index
    path = res.save(tmp_path / "all.parquet")
    assert DatasetResult.load(path).n == res.n


def test_cross_model_rho(model):
    other = tiny_model("gpt2", n_layers=2, n_heads=2, init_std=0.3, seed=5)
    a, b = run(model, None), run(other, None)
    r = cross_model_rho(a, b)
    assert r["n"] == 4 and -1 <= r["rho"] <= 1
    assert cross_model_rho(a, a)["rho"] == pytest.approx(1.0)


def test_eval_set():
    texts = load_eval_set()
    assert len(texts) == 200 and len(set(texts)) == 200
    assert all(1 <= len(t.split()) <= 40 for t in texts)
    assert load_eval_set(3) == texts[:3]


def test_bad_arguments(model):
    with pytest.raises(ValueError, match="mode"):
        trace_dataset(model, TEXTS, None, mode="x")
    with pytest.raises(ValueError, match="sizes"):
        trace_dataset(model, TEXTS, None, sizes=(2.0,))
    with pytest.raises(TypeError, match="strings"):
        trace_dataset(model, [1, 2], None)


def test_reference_defect_run_kept_apart(tmp_path, model):
    run(model, tmp_path / "run", max_inputs=1)
    with pytest.raises(ValueError, match="ablate_attention"):
        run(model, tmp_path / "run", ablate_attention=False)
