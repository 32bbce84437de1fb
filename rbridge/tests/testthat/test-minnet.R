# MinNet (paired multiome Siamese network) from R: the same nuclei as two objects (RNA and ATAC
# gene activity of SNARE-seq cortex), so cell names repeat across the objects by design.

snare_paired <- function(as = c("Seurat", "SingleCellExperiment"), n = 600L) {
    as <- match.arg(as)
    d <- Sys.getenv("SCFERRY_SHARED_DATA", "/work/shared/data")
    f <- file.path(d, c("snare_cortex_rna.h5ad", "snare_cortex_atac_gene.h5ad"))
    if (!all(file.exists(f))) skip("SNARE-seq cortex data not found (set SCFERRY_SHARED_DATA)")
    rna <- scferry::ferry_read_h5ad(f[1], as = as)
    atac <- scferry::ferry_read_h5ad(f[2], as = as)
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
    # the two modalities of a nucleus land nearer each other than most other nuclei (FOSCTTM < 0.5)
    er <- SeuratObject::Embeddings(objs$rna, "ferry")
    ea <- SeuratObject::Embeddings(objs$atac, "ferry")
    d <- as.matrix(dist(rbind(er, ea)))[seq_len(nrow(er)), nrow(er) + seq_len(nrow(ea))]
    expect_lt(mean(sweep(d, 1, diag(d), "<")), 0.5)
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
