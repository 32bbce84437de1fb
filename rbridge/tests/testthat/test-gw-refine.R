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
