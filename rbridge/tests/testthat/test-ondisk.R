# Data too large to hold in R: paths to on-disk AnnData stores (issue 20), read by Python in chunks.

test_that("ferry_integrate and ferry_project take paths to .h5ad stores and return matrices keyed by cell", {
    skip_if_no_python()
    src <- file.path(repo_root(), "tests", "data", "symphony_pbmc.h5ad")
    skip_if_not(file.exists(src), "fixture tests/data/symphony_pbmc.h5ad not found")
    dir <- tempfile("ondisk")
    dir.create(dir)
    f <- file.path(dir, "pbmc.h5ad")
    q <- file.path(dir, "query.h5ad")
    file.copy(src, f)
    file.copy(src, q)
    res <- suppressWarnings(ferry_integrate(f, method = "davae", batch = "batch", max_iter = 20L,
                                            progress = FALSE, verbose = FALSE, model_dir = dir))
    expect_identical(sort(names(res)), c("10x_3p_v1", "10x_3p_v2", "10x_5p"))
    for (m in res) {
        expect_true(is.matrix(m) && ncol(m) == 10L && all(is.finite(m)))  # davae: 10 latent dims by default
        expect_false(anyDuplicated(rownames(m)) > 0)
    }
    expect_identical(sum(vapply(res, nrow, 0L)), 1200L)
    expect_identical(attr(res, "ferry")$datasets, names(res))
    e <- suppressWarnings(ferry_project(q, res, dataset = "10x_5p"))
    expect_identical(dim(e), c(1200L, 10L))
    # the training cells through their own dataset's encoder: their training embedding
    cells <- rownames(res[["10x_5p"]])
    expect_equal(e[cells, , drop = FALSE], res[["10x_5p"]], tolerance = 1e-5)
    expect_error(ferry_integrate(c(a = file.path(dir, "nope.h5ad"), b = f), method = "davae"),
                 "no such file", class = "ferry_error")
    expect_error(ferry_integrate(c(a = file.path(dir, "x.csv"), b = f), method = "davae"),
                 "not an .h5ad file", class = "ferry_error")
    expect_error(ferry_project(q, res, dataset = "nope"), "one of", class = "ferry_error")
})
