# uniPort's vertical mode from R: the same SNARE-seq nuclei as RNA and ATAC peaks (the repository's
# fixture, tests/data), cell names repeating across the two objects by design.

test_that("vertical uniPort's per-modality feature numbers pass through ferry_integrate", {
    skip_if_no_python()
    skip_if_no_sce()
    rna <- scferry::ferry_read_h5ad(fixture_file("snare_cortex_rna.h5ad"), as = "SingleCellExperiment")
    atac <- scferry::ferry_read_h5ad(fixture_file("snare_cortex_atac.h5ad"), as = "SingleCellExperiment")
    keep <- seq(1L, ncol(rna), length.out = 200L)
    objs <- list(rna = rna[, keep], atac = atac[, keep])
    model_of <- function(fit) scferry:::.ferry_model_any(S4Vectors::metadata(fit$rna)$ferry)
    # the default: by each modality's sparsity (ATAC peaks sparse: 10,000, at most all of them)
    fit <- suppressWarnings(ferry_integrate(objs, method = "uniport", max_iter = 3, progress = FALSE,
                                            model_dir = tempfile("models"), verbose = FALSE))
    model <- model_of(fit)
    expect_identical(reticulate::py_to_r(model$params$mode), "vertical")
    expect_identical(reticulate::py_to_r(model$params$n_specific_genes), list(rna = 2000L, atac = 10000L))
    expect_identical(length(reticulate::py_to_r(model$features("atac", "specific"))), nrow(atac))
    # a named list sets each modality's number
    fit <- suppressWarnings(ferry_integrate(objs, method = "uniport", max_iter = 3, progress = FALSE,
                                            n_specific_genes = list(rna = 300, atac = 700),
                                            model_dir = tempfile("models"), verbose = FALSE))
    model <- model_of(fit)
    expect_identical(reticulate::py_to_r(model$params$n_specific_genes), list(rna = 300L, atac = 700L))
    n_atac <- length(reticulate::py_to_r(model$features("atac", "specific")))
    expect_true(n_atac >= 700L && n_atac < 770L)  # ties at the cut are kept
    expect_error(ferry_integrate(objs, method = "uniport", max_iter = 3, progress = FALSE,
                                 n_specific_genes = list(rna = 300), verbose = FALSE),
                 "one entry per dataset")
})
