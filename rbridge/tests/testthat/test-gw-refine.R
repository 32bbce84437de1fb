# Issue 17: method = "gw"'s refinement (scferry.gw.refine: matching + CCA over all features after
# GW, MaxFuse-style) is set from R: `refine` reaches scferry.integrate() as a Python int and is
# recorded; refine = 0 turns it off. The SNARE-seq fixture (helper-snare.R), RNA vs gene activity.

test_that("ferry_integrate passes method = 'gw''s refine through and records it", {
    skip_if_no_python()
    skip_if_no_seurat()
    objs <- snare_paired("Seurat", 300L)
    fit <- function(...) suppressWarnings(ferry_integrate(objs, method = "gw", n_starts = 2, ..., progress = FALSE,
                                                          verbose = FALSE, model_dir = tempfile("models")))
    on <- fit(refine = 2)
    rec <- on$rna@misc$ferry
    expect_identical(rec$params$refine, 2L)
    params <- reticulate::py_to_r(scferry:::.ferry$models[[rec$model_id]]$model$params)
    expect_identical(params$refine, 2L)
    expect_length(params$refine_info$corr, 2L)  # one CCA per round
    off <- fit(refine = 0)
    params0 <- reticulate::py_to_r(scferry:::.ferry$models[[off$rna@misc$ferry$model_id]]$model$params)
    expect_identical(params0$refine, 0L)
    expect_null(params0$refine_info)
    e_on <- SeuratObject::Embeddings(on$atac, "ferry")
    e_off <- SeuratObject::Embeddings(off$atac, "ferry")
    expect_identical(rownames(e_on), colnames(objs$atac))
    expect_true(all(is.finite(e_on)))
    expect_false(isTRUE(all.equal(unname(e_on[, seq_len(ncol(e_off))]), unname(e_off))))
    expect_error(fit(refine = -1), "refine must be an integer >= 0", class = "ferry_error")
})

test_that("ferry_integrate aligns Seurat ATAC peaks through the assembly their coordinates match", {
    # Issue 17: RNA + ATAC peaks with nothing beside them; Seurat names peaks 'chr1-100-600', and
    # tss = "auto" (the default) reads them as the shipped mm10 and says so; tss = "mm10" names it.
    skip_if_no_python()
    skip_if_no_seurat()
    rna <- scferry::ferry_read_h5ad(fixture_file("snare_cortex_rna.h5ad"), as = "Seurat")
    atac <- scferry::ferry_read_h5ad(fixture_file("snare_cortex_atac.h5ad"), as = "Seurat")
    keep <- seq(1L, ncol(rna), length.out = 600L)
    objs <- list(rna = rna[, keep], atac = atac[, keep])
    said <- character()
    fit <- withCallingHandlers(
        ferry_integrate(objs, method = "gw", n_starts = 2, progress = FALSE, verbose = FALSE,
                        model_dir = tempfile("models")),
        warning = function(w) {
            said <<- c(said, conditionMessage(w))
            invokeRestart("muffleWarning")
        })
    expect_true(any(grepl("read as assembly mm10", said, fixed = TRUE)))
    model <- scferry:::.ferry$models[[fit$rna@misc$ferry$model_id]]$model
    choice <- reticulate::py_to_r(model$choices)$tss
    expect_identical(choice$value, "mm10")
    named <- suppressWarnings(ferry_integrate(objs, method = "gw", n_starts = 2, tss = "mm10",
                                              progress = FALSE, verbose = FALSE,
                                              model_dir = tempfile("models")))
    expect_equal(SeuratObject::Embeddings(named$atac, "ferry"),
                 SeuratObject::Embeddings(fit$atac, "ferry"), tolerance = 1e-5)
    expect_error(suppressWarnings(ferry_integrate(objs, method = "gw", tss = "hg37",
                                                  progress = FALSE, verbose = FALSE)),
                 "hg38", class = "ferry_error")
    # the default call on unpaired objects (other cell names: uniPort, diagonal mode) says which
    # assembly its GW guidance read
    unpaired <- list(rna = objs$rna, atac = SeuratObject::RenameCells(
        objs$atac, new.names = paste0("atac_", colnames(objs$atac))))
    msgs <- character()
    withCallingHandlers(
        ferry_integrate(unpaired, max_iter = 5, progress = FALSE, model_dir = tempfile("models")),
        warning = function(w) invokeRestart("muffleWarning"),
        message = function(m) {
            msgs <<- c(msgs, conditionMessage(m))
            invokeRestart("muffleMessage")
        })
    expect_true(any(grepl("the peaks read as assembly mm10", msgs, fixed = TRUE)))
})
