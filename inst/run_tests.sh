#!/usr/bin/env bash
# The whole test suite: Python, then R, then the documentation build (warnings are errors).
# Makes sure the environment is installed first (same script as the README's set-up, without the
# demo), so a clean clone passes or fails honestly.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
venv="${SCFERRY_VENV:-$HOME/.virtualenvs/r-scferry}"
bash "$repo/inst/setup.sh" --no-demo
cd "$repo"
# The set-up's promise: a fresh R with nothing set finds the environment it prepared.
found=$(env -u RETICULATE_PYTHON -u RETICULATE_PYTHON_ENV -u SCFERRY_VENV \
    Rscript -e 'cat(attr(scferry::ferry_python_ok(), "python"))')
if [ "$(realpath -s "$found")" != "$(realpath -s "$venv/bin/python")" ]; then
    echo "run_tests.sh: R picks '$found' with nothing set; the set-up prepared '$venv/bin/python'" >&2
    exit 1
fi
echo "== Python tests (pytest, slow real-data tests included)"
# The quality tests run on the fixtures shipped in tests/data; the runs on the full public data
# (marker shared_data) find it through SCFERRY_SHARED_DATA or ../shared/data beside the checkout,
# and skip without it (fail under CI). The summary after pytest counts the skips by reason.
log=$(mktemp "${TMPDIR:-/tmp}/scferry_pytest.XXXXXX")
trap 'rm -f "$log"' EXIT
status=0
"$venv/bin/python" -m pytest tests -q -p no:cacheprovider -rsx 2>&1 | tee "$log" || status=$?
"$venv/bin/python" "$repo/inst/scripts/skip_summary.py" "$log"
[ "$status" -eq 0 ] || exit "$status"
echo "== R tests and vignettes"
SCFERRY_VENV="$venv" bash "$repo/inst/test_r.sh"
echo "== documentation (Sphinx, warnings are errors)"
SCFERRY_VENV="$venv" bash "$repo/inst/build_docs.sh"
