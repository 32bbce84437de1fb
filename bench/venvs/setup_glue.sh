#!/usr/bin/env bash
# Isolated venv for the GLUE reference of the diagonal study (Cao & Gao, Nat Biotechnol 2022):
#   $GLUE_VENV (default bench/.venvs/scglue): scglue 0.4.1, scanpy, scikit-misc (seurat_v3 HVGs)
#
#   bash bench/venvs/setup_glue.sh          # create / verify (idempotent)
#   FORCE=1 bash bench/venvs/setup_glue.sh  # wipe and recreate
#
# torch==2.13.0 CPU first (venvs/torch_venv.sh); numpy < 2 as in the package's env. Never a
# dependency of scferry.
set -uo pipefail
BENCH="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$BENCH/venvs/torch_venv.sh"
CHECK="import torch, scglue, scanpy, skmisc; from importlib.metadata import version; print('scglue', version('scglue'), '| torch', torch.__version__)"
torch_venv setup_glue "${GLUE_VENV:-$BENCH/.venvs/scglue}" "$CHECK" "scglue==0.4.1" "numpy<2" scikit-misc
