#!/usr/bin/env bash
# Isolated venvs for the deconvolution study's anchors (bench/deconvolution/):
#   cell2location (PyPI cell2location; Kleshchevnikov et al., Nat Biotechnol 2022) in $C2L_VENV
#   Tangram       (PyPI tangram-sc;    Biancalani et al., Nat Methods 2021)       in $TG_VENV
#
#   bash bench/venvs/setup_cell2location.sh          # create / verify (idempotent)
#   FORCE=1 bash bench/venvs/setup_cell2location.sh  # wipe and recreate
#
# cell2location 0.1.5 imports pyro.infer.autoguide.utils.deep_getattr, gone in pyro-ppl 1.9.2: pinned 1.9.1.
# torch==2.13.0 is installed FIRST and exactly pinned (the CPU wheel is on this machine's disk;
# a looser pin lets pip fetch GBs of CUDA wheels), and re-pinned on every later install.
set -uo pipefail
PYTHON="${PYTHON:-/root/.pyenv/versions/3.11.7/bin/python3}"
[[ -x "$PYTHON" ]] || PYTHON="$(command -v python3)"
BENCH="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"  # bench/: venvs live in bench/.venvs/, as every study's
C2L_VENV="${C2L_VENV:-$BENCH/.venvs/cell2location}"
TG_VENV="${TG_VENV:-$BENCH/.venvs/tangram}"
TORCH_PIN="torch==2.13.0"

make_venv() {  # venv, import check, packages...
    local venv="$1" check="$2"; shift 2
    if [[ "${FORCE:-0}" == "1" && -d "$venv" ]]; then rm -rf "$venv"; fi
    if [[ -x "$venv/bin/python" ]] && "$venv/bin/python" -c "$check" >/dev/null 2>&1; then
        echo "[setup] $venv already imports; nothing to do"; "$venv/bin/python" -c "$check"; return 0
    fi
    echo "[setup] creating $venv with $PYTHON"
    "$PYTHON" -m venv "$venv" || return 1
    local pip=("$venv/bin/python" -m pip install --no-input)
    "${pip[@]}" --upgrade pip setuptools wheel || return 1
    "${pip[@]}" "$TORCH_PIN" || return 1
    "${pip[@]}" "$TORCH_PIN" "$@" || return 1
    "$venv/bin/python" -c "$check"
}

rc=0
make_venv "$C2L_VENV" "import torch, cell2location, scvi; from importlib.metadata import version; print('cell2location', version('cell2location'), '| scvi-tools', version('scvi-tools'), '| torch', torch.__version__)" \
    cell2location "pyro-ppl==1.9.1" psutil || { echo "[setup] cell2location venv FAILED"; rc=1; }
make_venv "$TG_VENV" "import torch, tangram; from importlib.metadata import version; print('tangram-sc', version('tangram-sc'), '| torch', torch.__version__)" \
    tangram-sc psutil || { echo "[setup] tangram venv FAILED"; rc=1; }
exit $rc
