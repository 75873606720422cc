"""The base of every result object: dict round trip, versioned atomic files, figures, HTML.

A result is a dataclass that subclasses ``Result`` and names its ``kind``::

    @register_result
    @dataclass
    class LensResult(Result):
        kind = "lens"
        format_version = 1
        logits: np.ndarray
        def _plots(self): return {"heatmap": plots.heatmap}

It gets ``to_dict``/``from_dict`` (override for non-JSON fields), ``save``/``load`` (JSON with
``kind`` and ``format_version``, written atomically), ``plot(kind)``, ``summary()``,
``report()`` (a ``Page``), ``to_html()`` and ``_repr_html_()`` for Jupyter and Colab.
"""

from __future__ import annotations

import dataclasses
import html
import json
from pathlib import Path
from typing import Any, Callable, ClassVar

from .._version import __version__
from .report import Page, img_tag, meta_line
from .serialize import atomic_write_text, dumps, to_jsonable

_REGISTRY: dict[str, type["Result"]] = {}


class ResultFormatError(ValueError):
    """A saved result that this version cannot read (other kind, other format version)."""


def register_result(cls: type["Result"]) -> type["Result"]:
    """Class decorator: make ``load_result`` know ``cls.kind``."""
    if not getattr(cls, "kind", None) or cls.kind == Result.kind:
        raise TypeError(f"{cls.__name__} must set a class attribute `kind`")
    other = _REGISTRY.get(cls.kind)
    if other is not None and other.__qualname__ != cls.__qualname__:
        raise TypeError(f"result kind {cls.kind!r} is taken by {other.__qualname__}")
    _REGISTRY[cls.kind] = cls
    return cls


def registered_kinds() -> dict[str, type["Result"]]:
    """Result kinds known so far (those whose modules were imported)."""
    return dict(_REGISTRY)


def _read(path) -> dict:
    path = Path(path)
    return _parse(path.read_text(), path)


def _parse(text: str, path) -> dict:
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ResultFormatError(f"{path} is not a saved result (not JSON: {exc})") from None
    if not isinstance(doc, dict) or "kind" not in doc or "format_version" not in doc or "data" not in doc:
        raise ResultFormatError(f"{path} was written before results carried a kind and format version "
                                f"(format version 0); re-run the analysis to write it again")
    return doc


def load_result(path) -> "Result":
    """Load any saved result; its class is found from the ``kind`` in the file."""
    return _from_any_document(_read(path), path)


def loads_result(text: str, where: str = "<text>") -> "Result":
    """``load_result`` from the JSON text ``Result.to_json`` wrote (e.g. a stored artefact)."""
    return _from_any_document(_parse(text, where), where)


def _from_any_document(doc: dict, path) -> "Result":
    cls = _REGISTRY.get(doc["kind"])
    if cls is None:
        raise ResultFormatError(f"{path}: unknown result kind {doc['kind']!r}; known: {sorted(_REGISTRY)} "
                                f"(import the analysis module first)")
    return cls._from_document(doc, path)


class Result:
    """Base class of result dataclasses (see the module docstring)."""

    kind: ClassVar[str] = "result"
    format_version: ClassVar[int] = 1
    title: ClassVar[str] = "Result"

    # ------------------------------------------------------------------ dict / file
    def to_dict(self) -> dict:
        """JSON-safe dict of the dataclass fields (override for fields that need care)."""
        return to_jsonable({f.name: getattr(self, f.name) for f in dataclasses.fields(self)})

    @classmethod
    def from_dict(cls, d: dict):
        """Inverse of ``to_dict`` (override where ``to_dict`` is)."""
        return cls(**d)

    def to_json(self) -> str:
        """The saved form: ``{"kind", "format_version", "toolkit_version", "data"}`` as JSON."""
        doc = {"kind": self.kind, "format_version": self.format_version, "toolkit_version": __version__,
               "data": self.to_dict()}
        return dumps(doc)

    def save(self, path) -> Path:
        """Write ``to_json()`` to ``path`` atomically."""
        return atomic_write_text(path, self.to_json())

    @classmethod
    def load(cls, path):
        """Read a file written by ``save`` of this class; other kinds or versions are refused."""
        return cls._from_document(_read(path), path)

    @classmethod
    def _from_document(cls, doc: dict, path) -> "Result":
        if doc["kind"] != cls.kind:
            raise ResultFormatError(f"{path} holds a {doc['kind']!r} result, not {cls.kind!r}")
        if doc["format_version"] != cls.format_version:
            raise ResultFormatError(
                f"{path} is a {cls.kind!r} result in format version {doc['format_version']}; this version of "
                f"interp_toolkit reads format version {cls.format_version} (written by toolkit "
                f"{doc.get('toolkit_version', '?')}); re-run the analysis")
        return cls.from_dict(doc["data"])

    # ------------------------------------------------------------------ figures
    def _plots(self) -> dict[str, Callable[..., Any]]:
        """Figure functions by name; each takes the result (and keywords) and returns a Figure."""
        return {}

    @property
    def plot_kinds(self) -> list[str]:
        return list(self._plots())

    def plot(self, kind: str | None = None, **kwargs):
        """Figure of the given kind (default: the first one); ``plot_kinds`` lists them."""
        plots = self._plots()
        if not plots:
            raise ValueError(f"{type(self).__name__} has no figures")
        if kind is None:
            kind = next(iter(plots))
        if kind not in plots:
            raise ValueError(f"unknown plot kind {kind!r} for {type(self).__name__}; choose from {list(plots)}")
        return plots[kind](self, **kwargs)

    # ------------------------------------------------------------------ text / HTML
    def summary(self) -> str:
        """A few lines for the terminal."""
        return repr(self)

    def report(self) -> Page:
        """The result as a ``Page``: summary, every figure, metadata. Override for richer pages."""
        page = Page(self.title)
        page.section("Summary", f"<pre>{html.escape(self.summary())}</pre>")
        figs = []
        for name in self._plots():
            try:
                figs.append(img_tag(self.plot(name), name))
            except ValueError:
                continue
        if figs:
            page.section("Figures", *figs)
        meta = getattr(self, "meta", None)
        if isinstance(meta, dict) and meta:
            page.add(meta_line(meta))
        return page

    def to_html(self) -> str:
        """A whole offline HTML document."""
        return self.report().render()

    def write_html(self, path) -> Path:
        """Write ``to_html()`` atomically."""
        return self.report().write(path)

    def _repr_html_(self) -> str:
        return self.report().fragment()
