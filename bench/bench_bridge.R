# Conversion overhead of the scferry R bridge: seconds per 10,000 cells for moving data between R
# and Python, on real data resampled to 10,000 cells.
#
#   Rscript bench/bench_bridge.R [reps]      (run from the repository root; needs the installed
#                                             R package and the scferry Python environment)
#
# Datasets (from SCFERRY_SHARED_DATA, default /work/shared/data): PDAC-A inDrop scRNA-seq
# (19,736 genes; 1,926 cells resampled with replacement to 10,000) and SNARE-seq cortex RNA
# (1,677 genes; 10,309 cells subsampled to 10,000). Each step is timed `reps` times (default 3);
# the table shows the median.
#
# Steps
#   R->Py counts (bridge)     dgCMatrix -> AnnData (CSR float32), what ferry_integrate() sends
#   R->Py counts (r_to_py)    reticulate's own dgCMatrix -> scipy CSC, then .T.tocsr().astype(float32)
#   Py->R embedding           obsm["X_scferry"] (cells x 16) -> R matrix
#   Py->R probabilities       transfer_labels() DataFrame (cells x 15) -> R matrix
#   write-back Seurat         DimReduc "ferry" + assay "ferry.predictions" + metadata
#   write-back SCE            reducedDim "FERRY" + altExp "ferry.predictions" + colData
#   Py->R counts (h5ad)       ferry_read_h5ad(): anndata.read_h5ad + arrays -> dgCMatrix (+ Seurat)
#   h5ad read alone           anndata.read_h5ad of the same file in Python (part of the line above)

suppressPackageStartupMessages({
    library(scferry)
    library(Matrix)
})
options(width = 160)
args <- commandArgs(trailingOnly = TRUE)
reps <- if (length(args)) as.integer(args[1]) else 3L
ok <- ferry_python_ok()
if (!isTRUE(ok)) stop(attr(ok, "reason"))
scferry:::.ferry_require_python()
bridge <- scferry:::.ferry$bridge
np <- reticulate::import("numpy", convert = FALSE)
sp <- reticulate::import("scipy.sparse", convert = FALSE)
ad <- reticulate::import("anndata", convert = FALSE)
shared <- Sys.getenv("SCFERRY_SHARED_DATA", "/work/shared/data")
n_cells <- 10000L

time_it <- function(f) {
    t <- numeric(reps)
    for (r in seq_len(reps)) {
        gc(FALSE)
        t[r] <- system.time(f())[["elapsed"]]
    }
    stats::median(t)
}

load_counts <- function(file) {
    # read through the bridge itself (also the h5ad -> R path being measured below)
    s <- ferry_read_h5ad(file.path(shared, file), as = "SingleCellExperiment")
    m <- SummarizedExperiment::assay(s, "counts")
    set.seed(1)
    idx <- if (ncol(m) >= n_cells) sort(sample.int(ncol(m), n_cells)) else sample.int(ncol(m), n_cells, TRUE)
    m <- m[, idx]
    colnames(m) <- sprintf("cell%05d", seq_len(ncol(m)))
    m
}

rows <- list()
add <- function(dataset, step, m, secs) {
    rows[[length(rows) + 1L]] <<- data.frame(
        dataset = dataset, step = step, cells = ncol(m), genes = nrow(m), nnz = length(m@x),
        seconds = secs, s_per_10k = secs * 1e4 / ncol(m), check.names = FALSE)
}

for (ds in list(c("PDAC scRNA (resampled)", "pdac_a_scrna.h5ad"),
                c("SNARE cortex RNA (subsampled)", "snare_cortex_rna.h5ad"))) {
    if (!file.exists(file.path(shared, ds[2]))) {
        message("skipping ", ds[1], ": ", ds[2], " not found")
        next
    }
    m <- load_counts(ds[2])
    name <- ds[1]
    message(sprintf("%s: %d cells x %d genes, %d non-zeros", name, ncol(m), nrow(m), length(m@x)))

    add(name, "R->Py counts (bridge)", m, time_it(function() scferry:::.ferry_anndata(m)))
    add(name, "R->Py counts (r_to_py)", m, time_it(function() {
        x <- reticulate::r_to_py(m)
        x$T$tocsr()$astype(np$float32)
    }))

    a <- scferry:::.ferry_anndata(m)
    set.seed(2)
    emb <- matrix(stats::rnorm(ncol(m) * 16), ncol = 16)
    bridge$set_obsm(a, "X_scferry", emb)
    add(name, "Py->R embedding (16 dims)", m, time_it(function() bridge$get_obsm(a, "X_scferry")))

    labels <- paste("type", LETTERS[1:15])
    pr <- matrix(stats::runif(ncol(m) * 15), ncol = 15)
    pr <- pr / rowSums(pr)
    pd <- reticulate::import("pandas", convert = FALSE)
    df <- pd$DataFrame(np$asarray(pr), index = colnames(m), columns = labels)
    add(name, "Py->R probabilities (15 labels)", m, time_it(function() bridge$frame_parts(df)))

    # write-back into objects (the same code ferry_integrate()/ferry_transfer() run)
    parts <- bridge$get_obsm(a, "X_scferry")
    E <- parts$values
    rownames(E) <- unlist(parts$obs_names)
    P <- t(pr)
    dimnames(P) <- list(labels, colnames(m))
    if (requireNamespace("SeuratObject", quietly = TRUE)) {
        so <- SeuratObject::CreateSeuratObject(counts = m)
        add(name, "write-back Seurat", m, time_it(function() {
            o <- scferry:::.ferry_add_embedding(so, E, list(model_id = "bench"))
            scferry:::.ferry_add_scores(o, P, "predictions")
        }))
    }
    sce <- SingleCellExperiment::SingleCellExperiment(list(counts = m))
    add(name, "write-back SCE", m, time_it(function() {
        o <- scferry:::.ferry_add_embedding(sce, E, list(model_id = "bench"))
        scferry:::.ferry_add_scores(o, P, "predictions")
    }))

    f <- tempfile(fileext = ".h5ad")
    a$write_h5ad(f)
    add(name, "Py->R counts (ferry_read_h5ad, SCE)", m,
        time_it(function() ferry_read_h5ad(f, as = "SingleCellExperiment")))
    if (requireNamespace("SeuratObject", quietly = TRUE)) {
        add(name, "Py->R counts (ferry_read_h5ad, Seurat)", m, time_it(function() ferry_read_h5ad(f)))
    }
    add(name, "  of which anndata.read_h5ad", m, time_it(function() ad$read_h5ad(f)))
    unlink(f)
}

tab <- do.call(rbind, rows)
tab$seconds <- round(tab$seconds, 3)
tab$s_per_10k <- round(tab$s_per_10k, 3)
cat(sprintf("\nscferry R bridge conversion overhead (median of %d runs; R %s, reticulate %s, %s)\n\n",
            reps, getRversion(), utils::packageVersion("reticulate"),
            sub("\n.*", "", reticulate::py_config()$version_string)))
print(tab, row.names = FALSE, right = FALSE)
