#!/usr/bin/env bash
# Create the isolated virtual environment that runs the published reference
# implementation, uniport==1.3 (PyPI), for bench/uniport_reference/reference_uniport.py.
#
#   bash bench/venvs/setup_reference.sh            # create / verify
#   FORCE=1 bash bench/venvs/setup_reference.sh    # wipe and recreate
#
# Environment:
#   PYTHON   interpreter used to create the venv
#            (default: /root/.pyenv/versions/3.11.7/bin/python3, else python3)
#   VENV     venv path (default: bench/.venvs/uniport, git-ignored)
#
# Order and pins matter:
#   * torch==2.13.0 is installed FIRST and exactly pinned: the CPU wheel lies
#     on this machine's disk; a looser pin would let pip fetch GBs of CUDA.
#   * uniport 1.3 breaks on numpy>=2 and pandas>=3, so both are capped.
#   * uniport 1.3 touches np.warnings at import (removed in numpy 1.24); the
#     runner script shims it before importing, site-packages stays untouched.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"  # bench/ (venvs live in bench/.venvs/)
VENV="${VENV:-$HERE/.venvs/uniport}"
if [[ -z "${PYTHON:-}" ]]; then
    if [[ -x /root/.pyenv/versions/3.11.7/bin/python3 ]]; then
        PYTHON=/root/.pyenv/versions/3.11.7/bin/python3
    else
        PYTHON="$(command -v python3)"
    fi
fi

TORCH_PIN="torch==2.13.0"
UNIPORT_PIN="uniport==1.3"
NUMPY_PIN="numpy<2"
PANDAS_PIN="pandas<3"

# Same import the runner does (shim included).
check_import() {
    "$VENV/bin/python" - <<'EOF'
import warnings
import numpy
if not hasattr(numpy, "warnings"):
    numpy.warnings = warnings
import torch, uniport, psutil
from importlib.metadata import version
print("uniport", version("uniport"), "| torch", torch.__version__,
      "| numpy", numpy.__version__, "| pandas", __import__("pandas").__version__,
      "| scanpy", version("scanpy"))
EOF
}

if [[ "${FORCE:-0}" == "1" && -d "$VENV" ]]; then
    echo "[setup_reference] FORCE=1: removing $VENV"
    rm -rf "$VENV"
fi

if [[ -x "$VENV/bin/python" ]] && check_import >/dev/null 2>&1; then
    echo "[setup_reference] $VENV already imports uniport; nothing to do:"
    check_import
    exit 0
fi

echo "[setup_reference] creating $VENV with $PYTHON"
mkdir -p "$(dirname "$VENV")"
"$PYTHON" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip install --no-input)

"${PIP[@]}" --upgrade pip setuptools wheel
# 1. torch first, exact pin (CPU wheel from the local wheel dir).
"${PIP[@]}" "$TORCH_PIN"
# 2. uniport with its compatibility pins; torch re-pinned so the resolver
#    cannot swap it for a CUDA build.
"${PIP[@]}" "$UNIPORT_PIN" "$TORCH_PIN" "$NUMPY_PIN" "$PANDAS_PIN" psutil

echo "[setup_reference] verifying import"
check_import
echo "[setup_reference] done: $VENV"
