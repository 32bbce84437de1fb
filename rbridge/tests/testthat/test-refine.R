# ferry_refine(): scBIOT OT refinement of a Seurat reduction / SCE reducedDim, written back as a
# new reduction.

pbmc_small_seurat <- function() {
    data("pbmc_small", package = "SeuratObject", envir = environment())
    suppressMessages(suppressWarnings(SeuratObject::UpdateSeuratObject(pbmc_small)))
}

# Mean fraction of each cell's k nearest neighbours that come from another batch.
other_batch_fraction <- function(emb, batch, k = 15L) {
    d <- as.matrix(stats::dist(emb))
    diag(d) <- Inf
    nn <- t(apply(d, 1L, function(r) order(r)[seq_len(k)]))
    mean(batch[nn] != batch[row(nn)])
}

test_that("ferry_refine writes a new Seurat reduction and leaves the input alone", {
    skip_if_no_python()
    skip_if_no_seurat()
    obj0 <- pbmc_small_seurat()
    before <- obj0
    # pbmc_small's "groups" are random, so its PCA is already mixed: by default the input competes
    # with the iterates and is kept, then centred within clusters, which raises its mixing
    # (centring = 0: returned as it is); keep_input = FALSE is the paper's selection (always an
    # iterate)
    expect_warning(kept <- ferry_refine(obj0, reduction = "pca", batch = "groups", max_iter = 3, seed = 1),
                   "input was kept and only centred within 8 clusters.*keep_input = FALSE",
                   class = "ferry_warning")
    rec <- kept@misc$ferry_refine[["ferry.refined"]]
    expect_true(rec$start_competed)
    expect_true(rec$input_mixing > 0.5)  # random groups: about as mixed as perfect mixing
    expect_identical(rec$best_iter, 0L)
    expect_identical(rec$centring_clusters, 8L)
    expect_gt(rec$centring_gain, 0)
    e_kept <- unname(SeuratObject::Embeddings(kept, "ferry.refined"))
    e_pca <- unname(SeuratObject::Embeddings(obj0, "pca"))
    expect_false(isTRUE(all.equal(e_kept, e_pca)))
    expect_lt(mean(abs(e_kept - e_pca)), 0.25 * mean(abs(sweep(e_pca, 2, colMeans(e_pca)))))
    expect_warning(same <- ferry_refine(obj0, reduction = "pca", batch = "groups", max_iter = 3,
                                        seed = 1, centring = 0),
                   "kept and returned unchanged", class = "ferry_warning")
    expect_equal(unname(SeuratObject::Embeddings(same, "ferry.refined")), e_pca, tolerance = 1e-6)
    obj <- ferry_refine(obj0, reduction = "pca", batch = "groups", max_iter = 3, seed = 1,
                        keep_input = FALSE)
    expect_identical(obj0, before)
    expect_true(all(c("pca", "ferry.refined") %in% SeuratObject::Reductions(obj)))
    e0 <- SeuratObject::Embeddings(obj, "pca")
    e <- SeuratObject::Embeddings(obj, "ferry.refined")
    expect_identical(dim(e), dim(e0))
    expect_identical(rownames(e), colnames(obj))
    expect_identical(colnames(e), paste0("FERRYREFINED_", seq_len(ncol(e))))
    expect_true(all(is.finite(e)))
    expect_false(isTRUE(all.equal(unname(e), unname(e0))))
    expect_identical(SeuratObject::Embeddings(obj, "pca"), SeuratObject::Embeddings(obj0, "pca"))
    rec <- obj@misc$ferry_refine[["ferry.refined"]]
    expect_identical(rec$reduction, "pca")
    expect_identical(rec$batch, "groups")
    expect_false(rec$start_competed)
    expect_true(rec$best_iter >= 1L && rec$best_iter <= 3L)
    expect_true(rec$trustworthiness > 0.5 && rec$trustworthiness <= 1)
    # same seed, same numbers
    again <- ferry_refine(obj0, reduction = "pca", batch = "groups", max_iter = 3, seed = 1,
                          keep_input = FALSE)
    expect_identical(SeuratObject::Embeddings(again, "ferry.refined"), e)
    # usable downstream like any reduction
    obj <- suppressWarnings(Seurat::RunUMAP(obj, reduction = "ferry.refined", dims = 1:5,
                                            n.neighbors = 10, verbose = FALSE))
    expect_identical(dim(SeuratObject::Embeddings(obj, "umap")), c(ncol(obj), 2L))
})

test_that("ferry_refine writes reducedDim 'FERRY.REFINED' on a SingleCellExperiment", {
    skip_if_no_python()
    skip_if_no_seurat()
    skip_if_no_sce()
    sce <- suppressWarnings(Seurat::as.SingleCellExperiment(pbmc_small_seurat()))
    out <- suppressWarnings(ferry_refine(sce, batch = "groups", name = "refined", max_iter = 2))
    expect_true("REFINED" %in% SingleCellExperiment::reducedDimNames(out))
    e <- SingleCellExperiment::reducedDim(out, "REFINED")
    expect_identical(dim(e), dim(SingleCellExperiment::reducedDim(sce, "PCA")))
    expect_identical(rownames(e), colnames(sce))
    expect_identical(S4Vectors::metadata(out)$ferry_refine$REFINED$reduction, "PCA")
    expect_identical(SingleCellExperiment::reducedDim(out, "PCA"), SingleCellExperiment::reducedDim(sce, "PCA"))
})

test_that("ferry_refine mixes the PDAC scRNA cells and ST spots in a Seurat PCA", {
    skip_if_no_python()
    skip_if_no_seurat()
    objs <- pdac_objects("Seurat")
    m <- suppressWarnings(merge(objs$rna, objs$st, add.cell.ids = c("rna", "st")))
    m$dataset <- ifelse(startsWith(colnames(m), "rna_"), "rna", "st")
    m <- suppressWarnings(Seurat::NormalizeData(m, verbose = FALSE))
    m <- Seurat::FindVariableFeatures(m, nfeatures = 1000, verbose = FALSE)
    m <- Seurat::ScaleData(m, verbose = FALSE)
    m <- Seurat::RunPCA(m, npcs = 20, verbose = FALSE)
    expect_warning(out <- ferry_refine(m, reduction = "pca", batch = "dataset"),
                   'pre-aligned first \\(prealign = "auto".*prealign = "none"', class = "ferry_warning")
    rec <- out@misc$ferry_refine[["ferry.refined"]]
    expect_gt(rec$centring_clusters, 0L)  # the last centring raises the mixing here and is applied
    expect_gt(rec$centring_gain, 0)
    expect_identical(rec$params, list())
    # the option for batches of different compositions: the pre-alignment's shift by unbalanced OT
    expect_warning(ot <- ferry_refine(m, reduction = "pca", batch = "dataset",
                                      prealign_shift = "ot", name = "ferry.ot"),
                   'pre-aligned first \\(prealign = "auto".*strength [0-9.]+\\)[^;]*\\.$',
                   class = "ferry_warning")
    expect_identical(ot@misc$ferry_refine[["ferry.ot"]]$params$prealign_shift, "ot")
    expect_gt(other_batch_fraction(SeuratObject::Embeddings(ot, "ferry.ot"), ot$dataset),
              other_batch_fraction(SeuratObject::Embeddings(ot, "pca"), ot$dataset) + 0.02)
    b <- out$dataset
    e0 <- SeuratObject::Embeddings(out, "pca")
    e1 <- SeuratObject::Embeddings(out, "ferry.refined")
    mixed0 <- other_batch_fraction(e0, b)
    mixed1 <- other_batch_fraction(e1, b)
    # baselines on the same cells: the input PCA, and a random embedding (mixed, no cell types).
    # Mixing goes up, and the scRNA cells' types stay about as together as in the PCA: a
    # collapsed or scrambled embedding, which also mixes, fails the second check.
    types <- ifelse(out$dataset == "rna", as.character(out$cell_type), NA)
    set.seed(1)
    rand <- matrix(stats::rnorm(length(e1)), nrow(e1))
    same0 <- same_label_fraction(e0, types)
    same1 <- same_label_fraction(e1, types)
    same_rand <- same_label_fraction(rand, types)
    message(sprintf("PDAC refine: other-dataset neighbours %.3f -> %.3f; same-type neighbours (scRNA) %.3f -> %.3f (random %.3f)",
                    mixed0, mixed1, same0, same1, same_rand))
    expect_gt(mixed1, mixed0 + 0.02)
    expect_gt(same1, same0 - 0.05)
    expect_gt(same1, same_rand + 0.1)
})

test_that("ferry_refine checks its inputs before Python and names the fix", {
    skip_if_no_seurat()
    obj <- pbmc_small_seurat()
    expect_error(ferry_refine(obj, reduction = "harmony", batch = "groups"),
                 "reduction 'harmony' is not in the object; available: 'pca', 'tsne'", class = "ferry_error")
    expect_error(ferry_refine(obj, batch = "sample"), "batch column 'sample' is not in the cell metadata",
                 class = "ferry_error")
    expect_error(ferry_refine(obj), "batch = '<metadata column>'", class = "ferry_error")
    one <- obj
    one$groups <- "g1"
    expect_error(ferry_refine(one, batch = "groups"), "single value", class = "ferry_error")
    na <- obj
    na$groups[3] <- NA
    expect_error(ferry_refine(na, batch = "groups"), "missing value", class = "ferry_error")
    expect_error(ferry_refine(obj, batch = "groups", name = "pca"), "never overwrites", class = "ferry_error")
    bad <- obj
    emb <- SeuratObject::Embeddings(bad, "pca")
    emb[2, 2] <- NaN
    bad[["pca"]] <- SeuratObject::CreateDimReducObject(embeddings = emb, key = "PC_", assay = "RNA")
    expect_error(ferry_refine(bad, batch = "groups"), "non-finite", class = "ferry_error")
    expect_error(ferry_refine(list(), batch = "groups"), "Seurat or SingleCellExperiment", class = "ferry_error")
})

test_that("ferry_refine passes Python's own errors through", {
    skip_if_no_python()
    skip_if_no_seurat()
    obj <- pbmc_small_seurat()
    expect_error(ferry_refine(obj, batch = "groups", reg_eps = 0.1), "unknown refine parameter",
                 class = "ferry_error")
    expect_error(ferry_refine(obj, batch = "groups", prealign_shift = "mean"),
                 "prealign_shift must be", class = "ferry_error")
    small <- obj
    small$groups <- c(rep("g1", 75), rep("g2", 5))
    expect_error(ferry_refine(small, batch = "groups"), "fewer cells than the 8 prototypes",
                 class = "ferry_error")
})
