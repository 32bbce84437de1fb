# The pieces Seurat users expected (issue 15): ferry_project (as MapQuery), ferry_impute, a
# per-dataset assay (CITE-seq / multiome in one object).

test_that("ferry_project maps new cells into the reference's ferry space", {
    skip_if_no_python()
    skip_if_no_seurat()
    p <- pbmc_pair()
    objs <- suppressMessages(ferry_integrate(list(g1 = p$g1[, 1:30], g2 = p$g2), max_iter = 20,
                                             progress = FALSE, model_dir = tempfile("models")))
    new <- p$g1[, 31:ncol(p$g1)]
    before <- new
    out <- ferry_project(new, objs$g1)
    expect_identical(new, before)
    e <- SeuratObject::Embeddings(out, "ferry")
    expect_identical(dim(e), c(ncol(new), ncol(SeuratObject::Embeddings(objs$g1, "ferry"))))
    expect_true(all(is.finite(e)))
    expect_identical(out@misc$ferry_project$dataset, "g1")
    # projecting training cells gives their training embedding (same encoder, same preprocessing)
    back <- ferry_project(p$g1[, 1:30], objs$g1, reduction.name = "proj")
    expect_equal(unname(SeuratObject::Embeddings(back, "proj")), unname(SeuratObject::Embeddings(objs$g1, "ferry")),
                 tolerance = 1e-4)
    # a new session: the model is read from its saved file
    state <- scferry:::.ferry
    id <- objs$g1@misc$ferry$model_id
    live <- state$models[[id]]
    state$models[[id]] <- NULL
    on.exit(state$models[[id]] <- live)
    out2 <- ferry_project(new, objs$g1)
    expect_equal(SeuratObject::Embeddings(out2, "ferry"), e, tolerance = 1e-5)
    expect_error(ferry_project(new, p$g1), "was not integrated with scferry", class = "ferry_error")
})

test_that("ferry_impute writes another dataset's genes as an assay / altExp", {
    skip_if_no_python()
    skip_if_no_seurat()
    objs <- pbmc_integrated()
    g1 <- ferry_impute(objs$g1, target = "g2")
    expect_true("ferry.imputed" %in% SeuratObject::Assays(g1))
    d <- SeuratObject::GetAssayData(g1[["ferry.imputed"]], slot = "data")
    expect_identical(colnames(d), colnames(objs$g1))
    expect_true(nrow(d) > 0L)
    expect_true(all(is.finite(d)) && all(d >= 0))
    expect_identical(SeuratObject::DefaultAssay(g1), "RNA")
    expect_error(ferry_impute(objs$g1, target = "nope"), "target 'nope' is not a dataset", class = "ferry_error")
    skip_if_no_sce()
    sce <- suppressWarnings(Seurat::as.SingleCellExperiment(objs$g1))
    S4Vectors::metadata(sce)$ferry <- objs$g1@misc$ferry
    sce <- ferry_impute(sce, target = "g2")
    a <- SingleCellExperiment::altExp(sce, "ferry.imputed")
    expect_identical(SummarizedExperiment::assayNames(a), "logcounts")
    expect_equal(unname(SummarizedExperiment::assay(a, "logcounts")), unname(as.matrix(d)), tolerance = 1e-6)
})

test_that("assay = c(rna = 'RNA', adt = 'ADT') integrates CITE-seq held in one Seurat object", {
    skip_if_no_python()
    skip_if_no_seurat()
    cite <- pbmc_cite()
    # before: "the condition has length > 1"
    out <- suppressMessages(suppressWarnings(
        ferry_integrate(cite, assay = c(rna = "RNA", adt = "ADT"), max_iter = 5, progress = FALSE,
                        mode = "vertical")))
    expect_s4_class(out, "Seurat")
    red <- SeuratObject::Reductions(out)
    expect_true(all(c("ferry", "ferry.rna", "ferry.adt") %in% red))
    expect_identical(SeuratObject::DefaultAssay(out[["ferry.adt"]]), "ADT")
    e <- SeuratObject::Embeddings(out, "ferry")
    expect_equal(e, (SeuratObject::Embeddings(out, "ferry.rna") + SeuratObject::Embeddings(out, "ferry.adt")) / 2,
                 ignore_attr = TRUE)
    expect_identical(out@misc$ferry$paired, c("rna", "adt"))
    expect_identical(out@misc$ferry$assay, list(rna = "RNA", adt = "ADT"))
    # the same object twice in a list, one assay per element (by name or in order)
    objs <- suppressMessages(suppressWarnings(
        ferry_integrate(list(rna = cite, adt = cite), assay = c("RNA", "ADT"), max_iter = 5, progress = FALSE,
                        mode = "vertical")))
    expect_identical(objs$adt@misc$ferry$assay$adt, "ADT")
    expect_error(ferry_integrate(list(rna = cite, adt = cite), assay = c("RNA", "ADT", "X")),
                 "one per dataset.*got 3 names for 2 datasets", class = "ferry_error")
    expect_error(ferry_integrate(list(rna = cite, adt = cite), assay = c(rna = "RNA", prot = "ADT")),
                 "missing: 'adt'; not datasets: 'prot'", class = "ferry_error")
})
