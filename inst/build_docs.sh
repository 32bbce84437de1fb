#!/usr/bin/env bash
# Build the documentation: docs/ -> docs/_build/html (open docs/_build/html/index.html).
# Any Sphinx warning fails the build (-W), after all warnings are listed (--keep-going).
# The API reference is generated from the docstrings, the R reference from rbridge/man/*.Rd (so R
# is needed), the R tutorials from vignettes/*.Rmd. Figures are committed PNGs made by
# docs/make_figures.py; the build trains nothing.
# Needs the environment of inst/setup.sh (its `docs` extra): ~/.virtualenvs/r-scferry or SCFERRY_VENV.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
venv="${SCFERRY_VENV:-$HOME/.virtualenvs/r-scferry}"
py="$venv/bin/python"
if ! "$py" -c "import sphinx, numpydoc, myst_parser, furo" 2>/dev/null; then
    echo "build_docs.sh: $py lacks the docs packages; run: $py -m pip install -e '$repo[docs]' (or bash inst/setup.sh --no-demo)" >&2
    exit 1
fi
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
t0=$(date +%s)
"$py" -m sphinx -W --keep-going -q -b html -d "$repo/docs/_build/doctrees" "$repo/docs" "$repo/docs/_build/html"
echo "docs built in $(( $(date +%s) - t0 )) s: $repo/docs/_build/html/index.html"
