"""Plots, the offline HTML report and the CLI."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

from _engine_support import single_thread  # noqa: F401  (autouse fixture)
from interp_toolkit.models import tiny_model
from interp_toolkit.strace import plots, trace
from interp_toolkit.strace.dataset import trace_dataset
from interp_toolkit.strace.greedy import compare_with_strata, greedy_nodes
from interp_toolkit.strace.report import dataset_page

SIZES = (0.01, 0.05, 0.2, 0.5)


@pytest.fixture(scope="module")
def model():
    return tiny_model("gpt2", n_layers=2, n_heads=2, init_std=0.3)


@pytest.fixture(scope="module")
def result(model):
    return trace(model, "the cat sat on the mat", sizes=SIZES, keep_subgraphs=(0.05, 0.5), token_freq=None)


@pytest.fixture(scope="module")
def runs(model):
    texts = ["the cat sat on", "a b c d e f", "hello world again", "one two three four"]
    other = tiny_model("gpt2", n_layers=2, n_heads=2, init_std=0.3, seed=3)
    return [trace_dataset(m, texts, None, sizes=SIZES, progress=False, token_freq=None) for m in (model, other)]


def test_trace_plots(result):
    for kind in ("tv", "composition", "subgraph"):
        fig = result.plot(kind)
        assert isinstance(fig, Figure) and fig.axes
    fig = plots.plot_subgraph(result, 0.5)
    assert "s=0.5" in fig.axes[0].get_title()
    assert isinstance(plots.plot_unigram(result), Figure)
    with pytest.raises(ValueError, match="unknown plot"):
        result.plot("pie")


def test_dataset_plots(runs):
    a, b = runs
    for kind in ("tv", "composition", "entropy"):
        assert isinstance(a.plot(kind), Figure)
    assert isinstance(plots.plot_dataset_tv([a, b]), Figure)
    assert isinstance(plots.plot_cross_model(a, b), Figure)
    assert isinstance(plots.plot_unigram(a), Figure)


def test_greedy_plot(model):
    g = greedy_nodes(model, "the cat sat", max_steps=3)
    comp = compare_with_strata(model, "the cat sat", g, sizes=(0.1,))
    assert isinstance(g.plot(comparison=comp), Figure)


def _offline(text: str):
    assert "<script" not in text.lower()
    # no external resources: every src is an embedded image
    for src in re.findall(r'src="([^"]*)"', text):
        assert src.startswith("data:image/png;base64,")
    assert not re.search(r"(src|href)=\"(https?:)?//", text)


def test_trace_report_is_offline(tmp_path, result):
    path = result.write_html(tmp_path / "r.html")
    text = path.read_text()
    _offline(text)
    assert text.count("data:image/png;base64,") == 3
    assert "AUC-TV" in text and str(result.n_edges) in text


def test_dataset_report_is_offline(tmp_path, runs):
    text = dataset_page(runs, command="interp-toolkit trace-dataset x").write(tmp_path / "d.html").read_text()
    _offline(text)
    assert "Across models" in text and "interp-toolkit trace-dataset x" in text


def test_cli_trace(tmp_path, capsys):
    from interp_toolkit.cli import main

    out = tmp_path / "r.html"
    status = main(["trace", "hello there", "--model", "tiny-random-gpt2", "--sizes", "0.1,0.5",
                   "--out", str(out), "--json", str(tmp_path / "r.json"), "--threads", "1", "--no-unigram"])
    text = capsys.readouterr().out
    assert status == 0 and out.exists() and (tmp_path / "r.json").exists()
    assert "TV trace" in text and "time: graph" in text
    _offline(out.read_text())


def test_cli_errors(capsys):
    from interp_toolkit.cli import main

    assert main(["trace", "x", "--model", "tiny-random-gpt2"]) == 2
    assert "at least 2 tokens" in capsys.readouterr().err
    assert main(["trace", "hello", "--model", "tiny-random-gpt2", "--mode", "alti"]) == 2
    assert "unknown importance mode" in capsys.readouterr().err
    assert main(["trace", "hello", "--model", "tiny-random-gpt2", "--sizes", "0,0.5"]) == 2
    assert "(0, 1]" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["trace", "hello", "--sizes", "a,b"])


def test_cli_trace_dataset(tmp_path, capsys):
    from interp_toolkit.cli import main

    texts = tmp_path / "t.txt"
    texts.write_text("the cat sat\na b c d\nx\nhello world\n")
    args = ["trace-dataset", str(tmp_path / "run"), "--texts", str(texts), "--model", "tiny-random-gpt2",
            "--sizes", "0.1,0.5", "--conditions", "trace", "--threads", "1", "--no-unigram"]
    assert main(args + ["--out", str(tmp_path / "d.html"), "--json", str(tmp_path / "d.json")]) == 0
    out = capsys.readouterr().out
    assert "3 inputs traced (1 rejected)" in out
    from interp_toolkit.core import load_result

    assert load_result(tmp_path / "d.json").n == 3
    assert len(list((tmp_path / "run" / "rows").glob("*.parquet"))) == 4
    _offline((tmp_path / "d.html").read_text())
    assert main(args + ["--compare", str(tmp_path / "run")]) == 0
    assert '"rho": 1.0' in capsys.readouterr().out


def _benchmark(name: str):
    """A script of benchmarks/ imported as a module."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_summary_markdown_and_bench(runs, model):
    batched_speedup = _benchmark("strace_bench").batched_speedup
    results_markdown = _benchmark("strace_summary").results_markdown

    bench = batched_speedup(model, ["the cat sat on the mat"], sizes=SIZES)
    assert bench[0]["rows"] == 3 * (len(SIZES) + 1) and bench[0]["max_prob_diff"] < 1e-5
    md = results_markdown(list(runs), {"tiny": bench})
    assert "median TV" in md and "Across models" in md and "| tiny |" in md
