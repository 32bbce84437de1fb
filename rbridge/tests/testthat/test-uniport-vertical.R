# uniPort's vertical mode from R: the same SNARE-seq nuclei as RNA and ATAC peaks (the repository's
# fixture, tests/data), cell names repeating across the two objects by design.

# 200 nuclei of the fixture as SingleCellExperiment objects, the same cells in each (objs), and
# the ATAC of the other nuclei (held_apart)
snare_pair <- function() {
    rna <- scferry::ferry_read_h5ad(fixture_file("snare_cortex_rna.h5ad"), as = "SingleCellExperiment")
    atac <- scferry::ferry_read_h5ad(fixture_file("snare_cortex_atac.h5ad"), as = "SingleCellExperiment")
    keep <- seq(1L, ncol(rna), length.out = 200L)
    list(objs = list(rna = rna[, keep], atac = atac[, keep]),
         held_apart = atac[, setdiff(seq_len(ncol(atac)), keep)])
}
model_of <- function(fit) scferry:::.ferry_model_any(S4Vectors::metadata(fit$rna)$ferry)

test_that("vertical uniPort's per-modality feature numbers pass through ferry_integrate", {
    skip_if_no_python()
    skip_if_no_sce()
    objs <- snare_pair()$objs
    # the default: by each modality's sparsity (ATAC peaks sparse: 10,000, at most all of them)
    fit <- suppressWarnings(ferry_integrate(objs, method = "uniport", max_iter = 3, progress = FALSE,
                                            model_dir = tempfile("models"), verbose = FALSE))
    model <- model_of(fit)
    expect_identical(reticulate::py_to_r(model$params$mode), "vertical")
    expect_identical(reticulate::py_to_r(model$params$n_specific_genes), list(rna = 2000L, atac = 10000L))
    expect_identical(length(reticulate::py_to_r(model$features("atac", "specific"))), nrow(objs$atac))
    # vertical mode's own weight decay, recorded as a choice
    expect_equal(reticulate::py_to_r(model$train_params$weight_decay), 0.05)
    expect_equal(reticulate::py_to_r(model$choices$weight_decay$value), 0.05)
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

test_that("vertical uniPort's weight decay passes through ferry_integrate (its default: the block above)", {
    skip_if_no_python()
    skip_if_no_sce()
    objs <- snare_pair()$objs
    fit <- suppressWarnings(ferry_integrate(objs, method = "uniport", max_iter = 3, progress = FALSE,
                                            weight_decay = 0.01, model_dir = tempfile("models"),
                                            verbose = FALSE))
    expect_equal(reticulate::py_to_r(model_of(fit)$train_params$weight_decay), 0.01)
    expect_error(ferry_integrate(objs, method = "uniport", max_iter = 3, progress = FALSE,
                                 weight_decay = -1, verbose = FALSE),
                 "weight_decay must be a number >= 0")
})

test_that("vertical uniPort's embedding (unit direction for ATAC peaks) passes through and projects", {
    skip_if_no_python()
    skip_if_no_sce()
    snare <- snare_pair()
    objs <- snare$objs
    # the default for peaks: the direction of the latent means, announced and recorded
    expect_warning(fit <- ferry_integrate(objs, method = "uniport", mode = "vertical", max_iter = 3,
                                          progress = FALSE, model_dir = tempfile("models"), verbose = FALSE),
                   "embedding is the direction")
    model <- model_of(fit)
    expect_identical(reticulate::py_to_r(model$params$embedding), "unit")
    z <- SingleCellExperiment::reducedDim(fit$atac, "FERRY")
    expect_equal(unname(sqrt(rowSums(z^2))), rep(1, nrow(z)), tolerance = 1e-5)
    # a held-apart query embedded with the R projection function: the same geometry
    q <- ferry_project(snare$held_apart[, 1:20], fit$atac)
    zq <- SingleCellExperiment::reducedDim(q, "FERRY")
    expect_equal(unname(sqrt(rowSums(zq^2))), rep(1, 20), tolerance = 1e-5)
    # the means on request
    fit <- suppressWarnings(ferry_integrate(objs, method = "uniport", max_iter = 3, progress = FALSE,
                                            embedding = "mean", model_dir = tempfile("models"),
                                            verbose = FALSE))
    expect_identical(reticulate::py_to_r(model_of(fit)$params$embedding), "mean")
    expect_error(ferry_integrate(objs, method = "uniport", max_iter = 3, progress = FALSE,
                                 embedding = "norm", verbose = FALSE),
                 "embedding must be")
})
