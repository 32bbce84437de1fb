#!/bin/sh
# R part of the scferry test suite:
#   1. install the R package (R CMD INSTALL rbridge, default library);
#   2. run its testthat tests (fails on any failure; prints testthat's summary);
#   3. knit the R vignettes with rmarkdown to a temporary folder (fails on any error);
#   4. run the Python tutorial (vignettes/python_tutorial.py, which also exercises scferry.r).
# Needs R with the packages listed in rbridge/DESCRIPTION (Debian: r-cran-seurat,
# r-bioc-singlecellexperiment, r-cran-reticulate, r-cran-testthat, r-cran-rmarkdown,
# r-bioc-biocstyle, pandoc) and the scferry Python environment (scferry::ferry_setup(), or the
# virtualenv ~/.virtualenvs/r-scferry with `pip install -e '.[r]'`).
# Environment: SCFERRY_THREADS (torch threads, default 1), SCFERRY_ALLOW_NO_PYTHON=1 to run without
# the Python environment (tests needing it are then skipped, vignettes shown unevaluated),
# SCFERRY_SKIP_TUTORIAL=1 to skip step 4.
set -eu

repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"

if ! command -v Rscript >/dev/null 2>&1; then
    echo "test_r.sh: R (Rscript) is not installed" >&2
    exit 1
fi

export SCFERRY_REPO="$repo"
export SCFERRY_THREADS="${SCFERRY_THREADS:-1}"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-$SCFERRY_THREADS}"
tmp=$(mktemp -d "${TMPDIR:-/tmp}/scferry_test_r.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
start=$(date +%s)

echo "== R CMD INSTALL rbridge"
R CMD INSTALL --no-multiarch rbridge > "$tmp/install.log" 2>&1 || { cat "$tmp/install.log"; exit 1; }
tail -n 1 "$tmp/install.log"

echo "== Python environment"
py=$(Rscript -e 'ok <- scferry::ferry_python_ok(); if (isTRUE(ok)) cat(attr(ok, "python")) else { message(attr(ok, "reason")); cat("") }')
if [ -z "$py" ]; then
    if [ "${SCFERRY_ALLOW_NO_PYTHON:-0}" != "1" ]; then
        echo "test_r.sh: the scferry Python environment is not usable (see above); set SCFERRY_ALLOW_NO_PYTHON=1 to run anyway" >&2
        exit 1
    fi
    echo "running WITHOUT the Python environment"
else
    echo "$py"
fi

echo "== testthat (rbridge/tests/testthat)"
Rscript -e '
suppressPackageStartupMessages(library(testthat))
res <- test_dir("rbridge/tests/testthat", package = "scferry", load_package = "installed",
                reporter = ProgressReporter$new(show_praise = FALSE, update_interval = Inf, min_time = Inf), stop_on_failure = FALSE)
df <- as.data.frame(res)
cat(sprintf("\ntestthat summary: %d tests (test_that blocks), %d expectations, %d failed, %d errors, %d skipped, %d warnings\n",
            nrow(df), sum(df$nb), sum(df$failed), sum(df$error), sum(df$skipped), sum(df$warning)))
if (sum(df$failed) > 0 || any(df$error)) quit(status = 1)
'

echo "== vignettes (rmarkdown)"
for v in vignettes/*.Rmd; do
    t0=$(date +%s)
    Rscript -e 'args <- commandArgs(TRUE); rmarkdown::render(args[1], output_dir = args[2], intermediates_dir = args[2], quiet = TRUE)' "$v" "$tmp/vignettes"
    echo "knitted $v in $(( $(date +%s) - t0 )) s"
done

if [ -n "$py" ] && [ "${SCFERRY_SKIP_TUTORIAL:-0}" != "1" ]; then
    echo "== vignettes/python_tutorial.py"
    t0=$(date +%s)
    "$py" vignettes/python_tutorial.py "$tmp/tutorial" > "$tmp/tutorial.log" 2>&1 || { cat "$tmp/tutorial.log"; exit 1; }
    echo "ran vignettes/python_tutorial.py in $(( $(date +%s) - t0 )) s"
fi

echo "== R part passed in $(( $(date +%s) - start )) s"
