#!/usr/bin/env bash
# Isolated venv for the scvi-tools references of the batch-integration and paired studies
# (scVI, totalVI, MultiVI; Lopez et al. 2018, Gayoso et al. 2021, Ashuach et al. 2023) and Harmony:
#   $SCVI_VENV (default bench/.venvs/scvi): scvi-tools 1.4.2, harmonypy, scanpy, scikit-misc
#
#   bash bench/venvs/setup_scvi.sh          # create / verify (idempotent)
#   FORCE=1 bash bench/venvs/setup_scvi.sh  # wipe and recreate
#
# scvi-tools 1.5 needs Python 3.12: 1.4.2 is the release for Python 3.11. torch==2.13.0 CPU first
# (venvs/torch_venv.sh). scikit-misc gives scanpy's seurat_v3 HVG flavour, which the scvi-tools
# tutorials use.
set -uo pipefail
BENCH="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$BENCH/venvs/torch_venv.sh"
CHECK="import torch, scvi, harmonypy, scanpy, skmisc; from importlib.metadata import version; print('scvi-tools', version('scvi-tools'), '| harmonypy', version('harmonypy'), '| torch', torch.__version__)"
torch_venv setup_scvi "${SCVI_VENV:-$BENCH/.venvs/scvi}" "$CHECK" \
    "scvi-tools==1.4.2" harmonypy scikit-misc psutil leidenalg igraph
