"""Every result type of the toolkit on the shared result layer: it saves and loads back to the
same data, loads through ``load_result`` by its kind, displays itself as HTML in a notebook,
and an old file (written before results carried a kind and a format version) is refused
with a clear error."""

from __future__ import annotations

import json

import pytest
import torch

from _engine_support import single_thread  # noqa: F401  (autouse fixture)
from interp_toolkit.core import Result, ResultFormatError, dumps, load_result
from interp_toolkit.core.result import registered_kinds
from interp_toolkit.models import tiny_model

PROMPT = torch.tensor([3, 9, 14, 2, 7, 11])
CORRUPT = torch.tensor([3, 9, 20, 2, 7, 11])


@pytest.fixture(scope="module")
def gpt2():
    return tiny_model("gpt2", n_layers=2, n_heads=2, init_std=0.3)


def _trace(model):
    from interp_toolkit.strace import trace

    return trace(model, PROMPT, sizes=(0.05, 0.2, 0.5), keep_subgraphs=(0.2,), token_freq=None)


def _dataset(model):
    from interp_toolkit.strace.dataset import trace_dataset

    return trace_dataset(model, ["the cat sat on", "a b c d e f", "x", "hello world again"], None,
                         sizes=(0.05, 0.5), progress=False, token_freq=None)


def _greedy(model):
    from interp_toolkit.strace.greedy import greedy_nodes

    return greedy_nodes(model, PROMPT, max_steps=2)


def _interactions(_model, n_results: int = 1):
    from interp_toolkit.interactions import PlayerTokens, compute_interactions

    players = PlayerTokens.from_positions(list(range(5, 17)), [[1], [2, 3], [5], [7]])
    out = [compute_interactions(tiny_model("llama", init_std=0.3, dtype=torch.float64, seed=s), None,
                                players=players, baseline="zero", target=4) for s in range(n_results)]
    return out[0] if n_results == 1 else out


def _comparison(model):
    from interp_toolkit.interactions import Comparison, analysis

    a, b = _interactions(model, 2)
    return Comparison(results=[a, b], sharing=analysis.sharing(a, b), settings={"tau_rel": analysis.TAU_REL})


def _attribution(model):
    from interp_toolkit.attribution import LogitDiff, attribution_patching

    return attribution_patching(model, PROMPT, CORRUPT, LogitDiff(3, 7), sites=("z", "mlp_out", "pattern"))


def _patching(model):
    from interp_toolkit.adapter import as_adapter
    from interp_toolkit.patching import LogitDiff, activation_patch

    _, cache = as_adapter(model).run_with_cache(PROMPT[None])
    return activation_patch(model, CORRUPT[None], cache, LogitDiff(3, 7), "z", ("layer", "head"))


def _circuit(_model):
    from interp_toolkit.circuits import PromptBatch, TaskData, discover_circuit

    model = tiny_model("gpt2", backend="hooked", n_layers=2, n_heads=2, init_std=0.3)  # edge patching: hooked
    b = PromptBatch(PROMPT[None], CORRUPT[None], torch.tensor([[3]]), torch.tensor([[7]]), [0])
    return discover_circuit(model, TaskData("toy", [b], 1.0, {0: 1.0}, [0], [], 0), ["eap", "random"],
                            sizes=[0.1, 1.0], n_attention_heads=1)


def _lens(model):
    from interp_toolkit.lens import quick_lens

    return quick_lens(model, "the cat sat on the mat")


def _frequency(model):
    from interp_toolkit.lens.frequency import from_corpus

    return from_corpus(model, ["the cat sat on the mat and ate a hat"] * 3, "toy")


def _depth(model):
    from interp_toolkit.lens import run_lens
    from interp_toolkit.lens.metrics import DepthMetrics

    r = run_lens(model, ["the cat sat", "on a mat", "hello there", "one two"], positions="last")
    return DepthMetrics.from_lens(r, _frequency(model), groups=["a", "b"] * 2)


def _case(model):
    from interp_toolkit.lens.cases import run_case

    return run_case(model, "pos", n_per_class=6, progress=False)


def _decision_patching(model):
    from interp_toolkit.lens.patching import decision_patching

    return decision_patching(model, ["the cat sat", "on a mat!!", "hello there", "one two 345"], progress=False)


def _pca(_model):
    from interp_toolkit.geometry import fit_pca

    return fit_pca(torch.randn(40, 6, generator=torch.Generator().manual_seed(0)).numpy(), 3)


def _geometry(model):
    from interp_toolkit.geometry import quick_geometry

    return quick_geometry(model, "the cat sat on the mat and ate a hat")


def _attention(model):
    from interp_toolkit.analyze import attention_patterns

    return attention_patterns(model, PROMPT)


def _analysis(model):
    from interp_toolkit.analyze import analyze

    return analyze(model, "the cat sat on the mat", sections=["attention", "lens"], progress=False)


BUILDERS = {"strace-trace": _trace, "strace-dataset": _dataset, "strace-greedy": _greedy,
            "interactions": _interactions, "interactions-comparison": _comparison, "attribution": _attribution,
            "patching": _patching, "circuit": _circuit, "lens": _lens, "lens_frequency": _frequency,
            "lens_depth": _depth, "lens_case": _case,
            "lens_decision_patching": _decision_patching, "geometry_pca": _pca, "geometry": _geometry,
            "analyze.attention": _attention, "analyze": _analysis}
HOOKED_ONLY = {"circuit"}


@pytest.fixture(scope="module", params=[pytest.param(k, marks=pytest.mark.hooked_only) if k in HOOKED_ONLY else k
                                        for k in BUILDERS])
def result(request, gpt2) -> Result:
    return BUILDERS[request.param](gpt2)


def test_every_result_kind_of_the_package_is_covered():
    import importlib
    import pkgutil

    import interp_toolkit

    for mod in pkgutil.walk_packages(interp_toolkit.__path__, "interp_toolkit."):
        importlib.import_module(mod.name)
    kinds = {k for k, cls in registered_kinds().items() if cls.__module__.startswith("interp_toolkit.")}
    assert kinds == set(BUILDERS)


def test_save_load_round_trip(result, tmp_path):
    path = result.save(tmp_path / "deep" / f"{result.kind}.json")
    doc = json.loads(path.read_text())
    assert doc["kind"] == result.kind and doc["format_version"] == type(result).format_version
    for back in (type(result).load(path), load_result(path)):
        assert type(back) is type(result)
        assert dumps(back.to_dict()) == dumps(result.to_dict())
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]  # no temporary left


def test_repr_html_and_summary(result):
    frag = result._repr_html_()
    assert frag.startswith('<div class="itk">') and "<style>" in frag
    assert frag.count("data:image/png;base64,") >= 1
    # the inlined circuitsvis and plotly bundles name XML namespaces (http://www.w3.org/...); they fetch nothing
    import re
    page = re.sub(r'<script data-bundle="[a-z]+">.*?</script>', "", frag, flags=re.S)
    assert "http://" not in page and "https://" not in page
    assert isinstance(result.summary(), str) and result.summary()
    for kind in result.plot_kinds:
        try:
            assert result.plot(kind).axes
        except ValueError as exc:  # a figure of data this result does not hold
            assert "subgraph" in str(exc)


def test_unversioned_file_is_refused_clearly(result, tmp_path):
    old = tmp_path / "old.json"
    old.write_text(dumps(result.to_dict()))  # the layout of files written before versioning
    with pytest.raises(ResultFormatError, match="format version 0"):
        type(result).load(old)
    doc = json.loads(result.save(tmp_path / "new.json").read_text())
    doc["format_version"] = type(result).format_version + 1
    old.write_text(json.dumps(doc))
    with pytest.raises(ResultFormatError, match=f"format version {type(result).format_version + 1}"):
        load_result(old)
