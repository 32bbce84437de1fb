#!/usr/bin/env bash
# Isolated venv for the scvi-tools references of the batch-integration and paired studies
# (scVI, totalVI, MultiVI; Lopez et al. 2018, Gayoso et al. 2021, Ashuach et al. 2023) and Harmony:
#   $SCVI_VENV (default bench/.venvs/scvi): scvi-tools 1.4.2, harmonypy, scanpy, scikit-misc
#
#   bash bench/venvs/setup_scvi.sh          # create / verify (idempotent)
#   FORCE=1 bash bench/venvs/setup_scvi.sh  # wipe and recreate
#
# scvi-tools 1.5 needs Python 3.12: 1.4.2 is the release for Python 3.11. torch==2.13.0 is
# installed FIRST and exactly pinned (the CPU wheel is on this machine's disk; a looser pin lets
# pip fetch GBs of CUDA wheels) and re-pinned on the later install. scikit-misc gives scanpy's
# seurat_v3 HVG flavour, which the scvi-tools tutorials use.
set -uo pipefail
PYTHON="${PYTHON:-/root/.pyenv/versions/3.11.7/bin/python3}"
[[ -x "$PYTHON" ]] || PYTHON="$(command -v python3)"
BENCH="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SCVI_VENV="${SCVI_VENV:-$BENCH/.venvs/scvi}"
TORCH_PIN="torch==2.13.0"
CHECK="import torch, scvi, harmonypy, scanpy, skmisc; from importlib.metadata import version; print('scvi-tools', version('scvi-tools'), '| harmonypy', version('harmonypy'), '| torch', torch.__version__)"

if [[ "${FORCE:-0}" == "1" && -d "$SCVI_VENV" ]]; then rm -rf "$SCVI_VENV"; fi
if [[ -x "$SCVI_VENV/bin/python" ]] && "$SCVI_VENV/bin/python" -c "$CHECK" >/dev/null 2>&1; then
    echo "[setup_scvi] $SCVI_VENV already imports; nothing to do"; "$SCVI_VENV/bin/python" -c "$CHECK"; exit 0
fi
echo "[setup_scvi] creating $SCVI_VENV with $PYTHON"
mkdir -p "$(dirname "$SCVI_VENV")"
"$PYTHON" -m venv "$SCVI_VENV" || exit 1
pip=("$SCVI_VENV/bin/python" -m pip install --no-input)
"${pip[@]}" --upgrade pip setuptools wheel || exit 1
"${pip[@]}" "$TORCH_PIN" || exit 1
"${pip[@]}" "$TORCH_PIN" "scvi-tools==1.4.2" harmonypy scikit-misc psutil leidenalg igraph || exit 1
"$SCVI_VENV/bin/python" -c "$CHECK"
