"""Circuit discovery as a sweep analysis: rows equal a direct ``discover_circuit`` on the same
task, rejected tasks become error rows, the summary's winners are the arg-max/arg-min of the
rows, the artefact reloads as the full result, and bad settings are refused."""

from __future__ import annotations

import numpy as np
import pytest
from _circuit_support import coin_examples
from _engine_support import single_thread  # noqa: F401  (autouse fixture)

from interp_toolkit.circuits import build_task, discover_circuit
from interp_toolkit.circuits import tasks as tasks_mod
from interp_toolkit.circuits.sweep import check_circuit_config, circuit_from_artefact, report_circuits
from interp_toolkit.sweeps import run_sweep
from interp_toolkit.sweeps.runners import load_adapter
from interp_toolkit.sweeps.store import SweepStore

pytestmark = pytest.mark.hooked_only
MODEL = "tiny-random-llama"
CONFIG = {"methods": ["eap", "exact", "greedy", "random"], "greedy_steps": 3, "n_prompts": 6, "min_accuracy": 0.05, "template_accuracy": 0.05,
          "sizes": [0.05, 0.2, 1.0], "seed": 3}


@pytest.fixture
def coin_task(monkeypatch):
    monkeypatch.setitem(tasks_mod.TASKS, "coin", coin_examples)


@pytest.fixture
def sweep(tmp_path, coin_task):
    inputs = [("coin", "coin"), ("typo", "coins"), ("gt", "greater-than")]
    return run_sweep("circuit", inputs, [MODEL], tmp_path / "store", config=CONFIG, progress=False)


def test_rows_equal_direct_discovery(sweep):
    t = sweep.table.set_index("input_id")
    row = t.loc["coin"]
    assert row["error"] is None or row["error"] != row["error"]  # None or NaN: no error
    adapter = load_adapter(MODEL, {})
    data = build_task(adapter, "coin", n_prompts=6, seed=3, min_accuracy=0.05, template_accuracy=0.05)
    res = discover_circuit(adapter, data, CONFIG["methods"], seed=3, sizes=CONFIG["sizes"], greedy_steps=3,
                           n_attention_heads=0)
    assert list(row["methods"]) == CONFIG["methods"]
    for i, m in enumerate(CONFIG["methods"]):
        np.testing.assert_allclose(row["f"][i], res.curves[m]["f"], rtol=1e-6, atol=1e-9)
        assert row["cpr"][i] == pytest.approx(res.curves[m]["cpr"], abs=1e-9)
        assert row["cmd"][i] == pytest.approx(res.curves[m]["cmd"], abs=1e-9)
    assert row["accuracy"] == pytest.approx(data.accuracy) and row["n_prompts"] == data.n_prompts
    # the full model keeps everything: f(100 %) = 1 for every method
    np.testing.assert_allclose([f[-1] for f in row["f"]], 1.0, atol=1e-6)


def test_rejected_tasks_are_error_rows(sweep):
    t = sweep.table.set_index("input_id")
    assert "unknown task 'coins'" in t.loc["typo", "error"]
    assert "TaskError" in t.loc["gt", "error"]  # a random model's tokenizer/answers: no template solved
    s = sweep.summary()["aggregate"] if "aggregate" in sweep.summary() else None
    assert s is not None and set(s["rejected"]) == {f"{MODEL}/typo", f"{MODEL}/gt"}


def test_summary_winners_and_artefact(sweep, tmp_path):
    agg = sweep.summary()["aggregate"]
    row = sweep.table.set_index("input_id").loc["coin"]
    per = agg[MODEL]["coin"]
    assert per["best_cpr"] == row["methods"][int(np.argmax(row["cpr"]))]
    assert per["best_cmd"] == row["methods"][int(np.argmin(row["cmd"]))]
    res = circuit_from_artefact(SweepStore(sweep.store.root).artefact(row["key"], "circuit.json"))
    assert res.methods == CONFIG["methods"] and res.meta["seed"] == 3
    for i, m in enumerate(res.methods):
        assert res.curves[m]["cpr"] == pytest.approx(row["cpr"][i])
    page = report_circuits(sweep.table, tmp_path / "r.html", command="interp-toolkit sweep circuit …").read_text()
    assert page.count("<img") == 1 and "Rejected inputs" in page and "unknown task" in page


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="unknown circuit sweep settings"):
        check_circuit_config({"method": "eap"})
    with pytest.raises(ValueError, match="unknown method"):
        check_circuit_config({"methods": "eap,magic"})
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        check_circuit_config({"sizes": [0.0, 0.5]})
    with pytest.raises(ValueError, match="ablation"):
        check_circuit_config({"ablation": "resample"})
    assert check_circuit_config({"methods": "eap, random"})["methods"] == ["eap", "random"]


def test_cli_sweep_circuit(tmp_path, capsys, coin_task):
    from interp_toolkit.cli import main

    inputs = tmp_path / "tasks.txt"
    inputs.write_text("coin\n")
    out = tmp_path / "s"
    args = ["sweep", "circuit", "--inputs", str(inputs), "--model", MODEL, "--out", str(out), "--no-progress",
            "--set", "methods=eap,random", "--set", "n_prompts=4", "--set", "min_accuracy=0.05",
            "--set", "template_accuracy=0.05", "--set", "sizes=[0.1,1.0]", "--report", str(tmp_path / "r.html")]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "1 items run" in text and "best_cpr" in text and (tmp_path / "r.html").exists()
    assert main(args) == 0  # resumes: nothing left to run
    assert "0 items run, 1 resumed" in capsys.readouterr().out
