# End to end on real data (PDAC scRNA + ST) with SingleCellExperiment objects.

test_that("SCE: reducedDim FERRY, record, altExp predictions, colData", {
    skip_if_no_python()
    skip_if_no_sce()
    objs0 <- pdac_objects("SingleCellExperiment")
    before <- objs0
    objs <- pdac_integrated("SingleCellExperiment")
    expect_identical(objs0, before)
    for (n in names(objs)) {
        rd <- SingleCellExperiment::reducedDim(objs[[n]], "FERRY")
        expect_identical(rownames(rd), colnames(objs[[n]]))
        expect_identical(nrow(rd), ncol(objs[[n]]))
        expect_true(all(is.finite(rd)))
        expect_identical(S4Vectors::metadata(objs[[n]])$ferry$dataset, n)
    }
    st <- ferry_transfer(objs$rna, objs$st, label = "cell_type")
    ae <- SingleCellExperiment::altExp(st, "ferry.predictions")
    m <- SummarizedExperiment::assay(ae, "probabilities")
    labels <- sort(unique(as.character(objs$rna$cell_type)))
    expect_identical(rownames(m), c(labels, "max"))
    expect_identical(colnames(m), colnames(st))
    expect_equal(unname(colSums(m[labels, ])), rep(1, ncol(st)), tolerance = 1e-5)
    expect_true(all(st$predicted.id %in% labels))
    expect_equal(st$prediction.score.max, unname(m["max", ]))
    expect_identical(SingleCellExperiment::reducedDimNames(st), SingleCellExperiment::reducedDimNames(objs$st))
})

test_that("SCE objects from pbmc_small, one object with batch", {
    skip_if_no_python()
    skip_if_no_sce()
    skip_if_no_seurat()
    data("pbmc_small", package = "SeuratObject", envir = environment())
    sce <- suppressWarnings(Seurat::as.SingleCellExperiment(pbmc_small))
    out <- ferry_integrate(sce, batch = "groups", max_iter = 50, progress = FALSE)
    rd <- SingleCellExperiment::reducedDim(out, "FERRY")
    expect_identical(rownames(rd), colnames(sce))
    g1 <- out[, out$groups == "g1"]
    g2 <- out[, out$groups == "g2"]
    q <- ferry_transfer(g1, g2, "letter.idents")
    expect_true(all(q$predicted.id %in% c("A", "B")))
})

test_that("SCE: ferry_deconvolve writes altExp 'ferry.proportions'", {
    skip_if_no_python()
    skip_if_no_sce()
    skip_unless_python_has("deconvolve")
    objs <- pdac_integrated("SingleCellExperiment")
    st <- ferry_deconvolve(objs$rna, objs$st, label = "cell_type")
    ae <- SingleCellExperiment::altExp(st, "ferry.proportions")
    expect_identical(SummarizedExperiment::assayNames(ae), "proportions")
    m <- SummarizedExperiment::assay(ae, "proportions")
    expect_setequal(rownames(m), unique(as.character(objs$rna$cell_type)))
    expect_identical(colnames(m), colnames(st))
    expect_equal(unname(colSums(m)), rep(1, ncol(st)), tolerance = 1e-5)
    expect_identical(SummarizedExperiment::colData(st), SummarizedExperiment::colData(objs$st))
})
