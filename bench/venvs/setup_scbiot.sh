#!/usr/bin/env bash
# Isolated virtual environment for the published scBIOT (scbiot==1.2.1, PyPI), the reference of
# bench/refine/bench_refine.py (never a dependency of scferry):
#
#   bash bench/venvs/setup_scbiot.sh              # create / verify bench/.venvs/scbiot
#   FORCE=1 bash bench/venvs/setup_scbiot.sh      # wipe and recreate
#
# Environment:
#   PYTHON   interpreter (default: pyenv's 3.11.7)
#   VENV     venv path (default: bench/.venvs/scbiot, git-ignored)
#
# scbiot 1.2.1 declares Python >=3.12,<3.13 and torch<2.11, but its code runs on 3.11 with
# torch 2.13. So: torch==2.13.0 FIRST and exact (the CPU wheel is on disk; a looser pin fetches
# GBs of CUDA), then scbiot with --no-deps --ignore-requires-python, then its other requirements
# from its METADATA by hand, with its own caps (numpy>=2,<2.2, pandas<3, scipy<1.17, wrapt<2).
# No faiss extra: scbiot falls back to scikit-learn neighbours, as documented.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"  # bench/ (venvs live in bench/.venvs/)
VENV="${VENV:-$HERE/.venvs/scbiot}"
PYTHON="${PYTHON:-/root/.pyenv/versions/3.11.7/bin/python3}"

TORCH_PIN="torch==2.13.0"
SCBIOT_PIN="scbiot==1.2.1"
# scbiot 1.2.1's Requires-Dist (torch excepted), as published.
DEPS=("anndata>=0.10" "matplotlib>=3.8" "numpy>=2,<2.2" "pandas>=1.5,<3" "pot>=0.9.6.post1"
      "pyranges>=0.1.4" "scanpy>=1.11.4" "scikit-learn>=1.2" "scikit-misc>=0.5.2"
      "scipy>=1.12,<1.17" "seaborn>=0.13" "statsmodels>=0.14" "wrapt>=1.10.10,<2")

check_import() {
    "$VENV/bin/python" - <<'EOF'
import numpy, torch
import scbiot, scbiot.ot
from importlib.metadata import version
print("scbiot", version("scbiot"), "| torch", torch.__version__, "| numpy", numpy.__version__,
      "| pandas", version("pandas"), "| pot", version("pot"), "| scikit-learn", version("scikit-learn"))
EOF
}

if [[ "${FORCE:-0}" == "1" && -d "$VENV" ]]; then
    echo "[setup_scbiot] FORCE=1: removing $VENV"
    rm -rf "$VENV"
fi

if [[ -x "$VENV/bin/python" ]] && check_import >/dev/null 2>&1; then
    echo "[setup_scbiot] $VENV already imports scbiot; nothing to do:"
    check_import
    exit 0
fi

[[ -x "$PYTHON" ]] || { echo "[setup_scbiot] no interpreter $PYTHON (set PYTHON)" >&2; exit 1; }
echo "[setup_scbiot] creating $VENV with $PYTHON"
mkdir -p "$(dirname "$VENV")"
"$PYTHON" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip install --no-input)

"${PIP[@]}" --upgrade pip setuptools wheel
# 1. torch first, exact pin.
"${PIP[@]}" "$TORCH_PIN"
# 2. scbiot alone: its Requires-Python and torch cap do not hold on this machine.
"${PIP[@]}" --no-deps --ignore-requires-python "$SCBIOT_PIN"
# 3. the rest of its requirements; torch re-pinned so the resolver cannot swap it.
"${PIP[@]}" "$TORCH_PIN" "${DEPS[@]}"

echo "[setup_scbiot] verifying import"
check_import
echo "[setup_scbiot] done: $VENV"
