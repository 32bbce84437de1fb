test_that("ferry_read_h5ad keeps counts sparse, metadata types and NA, obsm", {
    skip_if_no_python()
    skip_if_no_seurat()
    skip_if_no_sce()
    f <- tempfile(fileext = ".h5ad")
    reticulate::py_run_string(sprintf("
import numpy as np, pandas as pd, scipy.sparse as sp, anndata as ad
X = sp.random(6, 5, density=0.5, format='csr', random_state=0, dtype=np.float32)
X.data[:] = np.round(X.data * 10) + 1
obs = pd.DataFrame({
    'fac': pd.Categorical(['a', None, 'b', 'a', 'b', 'a'], categories=['b', 'a']),
    'int': pd.array([1, None, 3, 4, 5, 6], dtype='Int32'),
    'boo': pd.array([True, None, False, True, True, False], dtype='boolean'),
    'chr': np.array(['x', None, 'z', 'u', 'v', 'w'], dtype=object),
    'dbl': [0.5, np.nan, 1.5, 2.0, 3.0, 4.0],
}, index=[f'c{i}' for i in range(6)])
a = ad.AnnData(X=X, obs=obs, var=pd.DataFrame(index=['g_1', 'g2', 'g3', 'g4', 'g5']))
a.obsm['X_pca'] = np.arange(12, dtype=np.float64).reshape(6, 2)
a.write_h5ad(%s)
_dense = X.toarray()
", shQuote(f, type = "sh")))
    dense <- reticulate::py_eval("_dense")
    s <- ferry_read_h5ad(f)
    expect_s4_class(s, "Seurat")
    m <- SeuratObject::GetAssayData(s, slot = "counts")
    expect_s4_class(m, "dgCMatrix")
    expect_identical(rownames(m), c("g-1", "g2", "g3", "g4", "g5"))
    expect_equal(unname(as.matrix(m)), t(dense), ignore_attr = TRUE)
    md <- s[[]]
    expect_identical(levels(md$fac), c("b", "a"))
    expect_identical(as.character(md$fac), c("a", NA, "b", "a", "b", "a"))
    expect_identical(md$int, c(1L, NA, 3L, 4L, 5L, 6L))
    expect_identical(md$boo, c(TRUE, NA, FALSE, TRUE, TRUE, FALSE))
    # anndata stores string columns as categoricals in .h5ad files: they come back as factors
    expect_identical(as.character(md$chr), c("x", NA, "z", "u", "v", "w"))
    expect_identical(md$dbl, c(0.5, NA, 1.5, 2, 3, 4))
    e <- SeuratObject::Embeddings(s, "pca")
    expect_equal(unname(e), matrix(0:11, 6, byrow = TRUE), ignore_attr = TRUE)
    sce <- ferry_read_h5ad(f, as = "SingleCellExperiment")
    expect_identical(SummarizedExperiment::assayNames(sce), "counts")
    expect_identical(rownames(sce)[1], "g_1")
    expect_identical(SingleCellExperiment::reducedDimNames(sce), "PCA")
    expect_identical(sce$boo, md$boo)
    expect_error(ferry_read_h5ad(f, layer = "counts"), "has no layer 'counts'")
    expect_error(ferry_read_h5ad(tempfile()), "must be an existing .h5ad file")
})
