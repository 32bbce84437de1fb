# MinNet (paired multiome Siamese network) from R: the same nuclei as two objects (RNA and ATAC
# gene activity of SNARE-seq cortex; the repository's fixture, tests/data), so cell names repeat
# across the objects by design (snare_paired(): helper-snare.R).

test_that("ferry_integrate(method = 'minnet') works on paired Seurat objects", {
    skip_if_no_python()
    skip_if_no_seurat()
    objs0 <- snare_paired("Seurat")
    before <- objs0
    objs <- ferry_integrate(objs0, method = "minnet", label_key = "cell_type", max_iter = 60,
                            n_specific_genes = 300, progress = FALSE, model_dir = tempfile("models"))
    expect_identical(objs0, before)
    expect_named(objs, c("rna", "atac"))
    for (n in names(objs)) {
        e <- SeuratObject::Embeddings(objs[[n]], "ferry")
        expect_identical(dim(e), c(ncol(objs0[[n]]), 32L))
        expect_identical(rownames(e), colnames(objs0[[n]]))
        expect_true(all(is.finite(e)))
        expect_identical(objs[[n]]@misc$ferry$method, "minnet")
    }
    # the two modalities of a nucleus land nearer each other than in the baselines computed here
    # on the same nuclei: CCA of the two modalities' PCAs (it is told the pairs, as MinNet is) and
    # a random embedding (0.5)
    er <- SeuratObject::Embeddings(objs$rna, "ferry")
    ea <- SeuratObject::Embeddings(objs$atac, "ferry")
    f <- foscttm(er, ea)
    cc <- cca_scores(log_pca(SeuratObject::GetAssayData(objs0$rna, slot = "counts")),
                     log_pca(SeuratObject::GetAssayData(objs0$atac, slot = "counts")))
    f_cca <- foscttm(cc$a, cc$b)
    set.seed(1)
    f_rand <- foscttm(matrix(stats::rnorm(length(er)), nrow(er)), matrix(stats::rnorm(length(ea)), nrow(ea)))
    message(sprintf("SNARE %d nuclei FOSCTTM: MinNet %.3f, CCA %.3f, random %.3f", nrow(er), f, f_cca, f_rand))
    expect_lt(f, f_rand - 0.2)
    expect_lt(f, f_cca)
})

test_that("ferry_integrate(method = 'minnet') works on paired SingleCellExperiment objects", {
    skip_if_no_python()
    skip_if_no_sce()
    objs <- ferry_integrate(snare_paired("SingleCellExperiment", 300L), method = "minnet",
                            label_key = "cell_type", max_iter = 30, n_specific_genes = 300,
                            progress = FALSE, model_dir = tempfile("models"))
    for (n in names(objs)) {
        e <- SingleCellExperiment::reducedDim(objs[[n]], "FERRY")
        expect_identical(dim(e), c(300L, 32L))
    }
})

test_that("minnet rejects unpaired objects with the Python side's message", {
    skip_if_no_python()
    skip_if_no_sce()
    # SCE, not Seurat: subsetting a Seurat object keeps its own cell order, so it cannot be reversed
    objs <- snare_paired("SingleCellExperiment", 300L)
    objs$atac <- objs$atac[, rev(colnames(objs$atac))]
    expect_error(ferry_integrate(objs, method = "minnet", label_key = "cell_type", progress = FALSE),
                 "same order")
})

test_that("minnet options pass through ferry_integrate and held-apart query objects are embedded with ferry_project", {
    skip_if_no_python()
    skip_if_no_sce()
    # 600 nuclei: 480 trained on (the pairing alone, InfoNCE objective), 120 held apart and
    # embedded one modality at a time as query objects
    objs <- snare_paired("SingleCellExperiment", 600L)
    held <- seq(5L, 600L, by = 5L)
    train <- lapply(objs, function(o) o[, -held])
    fit <- suppressWarnings(ferry_integrate(train, method = "minnet", objective = "infonce",
                                            temperature = 0.1, max_iter = 400, n_specific_genes = 1000,
                                            progress = FALSE, model_dir = tempfile("models"), verbose = FALSE))
    model <- scferry:::.ferry_model_any(S4Vectors::metadata(fit$rna)$ferry)
    expect_identical(reticulate::py_to_r(model$params$objective), "infonce")
    expect_null(reticulate::py_to_r(model$choices$labels$value))  # trained on the pairing alone
    q_rna <- ferry_project(objs$rna[, held], fit$rna)
    q_atac <- ferry_project(objs$atac[, held], fit$atac)
    er <- SingleCellExperiment::reducedDim(q_rna, "FERRY")
    ea <- SingleCellExperiment::reducedDim(q_atac, "FERRY")
    expect_identical(dim(er), c(length(held), 32L))
    expect_identical(S4Vectors::metadata(q_atac)$ferry_project$dataset, "atac")
    # held-apart nuclei: better than a random embedding of the same nuclei
    set.seed(1)
    f_rand <- foscttm(matrix(stats::rnorm(length(er)), nrow(er)), matrix(stats::rnorm(length(ea)), nrow(ea)))
    f <- foscttm(er, ea)
    message(sprintf("held-apart SNARE nuclei (ferry_project) FOSCTTM: MinNet InfoNCE %.3f, random %.3f", f, f_rand))
    expect_lt(f, f_rand - 0.1)
    # RNA of the held-apart nuclei imputed from their ATAC: MinNet has no decoder, so kNN
    imp <- suppressWarnings(ferry_impute(objs$atac[, held], target = "rna", reference = fit$atac, method = "knn"))
    m <- SummarizedExperiment::assay(SingleCellExperiment::altExp(imp, "ferry.imputed"), "logcounts")
    expect_identical(ncol(m), length(held))
    expect_true(all(is.finite(m)) && all(m >= 0))
    expect_error(ferry_impute(objs$atac[, held], target = "rna", reference = fit$atac, method = "decoder"),
                 "no dataset-specific decoders")
})
