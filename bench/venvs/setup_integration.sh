#!/usr/bin/env bash
# Isolated virtual environments for the reference tools of bench/batch_integration/bench_integration.py
# (never dependencies of scferry itself):
#   bench/.venvs/harmony  harmonypy (Python 3.11)
#   bench/.venvs/scbean   scbean 0.5.6, the published DAVAE (Python 3.8, TensorFlow 2.4 CPU)
#
#   bash bench/venvs/setup_integration.sh              # create / verify both
#   bash bench/venvs/setup_integration.sh harmony      # only one of them
#   FORCE=1 bash bench/venvs/setup_integration.sh      # wipe and recreate
#
# Environment:
#   PYTHON311, PYTHON38   interpreters (default: pyenv's 3.11.7 and 3.8.18)
#
# scbean 0.5.6 pins tensorflow==2.4.0 and keras==2.3.1 and pulls python-igraph, louvain,
# fastlmmclib; it only runs on Python <= 3.8 with TensorFlow 2.4. So: tensorflow-cpu==2.4.0
# first (its own pins: numpy~=1.19.2, h5py~=2.10.0), then scbean with --no-deps, then what
# `import scbean` executes, by hand and held to TensorFlow's numpy/h5py:
#   scanpy/anndata/pandas/scikit-learn/matplotlib/seaborn (tools.utils, tools.plotting),
#   tensorflow-probability 0.12 (the release for TF 2.4) and fastlmmclib (model.visgp),
#   tqdm, psutil. keras 2.3.1 is not installed: scbean uses tf.keras only.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"  # bench/ (venvs live in bench/.venvs/)
PYTHON311="${PYTHON311:-/root/.pyenv/versions/3.11.7/bin/python3}"
PYTHON38="${PYTHON38:-/root/.pyenv/versions/3.8.18/bin/python3}"
WHICH="${1:-all}"

make_venv() {  # name interpreter
    local venv="$HERE/.venvs/$1"
    if [[ "${FORCE:-0}" == "1" && -d "$venv" ]]; then
        echo "[setup_integration] FORCE=1: removing $venv"
        rm -rf "$venv"
    fi
    if [[ ! -x "$venv/bin/python" ]]; then
        [[ -x "$2" ]] || { echo "[setup_integration] no interpreter $2 (set PYTHON311 / PYTHON38)" >&2; exit 1; }
        echo "[setup_integration] creating $venv with $2"
        mkdir -p "$HERE/.venvs"
        "$2" -m venv "$venv"
    fi
}

check_harmony() {
    "$HERE/.venvs/harmony/bin/python" -c "
import harmonypy, numpy, pandas, psutil
from importlib.metadata import version
print('harmonypy', version('harmonypy'), '| numpy', numpy.__version__, '| pandas', pandas.__version__)"
}

check_scbean() {
    "$HERE/.venvs/scbean/bin/python" -c "
import os; os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
import scbean.model.davae, tensorflow as tf, numpy, scanpy, psutil
from importlib.metadata import version
print('scbean', version('scbean'), '| tensorflow', tf.__version__, '| numpy', numpy.__version__,
      '| scanpy', scanpy.__version__, '| anndata', version('anndata'))"
}

setup_harmony() {
    if [[ -x "$HERE/.venvs/harmony/bin/python" ]] && check_harmony >/dev/null 2>&1 && [[ "${FORCE:-0}" != "1" ]]; then
        echo "[setup_integration] harmony venv ready:"; check_harmony; return
    fi
    make_venv harmony "$PYTHON311"
    local pip=("$HERE/.venvs/harmony/bin/python" -m pip install --no-input)
    "${pip[@]}" --upgrade pip
    "${pip[@]}" "harmonypy==2.1.0" numpy pandas psutil
    check_harmony
}

setup_scbean() {
    if [[ -x "$HERE/.venvs/scbean/bin/python" ]] && check_scbean >/dev/null 2>&1 && [[ "${FORCE:-0}" != "1" ]]; then
        echo "[setup_integration] scbean venv ready:"; check_scbean; return
    fi
    make_venv scbean "$PYTHON38"
    local pip=("$HERE/.venvs/scbean/bin/python" -m pip install --no-input)
    "${pip[@]}" --upgrade "pip<24.1" "setuptools<70" wheel
    # 1. TensorFlow first: its pins decide numpy and h5py for everything after it.
    "${pip[@]}" "tensorflow-cpu==2.4.0"
    local hold=("numpy==1.19.5" "h5py==2.10.0" "tensorflow-cpu==2.4.0" "six~=1.15.0"
                "typing-extensions~=3.7.4" "protobuf<3.20")
    # 2. scbean itself, none of its pins (tensorflow==2.4.0 would pull the GPU build, keras 2.3.1
    #    a second Keras).
    "${pip[@]}" --no-deps "scbean==0.5.6"
    # 3. what `import scbean` needs, held to TensorFlow's versions.
    "${pip[@]}" "${hold[@]}" "tensorflow-probability==0.12.2" "fastlmmclib==0.0.3" \
        "scanpy<1.9" "anndata<0.8" "pandas<1.4" "scikit-learn<1.1" "matplotlib<3.6" \
        "seaborn<0.13" "numba<0.54" "llvmlite<0.37" tqdm psutil
    check_scbean
}

case "$WHICH" in
    all) setup_harmony; setup_scbean ;;
    harmony) setup_harmony ;;
    scbean) setup_scbean ;;
    *) echo "usage: $0 [all|harmony|scbean]" >&2; exit 2 ;;
esac
echo "[setup_integration] done"
