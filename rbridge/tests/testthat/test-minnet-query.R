# Issue 19, goal 4: MinNet's options pass through ferry_integrate, and new cells measured once (an
# RNA-only and an ATAC-only Seurat object, nuclei held apart from training) are embedded with
# ferry_project. The SNARE-seq fixture of test-minnet.R (snare_paired(): helper-snare.R).

test_that("held-apart RNA-only and ATAC-only Seurat objects are embedded with ferry_project; minnet options pass through", {
    skip_if_no_python()
    skip_if_no_seurat()
    objs <- snare_paired("Seurat", 600L)
    held <- seq(5L, 600L, by = 5L)  # 120 nuclei held apart, 480 trained on (the pairing alone)
    train <- lapply(objs, function(o) o[, -held])
    # options that are not the defaults without labels (InfoNCE, 'between' negatives, margin 3)
    fit <- suppressWarnings(ferry_integrate(train, method = "minnet", objective = "margin", margin = 2,
                                            negatives = "within", max_iter = 300, n_specific_genes = 1000,
                                            feature_selection = "open", progress = FALSE, model_dir = tempfile("models"), verbose = FALSE))
    model <- scferry:::.ferry_model_any(fit$rna@misc$ferry)
    expect_identical(reticulate::py_to_r(model$params$objective), "margin")
    expect_equal(reticulate::py_to_r(model$params$margin), 2)
    expect_identical(reticulate::py_to_r(model$params$negatives), "within")
    fs <- reticulate::py_to_r(model$params$feature_selection)  # per dataset, from the one option
    expect_identical(fs$rna, "open")
    expect_identical(fs$atac, "open")
    q_rna <- ferry_project(objs$rna[, held], fit$rna)     # RNA-only query object
    q_atac <- ferry_project(objs$atac[, held], fit$atac)  # ATAC-only query object
    er <- SeuratObject::Embeddings(q_rna, "ferry")
    ea <- SeuratObject::Embeddings(q_atac, "ferry")
    expect_identical(dim(ea), c(length(held), 32L))
    expect_identical(rownames(er), colnames(objs$rna)[held])
    expect_identical(rownames(ea), colnames(objs$atac)[held])
    expect_identical(q_rna@misc$ferry_project$dataset, "rna")
    expect_identical(q_atac@misc$ferry_project$dataset, "atac")
    # the projection is the fitted encoder itself: the trained nuclei projected again land where
    # the fit put them
    back <- SeuratObject::Embeddings(ferry_project(train$atac, fit$atac), "ferry")
    expect_equal(unname(back), unname(SeuratObject::Embeddings(fit$atac, "ferry")), tolerance = 1e-4)
    # held-apart nuclei: better than a random embedding of the same nuclei
    set.seed(1)
    f_rand <- foscttm(matrix(stats::rnorm(length(er)), nrow(er)), matrix(stats::rnorm(length(ea)), nrow(ea)))
    f <- foscttm(er, ea)
    message(sprintf("held-apart SNARE nuclei, Seurat queries (ferry_project) FOSCTTM: MinNet margin %.3f, random %.3f",
                    f, f_rand))
    expect_lt(f, f_rand - 0.1)
    # a dataset the model was not trained on is refused with a message naming the choices
    expect_error(ferry_project(objs$atac[, held], fit$atac, dataset = "adt"), "one of", class = "ferry_error")
})
