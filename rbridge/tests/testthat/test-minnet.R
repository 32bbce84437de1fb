# MinNet (paired multiome Siamese network) from R: the same nuclei as two objects (RNA and ATAC
# gene activity of SNARE-seq cortex; the repository's fixture, tests/data), so cell names repeat
# across the objects by design.

snare_paired <- function(as = c("Seurat", "SingleCellExperiment"), n = 600L) {
    as <- match.arg(as)
    rna <- scferry::ferry_read_h5ad(fixture_file("snare_cortex_rna.h5ad"), as = as)
    atac <- scferry::ferry_read_h5ad(fixture_file("snare_cortex_atac_gene.h5ad"), as = as)
    keep <- seq(1L, ncol(rna), length.out = n)
    list(rna = rna[, keep], atac = atac[, keep])
}

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
