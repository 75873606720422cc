"""The lens as a sweep analysis: rows equal a direct ``run_lens``, the decision layer equals a
brute-force scan, bad settings are refused, and the CLI runs it."""

from __future__ import annotations

import numpy as np
import pytest

from _engine_support import single_thread  # noqa: F401  (autouse fixture)
from interp_toolkit.cli import main
from interp_toolkit.lens import run_lens
from interp_toolkit.lens.sweep import check_lens_config, decision_layer
from interp_toolkit.models import load_model
from interp_toolkit.sweeps import run_sweep

INPUTS = [("a", "the cat sat on the warm mat"), ("b", "one two three four")]


def test_decision_layer_matches_a_brute_force_scan():
    rng = np.random.default_rng(0)
    for _ in range(200):
        top1 = rng.integers(0, 3, size=6)
        final = int(rng.integers(0, 3))
        brute = next((l for l in range(6) if all(t == final for t in top1[l:])), 6)
        assert decision_layer(top1, final) == brute


def test_lens_rows_equal_direct_run_lens(tmp_path):
    run = run_sweep("lens", INPUTS, ["tiny-random-llama"], tmp_path / "s", config={"k": 3}, progress=False)
    t = run.table
    assert len(t) == 2 and t["error"].isna().all()
    model = load_model("tiny-random-llama")
    for input_id, text in INPUTS:
        r = run_lens(model, text, positions="last", k=3, progress=False)
        row = t[t["input_id"] == input_id].iloc[0]
        np.testing.assert_array_equal(np.asarray(row["top1"]), r.top_ids[0, :, 0, 0])
        np.testing.assert_allclose(np.asarray(row["kl"]), r.kl[0, :, 0], rtol=1e-6)
        assert row["final_top1"] == int(r.out_top_ids[0, 0, 0])
        assert row["decision_layer"] == decision_layer(r.top_ids[0, :, 0, 0], row["final_top1"])
    # the last layer's lens is the model's own output: KL 0 there
    assert all(abs(np.asarray(k)[-1]) < 1e-5 for k in t["kl"])


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="unknown lens sweep settings"):
        check_lens_config({"lens": "tuned"})
    with pytest.raises(ValueError, match="site must be one of"):
        check_lens_config({"site": "resid_x"})


def test_cli_sweep_lens(tmp_path, capsys):
    inputs = tmp_path / "in.jsonl"
    inputs.write_text("".join(f'{{"id": "{i}", "text": "{t}"}}\n' for i, t in INPUTS))
    assert main(["sweep", "lens", "--inputs", str(inputs), "--model", "tiny-random-gpt2",
                 "--out", str(tmp_path / "s")]) == 0
    out = capsys.readouterr().out
    assert "items: 2" in out and "errors: 0" in out and "decision_depth_mean" in out
