# Write-back shapes with fake embeddings / probabilities (no Python needed).

fake_probs <- function(cells, labels) {
    set.seed(1)
    P <- matrix(stats::runif(length(labels) * length(cells)), length(labels), dimnames = list(labels, cells))
    sweep(P, 2, colSums(P), "/")
}

test_that("Seurat: DimReduc 'ferry' with key FERRY_, the object's cell order, record in misc", {
    skip_if_no_seurat()
    obj <- pbmc_pair()$g1
    emb <- matrix(seq_len(ncol(obj) * 3), ncol = 3, dimnames = list(rev(colnames(obj)), NULL))
    rec <- list(model_id = "x", dataset = "g1")
    out <- expect_silent(scferry:::.ferry_add_embedding(obj, emb, rec))
    e <- SeuratObject::Embeddings(out, "ferry")
    expect_identical(rownames(e), colnames(obj))
    expect_identical(colnames(e), paste0("FERRY_", 1:3))
    expect_equal(e[colnames(obj)[1], ], emb[colnames(obj)[1], ], ignore_attr = TRUE)
    expect_identical(SeuratObject::Key(out[["ferry"]]), "FERRY_")
    expect_identical(SeuratObject::DefaultAssay(out[["ferry"]]), "RNA")
    expect_identical(out@misc$ferry, rec)
})

test_that("Seurat: prediction assay and metadata in TransferData's shapes", {
    skip_if_no_seurat()
    obj <- pbmc_pair()$g2
    labels <- c("B cell", "CD4_T cell", "NK|x", "max")
    P <- fake_probs(rev(colnames(obj)), labels)
    out <- expect_silent(scferry:::.ferry_add_scores(obj, P, "predictions"))
    a <- out[["ferry.predictions"]]
    expect_s4_class(a, "Assay")
    expect_identical(rownames(a), c("B cell", "CD4-T cell", "NK-x", "max.1", "max"))
    expect_identical(SeuratObject::Key(a), "ferrypredictions_")
    d <- SeuratObject::GetAssayData(a, slot = "data")
    expect_true(is.matrix(d))
    expect_identical(colnames(d), colnames(obj))
    expect_equal(unname(colSums(d[1:4, ])), rep(1, ncol(obj)))
    expect_equal(unname(d["max", ]), unname(apply(d[1:4, ], 2, max)))
    md <- out[[]]
    expect_type(md$predicted.id, "character")
    expect_true(all(md$predicted.id %in% labels))
    expect_identical(md$predicted.id, labels[apply(P[, colnames(obj)], 2, which.max)])
    expect_true(all(c("prediction.score.B.cell", "prediction.score.CD4_T.cell", "prediction.score.NK.x",
                      "prediction.score.max") %in% names(md)))
    expect_equal(md$prediction.score.max, unname(d["max", ]))
    expect_identical(SeuratObject::DefaultAssay(out), "RNA")
})

test_that("Seurat: proportions assay has no max row and no metadata; SpatialFeaturePlot draws it", {
    skip_if_no_seurat()
    obj <- pbmc_pair()$g2
    P <- fake_probs(rev(colnames(obj)), c("a", "b_c"))
    out <- expect_silent(scferry:::.ferry_add_scores(obj, P, "proportions"))
    a <- out[["ferry.proportions"]]
    expect_identical(rownames(a), c("a", "b-c"))
    expect_identical(SeuratObject::Key(a), "ferryproportions_")
    expect_equal(unname(SeuratObject::GetAssayData(a, slot = "data")["a", ]), unname(P["a", colnames(obj)]))
    expect_false("predicted.id" %in% names(out[[]]))
    # spots on an 8-column grid, with a blank image
    n <- ncol(out)
    xy <- cbind(SPATIAL_1 = (seq_len(n) - 1) %% 8 + 1, SPATIAL_2 = (seq_len(n) - 1) %/% 8 + 1)
    rownames(xy) <- colnames(out)
    out[["spatial"]] <- SeuratObject::CreateDimReducObject(xy, key = "SPATIAL_", assay = "RNA")
    out[["slice"]] <- fake_visium(out)
    SeuratObject::DefaultAssay(out) <- "ferry.proportions"
    p <- Seurat::SpatialFeaturePlot(out, features = c("a", "b-c"))
    expect_s3_class(p, "ggplot")
    expect_identical(p[[1]]$data[colnames(out), "a"], unname(P["a", colnames(out)]))
    render_plot(p)
})

test_that("SCE: reducedDim FERRY, altExp ferry.predictions, colData", {
    skip_if_no_sce()
    skip_if_no_seurat()
    sce <- pbmc_sce_pair()$g1
    emb <- matrix(stats::rnorm(ncol(sce) * 2), ncol = 2, dimnames = list(rev(colnames(sce)), NULL))
    out <- expect_silent(scferry:::.ferry_add_embedding(sce, emb, list(model_id = "x")))
    rd <- SingleCellExperiment::reducedDim(out, "FERRY")
    expect_identical(rownames(rd), colnames(sce))
    expect_identical(S4Vectors::metadata(out)$ferry$model_id, "x")
    labels <- c("B_cell", "T cell")
    P <- fake_probs(rev(colnames(sce)), labels)
    out <- expect_silent(scferry:::.ferry_add_scores(out, P, "predictions"))
    ae <- SingleCellExperiment::altExp(out, "ferry.predictions")
    expect_identical(SummarizedExperiment::assayNames(ae), "probabilities")
    m <- SummarizedExperiment::assay(ae, "probabilities")
    expect_identical(rownames(m), c("B_cell", "T cell", "max"))
    expect_identical(colnames(m), colnames(sce))
    expect_equal(unname(colSums(m[1:2, ])), rep(1, ncol(sce)))
    cd <- SummarizedExperiment::colData(out)
    expect_true(all(cd$predicted.id %in% labels))
    expect_equal(cd$prediction.score.max, unname(m["max", ]))
    out2 <- scferry:::.ferry_add_scores(out, P, "proportions")
    expect_identical(SummarizedExperiment::assayNames(SingleCellExperiment::altExp(out2, "ferry.proportions")),
                     "proportions")
})
