"""A notebook exported to one HTML file that works offline (nbconvert's ``lab`` template).

nbconvert's templates load require.js, MathJax and mermaid from CDNs; a notebook whose
outputs are the toolkit's results needs none of them (their HTML carries its scripts and
styles inline), so the exported page is self-contained without them.
"""

from __future__ import annotations

from pathlib import Path

from .serialize import atomic_write_text

_OFFLINE_TEMPLATE = """{%- extends 'lab/index.html.j2' -%}
{%- block html_head_js_requirejs -%}{%- endblock html_head_js_requirejs -%}
{%- block html_head_js_mathjax -%}{%- endblock html_head_js_mathjax -%}
{%- block html_head_js_mermaidjs -%}{%- endblock html_head_js_mermaidjs -%}
"""


def notebook_html(notebook) -> str:
    """The notebook (a path or an ``nbformat`` node, with its outputs) as an offline HTML page."""
    import nbformat
    from jinja2 import DictLoader
    from nbconvert import HTMLExporter

    nb = nbformat.read(str(notebook), as_version=4) if isinstance(notebook, (str, Path)) else notebook
    exporter = HTMLExporter(extra_loaders=[DictLoader({"itk_offline.html.j2": _OFFLINE_TEMPLATE})],
                            template_file="itk_offline.html.j2")
    body, _ = exporter.from_notebook_node(nb)
    return body


def write_notebook_html(notebook, path) -> Path:
    """Write ``notebook_html(notebook)`` atomically."""
    return atomic_write_text(path, notebook_html(notebook))
