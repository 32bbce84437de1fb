"""Round trips between R objects (.rds) and AnnData through scferry.r (rpy2 + anndata2ri).

Skipped with the reason when R, rpy2/anndata2ri or the R packages are not available.
"""
from __future__ import annotations

import importlib.util
import shutil

import numpy as np
import pandas as pd
import pytest

_missing = [m for m in ("rpy2", "anndata2ri") if importlib.util.find_spec(m) is None]
if _missing:
    pytest.skip(f"scferry.r needs {', '.join(_missing)} (pip install 'scferry[r]')", allow_module_level=True)
if shutil.which("R") is None:
    pytest.skip("R is not installed", allow_module_level=True)

try:
    import rpy2.robjects as ro
except Exception as e:  # rpy2 3.6 with R 4.2: undefined symbol R_ParentEnv
    pytest.skip(f"rpy2 does not load with this R: {e}", allow_module_level=True)

_have = ro.r(
    'function(p) vapply(p, requireNamespace, logical(1), quietly = TRUE)'
)(ro.StrVector(["SingleCellExperiment", "SeuratObject", "Seurat", "scferry"]))
_have = dict(zip(["sce", "seuratobject", "seurat", "scferry"], [bool(x) for x in _have]))
if not _have["sce"]:
    pytest.skip("R package SingleCellExperiment is not installed", allow_module_level=True)

from scferry import r as sfr  # noqa: E402

# Objects with every kind of metadata column, NA included, a sparse counts assay, a dense
# logcounts assay and a reduction.
_MAKE = r"""
function(dir) {
    suppressPackageStartupMessages({library(SingleCellExperiment)})
    set.seed(3)
    n <- 40; g <- 25
    counts <- Matrix::rsparsematrix(g, n, 0.3, rand.x = function(k) as.numeric(sample.int(20, k, TRUE)))
    dimnames(counts) <- list(paste0("gene", seq_len(g)), paste0("cell", seq_len(n)))
    logc <- as.matrix(log1p(counts))
    cd <- S4Vectors::DataFrame(
        lgl = rep(c(TRUE, FALSE, NA, TRUE), length.out = n),
        int = rep(c(1L, NA, 3L, 40L), length.out = n),
        chr = rep(c("a", NA, "b b", "c"), length.out = n),
        fac = factor(rep(c("x", "y", NA, "x"), length.out = n), levels = c("y", "x", "unused")),
        dbl = rep(c(0.5, NA, -2, 1e6), length.out = n),
        row.names = colnames(counts))
    sce <- SingleCellExperiment(assays = list(counts = counts, logcounts = logc), colData = cd)
    reducedDim(sce, "PCA") <- matrix(rnorm(n * 3), n, 3, dimnames = list(colnames(counts), NULL))
    reducedDim(sce, "OTHER") <- matrix(rnorm(n * 2), n, 2, dimnames = list(colnames(counts), NULL))
    saveRDS(sce, file.path(dir, "sce.rds"))
    if (requireNamespace("SeuratObject", quietly = TRUE)) {
        s <- SeuratObject::CreateSeuratObject(counts = counts, meta.data = as.data.frame(cd))
        s <- SeuratObject::SetAssayData(s, slot = "data", new.data = methods::as(logc, "CsparseMatrix"))
        emb <- matrix(rnorm(n * 3), n, 3, dimnames = list(colnames(counts), paste0("PC_", 1:3)))
        s[["pca"]] <- SeuratObject::CreateDimReducObject(embeddings = emb, key = "PC_", assay = "RNA")
        saveRDS(s, file.path(dir, "seurat.rds"))
    }
    invisible(TRUE)
}
"""

# Compares two R objects: everything that existed before is unchanged after write_back.
_COMPARE = r"""
function(before, after) {
    suppressPackageStartupMessages({library(SingleCellExperiment)})
    a <- readRDS(before); b <- readRDS(after)
    if (inherits(a, "Seurat")) {
        md_ok <- identical(a[[]], b[[]][, colnames(a[[]])])
        red_ok <- all(vapply(SeuratObject::Reductions(a), function(r)
            identical(SeuratObject::Embeddings(a, r), SeuratObject::Embeddings(b, r)), TRUE))
        counts_ok <- identical(SeuratObject::GetAssayData(a, slot = "counts"),
                               SeuratObject::GetAssayData(b, slot = "counts"))
        ferry <- SeuratObject::Embeddings(b, "ferry")
        pred <- as.matrix(SeuratObject::GetAssayData(b[["ferry.predictions"]], slot = "data"))
        pid <- b$predicted.id
    } else {
        md_ok <- identical(as.data.frame(colData(a)), as.data.frame(colData(b))[, colnames(colData(a))])
        red_ok <- all(vapply(reducedDimNames(a), function(r) identical(reducedDim(a, r), reducedDim(b, r)), TRUE))
        counts_ok <- identical(assays(a), assays(b))
        ferry <- reducedDim(b, "FERRY")
        pred <- SummarizedExperiment::assay(altExp(b, "ferry.predictions"), "probabilities")
        pid <- b$predicted.id
    }
    list(md_ok = md_ok, red_ok = red_ok, counts_ok = counts_ok, ferry = ferry,
         ferry_rows = rownames(ferry), pred = pred, pred_rows = rownames(pred), pid = pid)
}
"""


@pytest.fixture(scope="module")
def rds_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("rds")
    ro.r(_MAKE)(str(d))
    return d


def _r_values(path, expr):
    return ro.r(f"function(p) {{ suppressPackageStartupMessages(library(SingleCellExperiment)); x <- readRDS(p); {expr} }}")(str(path))


def _check_obs(obs: pd.DataFrame):
    n = len(obs)
    assert str(obs["lgl"].dtype) == "boolean"
    exp_lgl = [True, False, None, True] * (n // 4)
    assert [None if pd.isna(v) else bool(v) for v in obs["lgl"]] == exp_lgl
    assert str(obs["int"].dtype) == "Int32"
    assert [None if pd.isna(v) else int(v) for v in obs["int"]] == [1, None, 3, 40] * (n // 4)
    assert [None if pd.isna(v) else v for v in obs["chr"]] == ["a", None, "b b", "c"] * (n // 4)
    assert isinstance(obs["fac"].dtype, pd.CategoricalDtype)
    assert list(obs["fac"].cat.categories) == ["y", "x", "unused"]
    assert [None if pd.isna(v) else v for v in obs["fac"]] == ["x", "y", None, "x"] * (n // 4)
    dbl = obs["dbl"].to_numpy(dtype=float)
    np.testing.assert_array_equal(np.isnan(dbl), [False, True, False, False] * (n // 4))
    assert dbl[3] == 1e6
    assert obs.index[0] == "cell1"


def test_read_rds_sce(rds_dir):
    a = sfr.read_rds(rds_dir / "sce.rds")
    assert a.shape == (40, 25)
    assert a.uns["X_name"] == "counts"
    assert a.uns["scferry_r"]["class"] == "SingleCellExperiment"
    counts = np.asarray(_r_values(rds_dir / "sce.rds", "as.matrix(counts(x))"))
    np.testing.assert_array_equal(a.X.toarray(), counts.T)
    logc = np.asarray(_r_values(rds_dir / "sce.rds", "logcounts(x)"))
    np.testing.assert_allclose(np.asarray(a.layers["logcounts"]), logc.T)
    _check_obs(a.obs)
    assert set(a.obsm) == {"X_pca", "OTHER"}
    pca = np.asarray(_r_values(rds_dir / "sce.rds", "reducedDim(x, 'PCA')"))
    np.testing.assert_array_equal(a.obsm["X_pca"], pca)


@pytest.mark.skipif(not _have["seurat"], reason="R package Seurat is not installed")
def test_read_rds_seurat(rds_dir):
    a = sfr.read_rds(rds_dir / "seurat.rds")
    assert a.uns["scferry_r"]["class"] == "Seurat"
    assert a.uns["scferry_r"]["assay"] == "RNA"
    assert a.uns["X_name"] == "counts"
    assert "logcounts" in a.layers
    _check_obs(a.obs)
    assert "ident" not in a.obs  # as.SingleCellExperiment adds it; not part of the metadata
    assert a.obsm["X_pca"].shape == (40, 3)
    with pytest.raises(ValueError, match="assay 'ADT' is not in the Seurat object; it has: RNA"):
        sfr.read_rds(rds_dir / "seurat.rds", assay="ADT")


# write_back runs the scferry R package's write-back code (rbridge/)
needs_r_package = pytest.mark.skipif(not _have["scferry"], reason="the scferry R package is not installed "
                                     "(R CMD INSTALL rbridge)")


@needs_r_package
@pytest.mark.parametrize("kind", ["sce", "seurat"])
def test_write_back_round_trip(rds_dir, kind):
    if kind == "seurat" and not _have["seurat"]:
        pytest.skip("R package Seurat is not installed")
    src = rds_dir / f"{kind}.rds"
    out = rds_dir / f"{kind}_out.rds"
    a = sfr.read_rds(src)
    rng = np.random.default_rng(0)
    a.obsm["X_scferry"] = rng.normal(size=(a.n_obs, 4)).astype(np.float32)
    P = rng.random((a.n_obs, 3))
    P /= P.sum(1, keepdims=True)
    a.obsm["scferry_label_probs"] = P.astype(np.float32)
    a.uns["scferry_label_probs_columns"] = ["B_cell", "T cell", "max"]
    perm = rng.permutation(a.n_obs)
    sfr.write_back(a[perm].copy(), src, out)  # any cell order
    res = ro.r(_COMPARE)(str(src), str(out))
    get = dict(zip(res.names, res))
    assert get["md_ok"][0] and get["red_ok"][0] and get["counts_ok"][0]
    ferry = np.asarray(get["ferry"])
    assert list(get["ferry_rows"]) == list(a.obs_names)
    np.testing.assert_allclose(ferry, a.obsm["X_scferry"], rtol=1e-6)
    pred = np.asarray(get["pred"])
    rows = list(get["pred_rows"])
    if kind == "seurat":
        assert rows == ["B-cell", "T cell", "max.1", "max"]
    else:
        assert rows == ["B_cell", "T cell", "max.1", "max"]
    np.testing.assert_allclose(pred[:3].sum(0), 1, rtol=1e-5)
    np.testing.assert_allclose(pred[3], P.max(1), rtol=1e-5)
    labels = np.array(["B_cell", "T cell", "max"])
    assert list(get["pid"]) == list(labels[P.argmax(1)])


@needs_r_package
def test_write_back_errors(rds_dir):
    a = sfr.read_rds(rds_dir / "sce.rds")
    with pytest.raises(KeyError, match="no 'X_scferry'"):
        sfr.write_back(a, rds_dir / "sce.rds", rds_dir / "x.rds")
    a.obsm["X_scferry"] = np.zeros((a.n_obs, 2), np.float32)
    with pytest.raises(ValueError, match="the AnnData has 10 cells and the R object 40"):
        sfr.write_back(a[:10].copy(), rds_dir / "sce.rds", rds_dir / "x.rds")
    with pytest.raises(FileNotFoundError):
        sfr.read_rds(rds_dir / "nope.rds")
    with pytest.raises(ValueError, match="not a Seurat or SingleCellExperiment"):
        ro.r("function(p) saveRDS(list(a = 1), p)")(str(rds_dir / "list.rds"))
        sfr.read_rds(rds_dir / "list.rds")
