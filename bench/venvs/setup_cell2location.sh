#!/usr/bin/env bash
# Isolated venvs for the deconvolution study's anchors (bench/deconvolution/):
#   cell2location (PyPI cell2location; Kleshchevnikov et al., Nat Biotechnol 2022) in $C2L_VENV
#   Tangram       (PyPI tangram-sc;    Biancalani et al., Nat Methods 2021)       in $TG_VENV
#
#   bash bench/venvs/setup_cell2location.sh          # create / verify (idempotent)
#   FORCE=1 bash bench/venvs/setup_cell2location.sh  # wipe and recreate
#
# cell2location 0.1.5 imports pyro.infer.autoguide.utils.deep_getattr, gone in pyro-ppl 1.9.2: pinned 1.9.1.
# torch==2.13.0 CPU first, re-pinned on every later install (venvs/torch_venv.sh).
set -uo pipefail
BENCH="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"  # bench/: venvs live in bench/.venvs/, as every study's
C2L_VENV="${C2L_VENV:-$BENCH/.venvs/cell2location}"
TG_VENV="${TG_VENV:-$BENCH/.venvs/tangram}"
source "$BENCH/venvs/torch_venv.sh"

rc=0
torch_venv setup "$C2L_VENV" "import torch, cell2location, scvi; from importlib.metadata import version; print('cell2location', version('cell2location'), '| scvi-tools', version('scvi-tools'), '| torch', torch.__version__)" \
    cell2location "pyro-ppl==1.9.1" psutil || { echo "[setup] cell2location venv FAILED"; rc=1; }
torch_venv setup "$TG_VENV" "import torch, tangram; from importlib.metadata import version; print('tangram-sc', version('tangram-sc'), '| torch', torch.__version__)" \
    tangram-sc psutil || { echo "[setup] tangram venv FAILED"; rc=1; }
exit $rc
