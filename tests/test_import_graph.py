"""The import graph of ``interp_toolkit`` has no circle.

Every ``import`` statement counts — at module level and inside functions (an import moved into
a function to dodge a circle is still a circle of the design). An edge goes from a module to
the module it names (``from .x import y`` → ``pkg.x``, or ``pkg.x.y`` when that is a module;
``from . import y`` → ``pkg.y`` when ``y`` is a module, else ``pkg``). The implicit import of
parent packages is not an edge (a package's ``__init__`` re-exporting its modules is normal).
"""

from __future__ import annotations

import ast
from pathlib import Path

import interp_toolkit

ROOT = Path(interp_toolkit.__file__).resolve().parent


def module_files(root: Path, package: str) -> dict[str, Path]:
    """``{dotted module name: file}`` of every module under ``root``."""
    out = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join([package, *parts])] = path
    return out


def import_graph(root: Path, package: str) -> dict[str, set[str]]:
    """``{module: modules of the package it imports}`` from the source (nothing is imported)."""
    files = module_files(root, package)
    graph: dict[str, set[str]] = {m: set() for m in files}
    for mod, path in files.items():
        is_pkg = path.name == "__init__.py"
        base = mod.split(".") if is_pkg else mod.split(".")[:-1]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    anchor = base[: len(base) - (node.level - 1)]
                    src = ".".join(anchor + ([node.module] if node.module else []))
                else:
                    src = node.module or ""
                for alias in node.names:
                    sub = f"{src}.{alias.name}"
                    targets.append(sub if sub in files else src)
            for t in targets:
                # the longest prefix that is a module of the package
                parts = t.split(".")
                while parts and ".".join(parts) not in files:
                    parts.pop()
                if parts and ".".join(parts) != mod:
                    graph[mod].add(".".join(parts))
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each sorted."""
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_package_import_graph_is_acyclic():
    graph = import_graph(ROOT, "interp_toolkit")
    assert len(graph) > 40 and sum(map(len, graph.values())) > 80  # the parser found the package
    assert cycles(graph) == []


def test_strace_layers():
    """metrics ← plots ← results ← trace ← dataset ← cli: no module imports one above it."""
    graph = import_graph(ROOT, "interp_toolkit")
    layers = ["metrics", "plots", "report", "results", "evaluate", "dataset", "cli"]
    for i, low in enumerate(layers):
        for high in layers[i + 1:]:
            assert f"interp_toolkit.strace.{high}" not in graph[f"interp_toolkit.strace.{low}"], (low, high)


def test_a_cycle_is_found(tmp_path):
    """The check can fail: a synthetic package with a circle through a function-level import."""
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("from .a import f\n")
    (pkg / "sub" / "a.py").write_text("from ..b import g\n\ndef f():\n    return g()\n")
    (pkg / "b.py").write_text("def g():\n    from .sub import c\n    return c.h()\n")
    (pkg / "sub" / "c.py").write_text("import pkg.sub.a\n\ndef h():\n    return 1\n")
    graph = import_graph(pkg, "pkg")
    assert graph["pkg.sub.a"] == {"pkg.b"} and graph["pkg.b"] == {"pkg.sub.c"}
    assert cycles(graph) == [["pkg.b", "pkg.sub.a", "pkg.sub.c"]]
    (pkg / "sub" / "c.py").write_text("def h():\n    return 1\n")
    assert cycles(import_graph(pkg, "pkg")) == []
