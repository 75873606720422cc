"""Sweeps on the local runner: keys, the parquet store, resume after a crash, the trace and
interactions work functions against direct calls, migration of earlier s-Trace runs, the
CLI, and bad input (clear errors, nothing written)."""

from __future__ import annotations

import json
import os

import numpy as np
import pandas as pd
import pytest
import torch

from _engine_support import single_thread  # noqa: F401  (autouse fixture)
from interp_toolkit.adapter import as_adapter
from interp_toolkit.cli import main
from interp_toolkit.interactions.baselines import fixed_baseline
from interp_toolkit.interactions.players import Players
from interp_toolkit.interactions.sparsify import sparsify
from interp_toolkit.interactions.values import resolve_target, subset_values
from interp_toolkit.models import load_model
from interp_toolkit.strace import dataset as D
from interp_toolkit.strace.dataset import DatasetResult, result_row
from interp_toolkit.strace.evaluate import trace
from interp_toolkit.sweeps import (InputError, ItemOutput, LocalRunner, RayRunner, RunnerError, StoreError, SweepStore,
                                   UnknownAnalysisError, UnknownModelError, WorkItem, item_key, read_inputs,
                                   register_analysis, run_sweep)
from interp_toolkit.sweeps import store as S

MODELS = ["tiny-random-gpt2", "tiny-random-llama"]
INPUTS = [("p0", "the cat sat on the warm mat"), ("p1", "a dog ran in the park today"), ("p2", "x"),
          ("p3", "we ate bread and soft cheese")]
TRACE_CFG = {"sizes": [0.05, 0.3], "unigram": "none"}


def snapshot(path) -> dict:
    """Every file under ``path`` with its bytes (to prove nothing was written)."""
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()} \
        if path.exists() else {}


# ---------------------------------------------------------------------- items and store
def test_item_key_names_exactly_the_item():
    base = ("trace", "p0", "the cat", "m", {"a": 1, "b": [0.1, 0.2]})
    k = item_key(*base)
    assert k == item_key("trace", "p0", "the cat", "m", {"b": [0.1, 0.2], "a": 1})  # key order irrelevant
    variants = [("interactions", *base[1:]), ("trace", "p1", *base[2:]), ("trace", "p0", "the dog", "m", base[4]),
                ("trace", "p0", "the cat", "m2", base[4]), (*base[:4], {"a": 2, "b": [0.1, 0.2]})]
    assert len({item_key(*v) for v in variants} | {k}) == len(variants) + 1
    it = WorkItem("trace", "p0", 0, "the cat", "m", base[4], {"max_batch_tokens": 8})
    assert it.key == k  # options (memory budget …) are not part of the key


def test_read_inputs(tmp_path):
    j = tmp_path / "a.jsonl"
    j.write_text('{"id": 7, "text": "one"}\n\n{"id": "b", "text": "two"}\n')
    assert read_inputs(j) == [("7", "one"), ("b", "two")]
    t = tmp_path / "a.txt"
    t.write_text("# comment\nfirst line\n\nsecond line\n")
    assert read_inputs(t) == [("0", "first line"), ("1", "second line")]
    d = tmp_path / "dup.jsonl"
    d.write_text('{"id": 1, "text": "one"}\n{"id": 1, "text": "two"}\n')
    with pytest.raises(InputError, match="duplicate input ids"):
        read_inputs(d)
    with pytest.raises(InputError, match="does not exist"):
        read_inputs(tmp_path / "missing.txt")
    (tmp_path / "bad.jsonl").write_text('{"id": 1}\n')
    with pytest.raises(InputError, match="'text'"):
        read_inputs(tmp_path / "bad.jsonl")


def _row(key, value, model="m"):
    return {"key": key, "model": model, "index": 0, "value": value, "error": None}


def test_store_one_row_per_key_and_schema_checks(tmp_path):
    st = SweepStore(tmp_path / "s")
    st.create("a", {"x": 1})
    st.write_row(_row("k1", 1.0))
    st.write_row(_row("k2", 2.0), artefacts={"big.bin": b"\x00\x01"})
    st.write_row(_row("k2", 2.0))  # the same item again (a retry): same file
    assert sorted(st.table()["key"]) == ["k1", "k2"]
    assert st.artefact("k2", "big.bin") == b"\x00\x01"
    st.compact()
    assert [p.name.startswith("compact-") for p in st.shards()] == [True]
    # a crash between writing a compacted shard and deleting the single files: rows twice
    st.write_row(_row("k1", 1.0))
    assert len(st.shards()) == 2
    t = st.table()
    assert sorted(t["key"]) == ["k1", "k2"] and st.done_keys() == {"k1", "k2"}
    # another analysis / config / schema version: refused, nothing written
    with pytest.raises(StoreError, match="'a' sweep"):
        st.check("b", {"x": 1})
    with pytest.raises(StoreError, match="x differ"):
        st.check("a", {"x": 2})
    m = json.loads(st.manifest_path.read_text())
    m["schema_version"] = S.SCHEMA_VERSION + 1
    st.manifest_path.write_text(json.dumps(m))
    before = snapshot(tmp_path / "s")
    with pytest.raises(StoreError, match="schema version"):
        st.table()
    with pytest.raises(StoreError, match="schema version"):
        run_sweep("trace", INPUTS, MODELS[:1], tmp_path / "s", config=TRACE_CFG, progress=False)
    assert snapshot(tmp_path / "s") == before
    # a folder that is not a store
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(StoreError, match="not a sweep store"):
        SweepStore(tmp_path / "other").check("a", {})


def test_shard_of_another_schema_version_refused(tmp_path, monkeypatch):
    st = SweepStore(tmp_path / "s")
    st.create("a", {})
    monkeypatch.setattr(S, "SCHEMA_VERSION", S.SCHEMA_VERSION + 1)
    st.write_row(_row("k1", 1.0))  # written as version N+1
    monkeypatch.undo()
    with pytest.raises(StoreError, match="schema version"):
        st.table()


# ---------------------------------------------------------------------- trace
@pytest.fixture(scope="module")
def tiny_gpt2_model():
    return load_model("tiny-random-gpt2", device="cpu", progress=False)


def test_trace_rows_equal_direct_trace_and_resume(tmp_path, monkeypatch, tiny_gpt2_model):
    run = run_sweep("trace", INPUTS, MODELS[:1], tmp_path / "t", config=TRACE_CFG, progress=False)
    t = run.table
    assert run.n_run == 4 and len(t) == 4 and t["key"].is_unique
    assert "2 tokens" in t.loc[t["input_id"] == "p2", "error"].iloc[0]
    # a plain trace() of the same text gives the same row
    r = trace(tiny_gpt2_model, INPUTS[0][1], sizes=TRACE_CFG["sizes"], token_freq=None, keep_subgraphs=())
    ref = result_row(0, INPUTS[0][1], r)
    got = t[t["input_id"] == "p0"].iloc[0]
    for col in ("auc_tv_trace", "entropy", "n_edges"):
        assert got[col] == ref[col]
    np.testing.assert_array_equal(np.asarray(got["tv_trace"]), ref["tv_trace"])
    meta = json.loads(got["model_meta"])
    assert meta["name"] == "tiny-random-gpt2" and json.loads(got["config"])["seed"] == 0 and got["seed"] == 0
    assert json.loads(got["versions"])["torch"] == torch.__version__
    # resume: nothing recomputed
    calls = []
    real = D.trace
    monkeypatch.setattr(D, "trace", lambda *a, **k: calls.append(a[1]) or real(*a, **k))
    again = run_sweep("trace", INPUTS, MODELS[:1], tmp_path / "t", config=TRACE_CFG, progress=False)
    assert calls == [] and again.n_run == 0 and again.n_skipped == 4
    # the s-Trace aggregates read straight from the store
    res = DatasetResult.load(tmp_path / "t")
    assert res.n == 3 and res.tv_summary().shape[0] == 3


def test_killed_run_loses_only_the_item_in_flight(tmp_path, monkeypatch):
    """A run that dies on its third item keeps the first two; the rerun runs only the rest
    and the table equals that of a run that never died."""
    full = run_sweep("trace", INPUTS, MODELS, tmp_path / "full", config=TRACE_CFG, progress=False).table
    real = D.trace
    calls = []

    def dying(*a, **k):
        calls.append(a[1])
        if len(calls) == 3:
            raise KeyboardInterrupt  # the process is stopped mid-item
        return real(*a, **k)

    monkeypatch.setattr(D, "trace", dying)
    with pytest.raises(KeyboardInterrupt):
        run_sweep("trace", INPUTS, MODELS, tmp_path / "crash", config=TRACE_CFG, progress=False)
    assert len(SweepStore(tmp_path / "crash").done_keys()) == 2
    assert not [p for p in (tmp_path / "crash" / "rows").iterdir() if p.suffix != ".parquet"]  # no temp files
    monkeypatch.setattr(D, "trace", real)
    resumed = run_sweep("trace", INPUTS, MODELS, tmp_path / "crash", config=TRACE_CFG, progress=False)
    assert resumed.n_run == 6 and resumed.n_skipped == 2
    cols = ["key", "error", "auc_tv_trace", "entropy", "full_top1"]
    pd.testing.assert_frame_equal(resumed.table[cols], full[cols])


def test_trace_dataset_is_a_sweep(tmp_path, tiny_gpt2_model):
    texts = [t for _, t in INPUTS]
    res = D.trace_dataset(tiny_gpt2_model, texts, tmp_path / "d", sizes=TRACE_CFG["sizes"], token_freq=None,
                          progress=False)
    direct = run_sweep("trace", [(str(i), t) for i, t in enumerate(texts)], ["tiny-random-gpt2"], tmp_path / "s",
                       config=TRACE_CFG, progress=False).table
    assert list(res.table["key"]) == list(direct["key"])  # same items, same keys
    np.testing.assert_array_equal(res.table["auc_tv_trace"], direct["auc_tv_trace"])


# ---------------------------------------------------------------------- interactions
def test_interactions_rows_and_identical_models_share_everything(tmp_path, tiny_gpt2_model):
    # "tiny-random-gpt2-l2" is the same model (2 layers is the default) under another name
    models = ["tiny-random-gpt2", "tiny-random-gpt2-l2"]
    run = run_sweep("interactions", INPUTS, models, tmp_path / "i", config={"n": 4}, progress=False)
    t = run.table
    assert len(t) == 8 and t["error"].isna().all()
    a = as_adapter(tiny_gpt2_model)
    toks = Players.from_prompt(INPUTS[1][1], n=4).tokens_for(a)
    target = resolve_target(a, toks, None)
    v = subset_values(a, toks, target, fixed_baseline(a, "pad").vector)
    got = t[(t["model"] == models[0]) & (t["input_id"] == "p1")].iloc[0]
    np.testing.assert_allclose(np.asarray(got["v"]), v - v[0], rtol=0, atol=1e-12)
    np.testing.assert_allclose(np.asarray(got["i_and"]), sparsify(v - v[0], method="lp").i_and, atol=1e-9)
    s = run.summary()["aggregate"]
    assert s["separate"]["n_prompts"] == 4
    for k in ("overlap", "transfer_1to2", "transfer_2to1"):
        assert s["separate"]["mean"][k] == pytest.approx(1.0)


# ---------------------------------------------------------------------- migration
def test_migrate_earlier_layout(tmp_path, monkeypatch, tiny_gpt2_model):
    """A run in the layout of the earlier trace_dataset (config.json + parts/NNNNNN.parquet)
    reads back through the new store with the same aggregates, and a sweep over the same
    inputs resumes from it without tracing anything."""
    old = tmp_path / "old"
    (old / "parts").mkdir(parents=True)
    texts = [t for _, t in INPUTS if t != "x"]
    sizes = [0.05, 0.3, 1.0]
    meta = as_adapter(tiny_gpt2_model).meta
    (old / "config.json").write_text(json.dumps({"sizes": sizes, "mode": "l1", "conditions": ["trace", "inverse", "random"],
                                                 "seed": 0, "model": meta, "trace_kwargs": {"token_freq": None}}))
    for i, text in enumerate(texts):
        r = trace(tiny_gpt2_model, text, sizes=sizes, token_freq=None, keep_subgraphs=())
        pd.DataFrame([result_row(i, text, r)]).to_parquet(old / "parts" / f"{i:06d}.parquet", index=False)
    before = snapshot(old)
    assert main(["sweep", "migrate", str(old), "--out", str(tmp_path / "new")]) == 0
    assert snapshot(old) == before
    a, b = DatasetResult.load(old), DatasetResult.load(tmp_path / "new")
    assert b.n == a.n == 3
    pd.testing.assert_frame_equal(a.tv_summary(), b.tv_summary())
    assert a.entropy_auc_spearman() == b.entropy_auc_spearman()
    calls = []
    monkeypatch.setattr(D, "trace", lambda *x, **k: calls.append(x))
    run = run_sweep("trace", [(str(i), t) for i, t in enumerate(texts)], ["tiny-random-gpt2"], tmp_path / "new",
                    config={"sizes": [0.05, 0.3], "unigram": "none"}, progress=False)
    assert calls == [] and run.n_skipped == 3


# ---------------------------------------------------------------------- CLI and bad input
def test_cli_sweep_summary_and_report(tmp_path, capsys):
    f = tmp_path / "in.txt"
    f.write_text("\n".join(t for _, t in INPUTS))
    out = tmp_path / "store"
    argv = ["sweep", "trace", "--inputs", str(f), "--model", ",".join(MODELS), "--out", str(out),
            "--set", "sizes=[0.05,0.3]", "--set", "unigram=none", "--no-progress",
            "--json", str(tmp_path / "s.json"), "--report", str(tmp_path / "r.html")]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "8 items run, 0 resumed" in text and "cross_model" in text
    assert json.loads((tmp_path / "s.json").read_text())["items"] == 8
    assert (tmp_path / "r.html").read_text().count("<img") >= 2
    assert main(argv) == 0
    assert "0 items run, 8 resumed" in capsys.readouterr().out
    assert main(["sweep", "summary", str(out)]) == 0
    assert "rows: 8" in capsys.readouterr().out
    before = SweepStore(out).table()
    assert main(["sweep", "compact", str(out)]) == 0 and len(SweepStore(out).shards()) == 1
    pd.testing.assert_frame_equal(SweepStore(out).table(), before)


@pytest.mark.parametrize("case", ["analysis", "model", "duplicates", "setting", "address", "schema"])
def test_bad_input_clear_error_nothing_written(tmp_path, capsys, case):
    f = tmp_path / "in.txt"
    f.write_text("\n".join(t for _, t in INPUTS))
    out = tmp_path / "store"
    run_sweep("trace", INPUTS[:1], MODELS[:1], out, config=TRACE_CFG, progress=False)
    argv = {"analysis": ["sweep", "lensx", "--inputs", str(f), "--model", MODELS[0]],
            "model": ["sweep", "trace", "--inputs", str(f), "--model", "tiny-random-gpt2,no-such-model"],
            "duplicates": ["sweep", "trace", "--inputs", str(tmp_path / "dup.jsonl"), "--model", MODELS[0]],
            "setting": ["sweep", "trace", "--inputs", str(f), "--model", MODELS[0], "--set", "sizes=[2]"],
            "address": ["sweep", "trace", "--inputs", str(f), "--model", MODELS[0], "--runner", "ray",
                        "--address", "127.0.0.1:9", "--set", "sizes=[0.05,0.3]"],
            "schema": ["sweep", "trace", "--inputs", str(f), "--model", MODELS[0], "--set", "sizes=[0.05,0.3]"]}[case]
    message = {"analysis": "unknown analysis 'lensx'", "model": "unknown model", "duplicates": "duplicate input ids",
               "setting": "sizes", "address": "cannot reach the Ray cluster", "schema": "schema version"}[case]
    (tmp_path / "dup.jsonl").write_text('{"id": 1, "text": "a b"}\n{"id": 1, "text": "c d"}\n')
    if case == "schema":
        m = json.loads((out / "sweep.json").read_text())
        m["schema_version"] = 0
        (out / "sweep.json").write_text(json.dumps(m))
    before = snapshot(out)
    assert main(argv + ["--out", str(out), "--set", "unigram=none", "--no-progress"]) == 2
    assert message in capsys.readouterr().err
    assert snapshot(out) == before


def test_api_errors():
    with pytest.raises(UnknownAnalysisError, match="known: .*interactions.*trace"):
        run_sweep("nope", INPUTS, MODELS, "unused")
    with pytest.raises(UnknownModelError):
        run_sweep("trace", INPUTS, ["gpt-17"], "unused")
    with pytest.raises(RunnerError, match="host:port"):
        RayRunner("nonsense").start()
    assert not os.path.exists("unused")


def test_registering_an_analysis_is_one_call(tmp_path):
    """What the lens / circuit sweeps will do: register a work function, run it by name."""
    def work(adapter, item, state):
        row = {"n_chars": len(item.text), "d_model": adapter.cfg.d_model}
        return ItemOutput(row, {"text.txt": item.text.encode()})  # a row plus a large artefact

    register_analysis("test-length", work)
    run = run_sweep("test-length", INPUTS, MODELS[:1], tmp_path / "x", progress=False,
                    runner=LocalRunner())
    assert list(run.table["n_chars"]) == [len(t) for _, t in INPUTS]
    for key, (_, text) in zip(run.table["key"], INPUTS):
        assert run.store.artefact(key, "text.txt") == text.encode()
