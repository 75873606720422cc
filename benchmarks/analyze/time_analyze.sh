#!/usr/bin/env bash
# Wall-clock time of `interp-toolkit analyze` end to end (model load included) on a 20-token
# prompt, with the report and JSON written to runs/analyze/; per-section seconds are in the JSON.
#   flock /tmp/itk-real.lock benchmarks/analyze/time_analyze.sh [--threads 2] [--model smollm2-135m]
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
PROMPT=${PROMPT:-"The Eiffel Tower is a famous iron landmark that stands in the centre of the French capital city of"}
mkdir -p runs/analyze
date -u
/usr/bin/time -v "$PY" -c "from interp_toolkit.cli import main; import sys; sys.exit(main())" \
    analyze "$PROMPT" --out runs/analyze/report.html --json runs/analyze/report.json "$@"
"$PY" - <<'PY'
import interp_toolkit.analyze  # noqa: F401  (registers the result kinds)
from interp_toolkit.core import load_result
rep = load_result("runs/analyze/report.json")
print("tokens:", rep["attention"].patterns.shape[-1], "| threads:", rep.meta["torch_threads"])
print("section seconds:", {k: round(v, 1) for k, v in rep.timings.items()})
PY
