#!/usr/bin/env bash
# One-command set-up on Debian bookworm (as root, or with sudo): Debian R packages, the Python
# environment (~/.virtualenvs/r-scferry, or the path in SCFERRY_VENV), the scferry Python package
# (editable) and the R package, then the demo job on the shipped data. The environment is recorded
# in R's per-user config folder, so the R package finds it with no variable to set.
#   bash inst/setup.sh            # install + run `scferry demo` (writes ./scferry_demo/)
#   bash inst/setup.sh --no-demo  # install only (used by inst/run_tests.sh)
# Re-running is cheap: installed pieces are kept.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
venv="${SCFERRY_VENV:-$HOME/.virtualenvs/r-scferry}"
run_demo=1
[ "${1:-}" = "--no-demo" ] && run_demo=0
sudo=""
[ "$(id -u)" -ne 0 ] && sudo="sudo"

apt_pkgs="r-base-core r-base-dev r-cran-seurat r-bioc-singlecellexperiment r-cran-reticulate
r-cran-testthat r-cran-knitr r-cran-rmarkdown r-bioc-biocstyle pandoc"
missing=$(for p in $apt_pkgs; do dpkg -s "$p" >/dev/null 2>&1 || echo "$p"; done)
if [ -n "$missing" ]; then
    echo "== apt: installing $(echo $missing | tr '\n' ' ')"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq $missing >/dev/null
fi

# Python >= 3.10 with a shared libpython (reticulate embeds it): pyenv's 3.11 here.
py="${SCFERRY_PYTHON:-}"
if [ -z "$py" ]; then
    for c in "$HOME/.pyenv/versions/3.11.7/bin/python3" "$(command -v python3.11 || true)" "$(command -v python3 || true)"; do
        [ -n "$c" ] && [ -x "$c" ] && py="$c" && break
    done
fi
if [ ! -x "$venv/bin/python" ]; then
    echo "== creating $venv with $py"
    "$py" -m venv "$venv"
fi
venv=$(cd "$venv" && pwd)  # the record below must be an absolute path
echo "== pip: scferry, its pinned dependencies (torch==2.13.0 CPU wheel, numpy<2 for reticulate 1.28) and the test and docs extras"
"$venv/bin/python" -m pip install -q --upgrade pip >/dev/null
"$venv/bin/python" -m pip install -q "torch==2.13.0"
"$venv/bin/python" -m pip install -q -e "$repo[r,test,docs]"  # with lightning-fabric (distributed training), which keeps this torch

echo "== R package scferry (rbridge/)"
log=$(mktemp)
R CMD INSTALL --no-multiarch "$repo/rbridge" >"$log" 2>&1 || { cat "$log"; exit 1; }
rm -f "$log"
# Record this checkout and environment for the R package (read by ferry_python_ok / ferry_setup;
# settings such as RETICULATE_PYTHON or SCFERRY_VENV still take precedence).
cfg=$(Rscript -e 'cat(tools::R_user_dir("scferry", "config"))')
mkdir -p "$cfg"
printf '%s\n' "$repo" > "$cfg/repo_path"
printf '%s\n' "$venv/bin/python" > "$cfg/python"
"$venv/bin/python" -c "import scferry, torch, numpy, lightning_fabric; print('scferry', scferry.__version__, '| torch', torch.__version__, '| numpy', numpy.__version__, '| lightning-fabric', lightning_fabric.__version__)"

if [ "$run_demo" = 1 ]; then
    echo "== scferry demo (PDAC scRNA + spatial, real data from inst/extdata)"
    cd "$repo"
    "$venv/bin/scferry" demo --out scferry_demo
fi
