"""The shared result/report layer: JSON conversion, atomic files, versioned results, pages."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

import numpy as np
import pytest
import torch

from interp_toolkit.core import (Page, Result, ResultFormatError, atomic_write_text, dumps, html_table, load_result,
                                 new_figure, register_result, to_jsonable)


@register_result
@dataclass
class _Toy(Result):
    kind = "test-toy"
    format_version = 2
    title = "Toy"
    values: list[float]
    meta: dict = field(default_factory=dict)

    def _plots(self):
        return {"line": _line}

    def summary(self) -> str:
        return f"toy with {len(self.values)} values"


def _line(result, color="C0"):
    fig, ax = new_figure()
    ax.plot(result.values, color=color)
    return fig


def test_to_jsonable_handles_numpy_torch_nan_and_tuples():
    x = {1: (np.float64(0.1), np.arange(3)), "t": torch.tensor([1.5, float("nan")]), "n": float("inf")}
    out = to_jsonable(x)
    assert out == {"1": [0.1, [0, 1, 2]], "t": [1.5, None], "n": None}
    assert json.loads(dumps(x)) == out
    with pytest.raises(TypeError, match="cannot convert"):
        to_jsonable(object())


def test_float64_round_trip_is_exact(tmp_path):
    vals = list(np.random.default_rng(0).normal(size=50))
    path = _Toy(vals, meta={"seed": 0}).save(tmp_path / "deep" / "toy.json")
    back = _Toy.load(path)
    assert back.values == vals and back.meta == {"seed": 0}
    assert isinstance(load_result(path), _Toy)


def test_atomic_write_leaves_no_temporary_and_keeps_old_file_on_failure(tmp_path, monkeypatch):
    p = atomic_write_text(tmp_path / "a" / "f.txt", "old")
    assert p.read_text() == "old"

    import interp_toolkit.core.serialize as ser

    def boom(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(ser.os, "replace", boom)
    with pytest.raises(OSError):
        atomic_write_text(p, "new")
    assert p.read_text() == "old"
    assert sorted(x.name for x in p.parent.iterdir()) == ["f.txt"]


def test_load_refuses_other_versions_kinds_and_unversioned_files(tmp_path):
    path = _Toy([1.0]).save(tmp_path / "t.json")
    doc = json.loads(path.read_text())
    doc["format_version"] = 1
    path.write_text(json.dumps(doc))
    with pytest.raises(ResultFormatError, match="format version 1.*reads format version 2"):
        _Toy.load(path)
    doc["kind"] = "nope"
    path.write_text(json.dumps(doc))
    with pytest.raises(ResultFormatError, match="unknown result kind 'nope'"):
        load_result(path)
    with pytest.raises(ResultFormatError, match="not 'test-toy'"):
        _Toy.load(path)
    path.write_text(json.dumps({"values": [1.0]}))
    with pytest.raises(ResultFormatError, match="format version 0"):
        _Toy.load(path)


def test_plot_dispatch_and_html(tmp_path):
    toy = _Toy([1.0, 2.0, 0.5], meta={"model": "m"})
    assert toy.plot_kinds == ["line"]
    assert toy.plot("line", color="red").axes
    with pytest.raises(ValueError, match="choose from"):
        toy.plot("bar")
    frag = toy._repr_html_()
    assert frag.startswith('<div class="itk">') and "data:image/png;base64," in frag and "toy with 3" in frag
    doc = toy.to_html()
    assert doc.startswith("<!DOCTYPE html>") and "http" not in doc.replace("http-equiv", "")
    assert toy.write_html(tmp_path / "r.html").read_text() == doc


def test_register_result_rejects_missing_or_taken_kind():
    with pytest.raises(TypeError, match="must set"):
        @register_result
        @dataclass
        class _NoKind(Result):
            x: int = 0
    with pytest.raises(TypeError, match="taken"):
        @register_result
        @dataclass
        class _Other(Result):
            kind = "test-toy"


def test_page_sections_tables_and_once():
    page = Page("T").section("S", html_table(["a", "b"], [[1.23456, float("nan")], ["<x>", 1e-5]], left=[0]),
                             guide="read me")
    page.once("js", "<script>1</script>").once("js", "<script>2</script>")
    out = page.render()
    assert out.count("<script>") == 1 and "<script>1</script>" in out
    assert "1.235" in out and "–" in out and "&lt;x&gt;" in out and "1e-05" in out and "read me" in out
    assert math.isfinite(len(page.fragment()))


def test_circuitsvis_widget_inlines_bundle_once_and_checks_shapes():
    from interp_toolkit.core.widgets import BUNDLE_KEY, attention_heads, colored_tokens

    page = Page("w")
    a = attention_heads(page, ["a", "b", "c"], torch.rand(2, 3, 3).tril(), head_names=["L0H0", "L0H1"])
    b = colored_tokens(page, ["a", "b", "c"], [0.1, 0.5, 0.9])
    page.add(a, b)
    out = page.render()
    assert list(page.head) == [BUNDLE_KEY] and out.count('data-bundle="circuitsvis"') == 1
    assert "CircuitsVis.AttentionHeads" in a and '"attentionHeadNames": ["L0H0", "L0H1"]' in a
    assert "unpkg" not in out and "cdn.jsdelivr" not in out
    with pytest.raises(ValueError, match=r"\[head, 3, 3\]"):
        attention_heads(page, ["a", "b", "c"], torch.rand(2, 3, 2))
    with pytest.raises(ValueError, match="one value per token"):
        colored_tokens(page, ["a"], [1.0, 2.0])
