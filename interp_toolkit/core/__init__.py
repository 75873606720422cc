"""Shared layer under every analysis: JSON conversion and atomic files (``serialize``),
matplotlib figures without pyplot state (``figures``), offline HTML pages (``report``) and
the result base class (``result``). Nothing here knows about a model or an analysis."""

from .figures import new_figure
from .report import Page, fmt, html_table, img_tag, svg_tag
from .result import Result, ResultFormatError, load_result, loads_result, register_result
from .serialize import atomic_write_bytes, atomic_write_text, dumps, to_jsonable

__all__ = ["Result", "ResultFormatError", "load_result", "loads_result", "register_result", "Page", "fmt", "html_table",
           "img_tag", "svg_tag", "new_figure", "to_jsonable", "dumps", "atomic_write_text", "atomic_write_bytes"]
