#!/usr/bin/env bash
# Isolated venv for the GLUE reference of the diagonal study (Cao & Gao, Nat Biotechnol 2022):
#   $GLUE_VENV (default bench/.venvs/scglue): scglue 0.4.1, scanpy, scikit-misc (seurat_v3 HVGs)
#
#   bash bench/venvs/setup_glue.sh          # create / verify (idempotent)
#   FORCE=1 bash bench/venvs/setup_glue.sh  # wipe and recreate
#
# torch==2.13.0 is installed FIRST and exactly pinned (the CPU wheel is on this machine's disk; a
# looser pin lets pip fetch GBs of CUDA wheels) and re-pinned on the later install; numpy < 2 as
# in the package's env. Never a dependency of scferry.
set -uo pipefail
PYTHON="${PYTHON:-/root/.pyenv/versions/3.11.7/bin/python3}"
[[ -x "$PYTHON" ]] || PYTHON="$(command -v python3)"
BENCH="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
GLUE_VENV="${GLUE_VENV:-$BENCH/.venvs/scglue}"
TORCH_PIN="torch==2.13.0"
CHECK="import torch, scglue, scanpy, skmisc; from importlib.metadata import version; print('scglue', version('scglue'), '| torch', torch.__version__)"

if [[ "${FORCE:-0}" == "1" && -d "$GLUE_VENV" ]]; then rm -rf "$GLUE_VENV"; fi
if [[ -x "$GLUE_VENV/bin/python" ]] && "$GLUE_VENV/bin/python" -c "$CHECK" >/dev/null 2>&1; then
    echo "[setup_glue] $GLUE_VENV already imports; nothing to do"; "$GLUE_VENV/bin/python" -c "$CHECK"; exit 0
fi
echo "[setup_glue] creating $GLUE_VENV with $PYTHON"
mkdir -p "$(dirname "$GLUE_VENV")"
"$PYTHON" -m venv "$GLUE_VENV" || exit 1
pip=("$GLUE_VENV/bin/python" -m pip install --no-input)
"${pip[@]}" --upgrade pip setuptools wheel || exit 1
"${pip[@]}" "$TORCH_PIN" || exit 1
"${pip[@]}" "$TORCH_PIN" "scglue==0.4.1" "numpy<2" scikit-misc || exit 1
"$GLUE_VENV/bin/python" -c "$CHECK"
