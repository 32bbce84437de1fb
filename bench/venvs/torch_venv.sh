# Sourced by the set-up scripts of peers that need torch (setup_scvi.sh, setup_glue.sh), not run.
# torch_venv TAG VENV CHECK PACKAGE...: creates VENV with $PYTHON (default pyenv 3.11.7) unless it
# already runs the python snippet CHECK (FORCE=1 wipes it first); installs torch==2.13.0 FIRST and
# exactly pinned (the CPU wheel is on this machine's disk; a looser pin lets pip fetch GBs of CUDA
# wheels), then re-pins it beside PACKAGE...; ends by running CHECK.
torch_venv() {
    local tag="$1" venv="$2" check="$3"
    shift 3
    local python="${PYTHON:-/root/.pyenv/versions/3.11.7/bin/python3}"
    [[ -x "$python" ]] || python="$(command -v python3)"
    if [[ "${FORCE:-0}" == "1" && -d "$venv" ]]; then rm -rf "$venv"; fi
    if [[ -x "$venv/bin/python" ]] && "$venv/bin/python" -c "$check" >/dev/null 2>&1; then
        echo "[$tag] $venv already imports; nothing to do"; "$venv/bin/python" -c "$check"; return 0
    fi
    echo "[$tag] creating $venv with $python"
    mkdir -p "$(dirname "$venv")"
    "$python" -m venv "$venv" || return 1
    local pip=("$venv/bin/python" -m pip install --no-input)
    "${pip[@]}" --upgrade pip setuptools wheel || return 1
    "${pip[@]}" "torch==2.13.0" || return 1
    "${pip[@]}" "torch==2.13.0" "$@" || return 1
    "$venv/bin/python" -c "$check"
}
