# Seurat v5 objects: an Assay5 whose counts are split into layers (counts.g1, counts.g2, after
# split()) are joined in the object's cell order. Runs where SeuratObject >= 5 is installed.

test_that("Assay5 with split counts.* layers: the counts are joined in the object's cell order", {
    skip_if_no_seurat()
    skip_if(utils::packageVersion("SeuratObject") < "5.0.0",
            paste0("SeuratObject >= 5.0.0 is needed for Assay5 layers; installed: ",
                   utils::packageVersion("SeuratObject")))
    data("pbmc_small", package = "SeuratObject", envir = environment())
    obj <- suppressMessages(suppressWarnings(SeuratObject::UpdateSeuratObject(pbmc_small)))
    full <- SeuratObject::LayerData(obj, assay = "RNA", layer = "counts")
    obj[["RNA"]] <- methods::as(obj[["RNA"]], "Assay5")
    obj[["RNA"]] <- split(obj[["RNA"]], f = obj$groups)
    expect_true(all(c("counts.g1", "counts.g2") %in% SeuratObject::Layers(obj[["RNA"]])))
    m <- scferry:::.ferry_counts(obj, NULL, "counts", "the object")
    expect_s4_class(m, "dgCMatrix")
    expect_identical(colnames(m), colnames(obj))
    expect_equal(unname(as.matrix(m)), unname(as.matrix(full[rownames(m), colnames(obj)])))
    expect_error(scferry:::.ferry_counts(obj, NULL, "nope", "the object"), "layer 'nope' not found",
                 class = "ferry_error")
})
