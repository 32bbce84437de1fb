#!/bin/sh
# R part of the scferry test suite:
#   1. install the R package (R CMD INSTALL rbridge, default library);
#   2. run its testthat tests (fails on any failure; prints testthat's summary);
#   3. R CMD check of the built package without its tests and vignettes (run in 2 and 4) and without
#      network access (fails on an ERROR or WARNING; NOTEs are printed);
#   4. knit the R vignettes with rmarkdown to a temporary folder (fails on any error);
#   5. run the Python tutorial (vignettes/python_tutorial.py, which also exercises scferry.r).
# Needs R with the packages listed in rbridge/DESCRIPTION (Debian: r-cran-seurat,
# r-bioc-singlecellexperiment, r-cran-reticulate, r-cran-testthat, r-cran-rmarkdown,
# r-bioc-biocstyle, pandoc) and the scferry Python environment made by inst/setup.sh.
# Environment: SCFERRY_VENV (the environment, as for inst/setup.sh: default ~/.virtualenvs/r-scferry;
# set here explicitly so that the tests use this checkout's environment whatever the per-user
# set-up record says), SCFERRY_THREADS (torch threads, default 1), SCFERRY_ALLOW_NO_PYTHON=1 to run without
# the Python environment (tests needing it are then skipped, vignettes shown unevaluated),
# SCFERRY_SKIP_TUTORIAL=1 to skip step 5, SCFERRY_DOCS_OUT=<folder> to keep the knitted vignettes
# and the tutorial's figures there (default: a temporary folder, deleted at the end).
set -eu

repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"

if ! command -v Rscript >/dev/null 2>&1; then
    echo "test_r.sh: R (Rscript) is not installed" >&2
    exit 1
fi

export SCFERRY_REPO="$repo"
export SCFERRY_VENV="${SCFERRY_VENV:-$HOME/.virtualenvs/r-scferry}"
export SCFERRY_THREADS="${SCFERRY_THREADS:-1}"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-$SCFERRY_THREADS}"
tmp=$(mktemp -d "${TMPDIR:-/tmp}/scferry_test_r.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
docs="${SCFERRY_DOCS_OUT:-$tmp}"
start=$(date +%s)

echo "== R CMD INSTALL rbridge"
R CMD INSTALL --no-multiarch rbridge > "$tmp/install.log" 2>&1 || { cat "$tmp/install.log"; exit 1; }
tail -n 1 "$tmp/install.log"

echo "== Python environment"
py=$(Rscript -e 'ok <- scferry::ferry_python_ok(); if (isTRUE(ok)) cat(attr(ok, "python")) else { message(attr(ok, "reason")); cat("") }')
rec=$(env -u SCFERRY_VENV -u RETICULATE_PYTHON -u RETICULATE_PYTHON_ENV Rscript -e 'ok <- scferry::ferry_python_ok(); cat(attr(ok, "python"), "from", attr(ok, "source"))')
echo "(with nothing set, R would use $rec)"
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
skips <- unlist(lapply(res, function(t) vapply(Filter(function(e) inherits(e, "expectation_skip"), t$results),
                                                function(e) sub("^Reason: ", "", conditionMessage(e)), "")))
if (length(skips)) {
    tab <- sort(table(skips), decreasing = TRUE)
    cat(sprintf("testthat skips by reason (%d in all):\n", length(skips)))
    for (r in names(tab)) cat(sprintf("  %4d  %s\n", tab[[r]], r))
} else cat("testthat skips: none\n")
if (sum(df$failed) > 0 || any(df$error)) quit(status = 1)
'

echo "== R CMD check (tests and vignettes are run by the other steps)"
t0=$(date +%s)
mkdir -p "$tmp/check/repo/src/contrib"
: > "$tmp/check/repo/src/contrib/PACKAGES"
# An empty local repository: R CMD check's dependency-cycle check then needs no network.
echo "options(repos = c(CRAN = 'file://$tmp/check/repo'))" > "$tmp/check/Rprofile"
(cd "$tmp/check" && R CMD build --no-build-vignettes "$repo/rbridge" > build.log 2>&1) || { cat "$tmp/check/build.log"; exit 1; }
(cd "$tmp/check" && R_PROFILE_USER="$tmp/check/Rprofile" _R_CHECK_FORCE_SUGGESTS_=false \
    R CMD check --no-manual --no-tests --ignore-vignettes scferry_*.tar.gz > check.log 2>&1) || true
status=$(grep '^Status:' "$tmp/check/check.log" || echo "Status: no result")
echo "$status ($(( $(date +%s) - t0 )) s)"
case "$status" in
    *OK) ;;
    *ERROR*|*WARNING*|*"no result"*) cat "$tmp/check/check.log"; exit 1 ;;
    *) grep -A6 "\.\.\. NOTE" "$tmp/check/check.log" ;;
esac

echo "== vignettes (rmarkdown)"
for v in vignettes/*.Rmd; do
    t0=$(date +%s)
    Rscript -e 'args <- commandArgs(TRUE); rmarkdown::render(args[1], output_dir = args[2], intermediates_dir = args[2], quiet = TRUE)' "$v" "$docs/vignettes"
    echo "knitted $v in $(( $(date +%s) - t0 )) s"
done

if [ -n "$py" ] && [ "${SCFERRY_SKIP_TUTORIAL:-0}" != "1" ]; then
    echo "== vignettes/python_tutorial.py"
    t0=$(date +%s)
    "$py" vignettes/python_tutorial.py "$docs/tutorial" > "$tmp/tutorial.log" 2>&1 || { cat "$tmp/tutorial.log"; exit 1; }
    echo "ran vignettes/python_tutorial.py in $(( $(date +%s) - t0 )) s"
fi

echo "== R part passed in $(( $(date +%s) - start )) s"
