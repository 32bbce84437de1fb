#!/usr/bin/env bash
# The whole test suite, Python then R. Makes sure the environment is installed first (same
# script as the README's set-up, without the demo), so a clean clone passes or fails honestly.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
venv="${SCFERRY_VENV:-$HOME/.virtualenvs/r-scferry}"
bash "$repo/inst/setup.sh" --no-demo
cd "$repo"
echo "== Python tests (pytest, slow real-data tests included)"
"$venv/bin/python" -m pytest tests -q -p no:cacheprovider
echo "== R tests and vignettes"
bash "$repo/inst/test_r.sh"
