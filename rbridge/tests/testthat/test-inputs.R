# Bad input gives a clear R error before Python runs (these tests do not need Python).

test_that("non-Seurat/SCE input, unnamed lists and mixed classes are rejected", {
    skip_if_no_seurat()
    skip_if_no_sce()
    objs <- pbmc_pair()
    expect_error(ferry_integrate(matrix(1, 2, 2)), "named list of Seurat or SingleCellExperiment")
    expect_error(ferry_integrate(list(a = objs$g1, b = data.frame(x = 1))),
                 "'b' is a data.frame")
    expect_error(ferry_integrate(list(objs$g1, objs$g2)), "must be a \\*named\\* list")
    expect_error(ferry_integrate(list(a = objs$g1, objs$g2)), "some names are missing")
    expect_error(ferry_integrate(list(a = objs$g1)), "at least two datasets")
    expect_error(ferry_integrate(objs$g1), "needs batch =")
    sce <- suppressWarnings(Seurat::as.SingleCellExperiment(objs$g2))
    expect_error(ferry_integrate(list(a = objs$g1, b = sce)),
                 "mixes classes \\(a: Seurat, b: SingleCellExperiment\\)")
    expect_error(ferry_integrate(objs, batch = "groups"), "batch = is for a single object")
    expect_error(ferry_integrate(objs, method = c("a", "b")), "method must be one string")
})

test_that("missing assays and layers name what exists", {
    skip_if_no_seurat()
    skip_if_no_sce()
    objs <- pbmc_pair()
    expect_error(ferry_integrate(objs, assay = "ATAC"),
                 "assay 'ATAC' not found in 'g1'; it has assays: 'RNA'")
    expect_error(ferry_integrate(objs, layer = "spliced"),
                 "layer 'spliced' is not a layer of a Seurat v3/v4 assay; use one of 'counts', 'data', 'scale.data'")
    o2 <- objs
    o2$g2 <- SeuratObject::SetAssayData(o2$g2, slot = "scale.data", new.data = matrix(numeric(0), 0, 0))
    expect_error(ferry_integrate(o2, layer = "scale.data"), "layer 'scale.data' of assay 'RNA' in 'g2' is empty")
    sces <- pbmc_sce_pair()
    expect_error(ferry_integrate(sces, layer = "spliced"),
                 "assay 'spliced' \\(argument layer\\) not found in 'g1'; it has assays: 'counts', 'logcounts'")
    expect_error(ferry_integrate(sces, assay = "ATAC"), "names an altExp .* has altExps: \\(none\\)")
})

test_that("batch and label columns are checked: existence, NA, one value", {
    skip_if_no_seurat()
    data("pbmc_small", package = "SeuratObject", envir = environment())
    expect_error(ferry_integrate(pbmc_small, batch = "nope"),
                 "batch column 'nope' is not in the cell metadata of the object; available columns: 'orig.ident'")
    x <- pbmc_small
    x$groups[3:4] <- NA
    expect_error(ferry_integrate(x, batch = "groups"),
                 "batch column 'groups' of the object has 2 missing value\\(s\\) \\(NA\\) among 80 cells")
    expect_error(ferry_integrate(pbmc_small, batch = "orig.ident"), "has a single value")
    expect_error(ferry_integrate(pbmc_small, batch = c("a", "b")), "one column name")
})

test_that("objects with no shared genes or duplicated cells are rejected", {
    skip_if_no_seurat()
    objs <- pbmc_pair()
    a <- objs$g1[1:100, ]
    b <- objs$g2[101:230, ]
    expect_error(ferry_integrate(list(a = a, b = b), method = "davae"),
                 "share no feature names \\('a': 100, 'b': 130 features\\)")
    # the same cells in every object is paired data (allowed); a partial overlap is an error
    part <- list(a = objs$g1, b = SeuratObject::RenameCells(objs$g2, new.names = c(colnames(objs$g1)[1:3], paste0("x", 4:36))))
    expect_error(ferry_integrate(part),
                 "3 cell name\\(s\\) occur in more than one object .* per object: a 3, b 3")
    dup <- list(a = objs$g1, b = SeuratObject::RenameCells(objs$g2, new.names = c(colnames(objs$g1)[1], paste0("x", 2:36))))
    expect_error(ferry_integrate(dup), "1 cell name\\(s\\) occur in more than one object")
})

test_that("method parameters in ... must be named; whole numbers become integers", {
    expect_error(scferry:::.ferry_method_params(list(200)), "must be named")
    expect_error(scferry:::.ferry_method_params(list(seed = 1)), "use the argument of the R function")
    p <- scferry:::.ferry_method_params(list(max_iter = 200, lr = 0.001, keep = I(2), n = c(1, 2), s = "a"))
    expect_identical(p$max_iter, 200L)
    expect_identical(p$lr, 0.001)
    expect_identical(p$keep, 2)
    expect_identical(p$n, c(1L, 2L))
    expect_identical(p$s, "a")
})

test_that("transfer checks: integrated objects, same model, label column", {
    skip_if_no_seurat()
    objs <- pbmc_pair()
    expect_error(ferry_transfer(objs$g1, objs$g2, "groups"), "reference was not integrated with scferry")
    expect_error(ferry_transfer(1, objs$g2, "groups"), "reference must be a Seurat or SingleCellExperiment")
    # fake records: checks run before Python
    rec <- list(model_id = "m1", dataset = "g1", datasets = c("g1", "g2"))
    a <- objs$g1; a@misc$ferry <- rec
    b <- objs$g2; b@misc$ferry <- modifyList(rec, list(dataset = "g2"))
    c2 <- objs$g2; c2@misc$ferry <- modifyList(rec, list(model_id = "m2", dataset = "g2"))
    expect_error(ferry_transfer(a, c2, "letter.idents"), "come from different ferry_integrate\\(\\) calls")
    expect_error(ferry_transfer(a, b, "celltype"),
                 "label column 'celltype' is not in the cell metadata of reference; available columns:")
    # NA labels are left out of the transfer (test-transfer-names.R); all NA is an error
    a2 <- a; a2$letter.idents <- NA
    expect_error(ferry_transfer(a2, b, "letter.idents"), "label column 'letter.idents' of reference is NA for all 44 cells")
    expect_error(ferry_transfer(a, a, "letter.idents"), "are the same dataset \\('g1'\\)")
    expect_error(ferry_deconvolve(a, c2, "letter.idents"), "reference and spots come from different")
    expect_error(ferry_transfer(a, b, "letter.idents", source = "zz"), "source = 'zz' is not a dataset of reference")
})

test_that("user objects are never modified by a failing call", {
    skip_if_no_seurat()
    objs <- pbmc_pair()
    before <- objs
    try(ferry_integrate(objs, assay = "ATAC"), silent = TRUE)
    try(ferry_integrate(objs, layer = "nope"), silent = TRUE)
    expect_identical(objs, before)
})

test_that("SCE: assay = names an altExp; its counts are read", {
    skip_if_no_sce()
    skip_if_no_seurat()
    sce <- pbmc_sce_pair()$g1
    alt <- SingleCellExperiment::SingleCellExperiment(
        list(counts = SummarizedExperiment::assay(sce, "counts")[1:10, ] * 2))
    SingleCellExperiment::altExp(sce, "ADT") <- alt
    m <- scferry:::.ferry_counts(sce, "ADT", "counts", "x")
    expect_s4_class(m, "dgCMatrix")
    expect_identical(dim(m), c(10L, ncol(sce)))
    expect_identical(colnames(m), colnames(sce))
    d <- scferry:::.ferry_counts(sce, NULL, "logcounts", "x")
    expect_s4_class(d, "dgCMatrix")
})
