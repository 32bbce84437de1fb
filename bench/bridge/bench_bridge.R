# Conversion overhead of the scferry R bridge: seconds per 10,000 cells for moving data between R
# and Python, on real data resampled to a given number of cells. Python's own work (training,
# transfer) is not timed: only what the bridge adds around it.
#
#   SCFERRY_THREADS=1 Rscript bench/bridge/bench_bridge.R [reps] [cells ...]   (from the repository root;
#   default: 3 reps, 10000 cells; needs the installed R package and the scferry Python environment)
#
# Datasets (SCFERRY_SHARED_DATA, default /work/shared/data): PDAC-A inDrop scRNA-seq (19,736 genes,
# 1,926 cells, ~1,660 non-zeros per cell) and SNARE-seq cortex RNA (1,677 genes, 10,309 cells, ~106
# non-zeros per cell), cells drawn with replacement (seed 1) to the requested number. Each step is
# timed `reps` times; the table shows the median and the fastest run (the better estimate when
# other jobs share the cores), both also as seconds per 10,000 cells.
#
# Steps, each the code the bridge runs:
#   R->Py Seurat / SCE     counts of the object (.ferry_counts: assay/layer -> dgCMatrix) to an
#                          AnnData (CSR float32, never dense), as ferry_integrate() sends them
#   R->Py r_to_py (ref.)   for comparison: reticulate's own dgCMatrix -> scipy CSC -> CSR float32
#   Py->R Seurat / SCE     a 16-dim embedding (obsm["X_scferry"]) and a 15-label prediction table
#                          (pandas DataFrame) read back and written into the object: DimReduc "ferry"
#                          + assay "ferry.predictions" + metadata (Seurat), reducedDim "FERRY" +
#                          altExp + colData (SCE), as ferry_integrate() + ferry_transfer() do
#   h5ad -> Seurat / SCE   ferry_read_h5ad() of the resampled counts (anndata.read_h5ad + rebuild)

suppressPackageStartupMessages({
    library(scferry)
    library(Matrix)
})
options(width = 160)
args <- commandArgs(trailingOnly = TRUE)
reps <- if (length(args)) as.integer(args[1]) else 3L
sizes <- if (length(args) > 1L) as.integer(args[-1]) else 10000L
ok <- ferry_python_ok()
if (!isTRUE(ok)) stop(attr(ok, "reason"))
scferry:::.ferry_require_python()
bridge <- scferry:::.ferry$bridge
np <- reticulate::import("numpy", convert = FALSE)
pd <- reticulate::import("pandas", convert = FALSE)
shared <- Sys.getenv("SCFERRY_SHARED_DATA", "/work/shared/data")
has_seurat <- requireNamespace("SeuratObject", quietly = TRUE)

time_it <- function(f) {
    t <- numeric(reps)
    for (r in seq_len(reps)) {
        gc(FALSE)
        t[r] <- system.time(f())[["elapsed"]]
    }
    c(median = stats::median(t), min = min(t))
}

rows <- list()
add <- function(dataset, step, m, secs) {
    rows[[length(rows) + 1L]] <<- data.frame(
        dataset = dataset, cells = ncol(m), genes = nrow(m), nnz = length(m@x), step = step,
        median_s = secs[["median"]], min_s = secs[["min"]], median_per_10k = secs[["median"]] * 1e4 / ncol(m),
        min_per_10k = secs[["min"]] * 1e4 / ncol(m), check.names = FALSE)
}

datasets <- list(c("PDAC scRNA", "pdac_a_scrna.h5ad"), c("SNARE RNA", "snare_cortex_rna.h5ad"))
for (ds in datasets) {
    file <- file.path(shared, ds[2])
    if (!file.exists(file)) {
        message("skipping ", ds[1], ": ", file, " not found")
        next
    }
    m0 <- SummarizedExperiment::assay(ferry_read_h5ad(file, as = "SingleCellExperiment"), "counts")
    for (n in sizes) {
        set.seed(1)
        m <- m0[, sample.int(ncol(m0), n, replace = TRUE)]
        colnames(m) <- sprintf("cell%06d", seq_len(n))
        name <- ds[1]
        message(sprintf("%s: %d cells x %d genes, %d non-zeros", name, ncol(m), nrow(m), length(m@x)))
        objs <- list(SCE = SingleCellExperiment::SingleCellExperiment(list(counts = m)))
        if (has_seurat) objs <- c(list(Seurat = suppressWarnings(SeuratObject::CreateSeuratObject(counts = m))), objs)

        # Python-side results to bring back: a 16-dim embedding on the AnnData, a label table
        a <- scferry:::.ferry_anndata(m)
        set.seed(2)
        bridge$set_obsm(a, "X_scferry", matrix(stats::rnorm(n * 16), ncol = 16))
        labels <- paste("type", LETTERS[1:15])
        pr <- matrix(stats::rexp(n * 15), ncol = 15)
        df <- pd$DataFrame(np$asarray(pr / rowSums(pr)), index = colnames(m), columns = labels)
        rec <- list(model_id = "bench")

        for (cls in names(objs)) {
            o <- objs[[cls]]
            add(name, paste("R->Py", cls), m, time_it(function() {
                scferry:::.ferry_anndata(scferry:::.ferry_counts(o, NULL, "counts", "the object"))
            }))
        }
        add(name, "R->Py r_to_py (ref.)", m, time_it(function() {
            reticulate::r_to_py(m)$T$tocsr()$astype(np$float32)
        }))
        for (cls in names(objs)) {
            o <- objs[[cls]]
            add(name, paste("Py->R", cls), m, time_it(function() {
                emb <- scferry:::.ferry_read_obsm(a, "X_scferry")
                P <- scferry:::.ferry_scores_matrix(df, o, "query")
                scferry:::.ferry_add_scores(scferry:::.ferry_add_embedding(o, emb, rec), P, "predictions")
            }))
        }
        f <- tempfile(fileext = ".h5ad")
        a$write_h5ad(f)
        for (cls in names(objs)) {
            as <- if (cls == "SCE") "SingleCellExperiment" else "Seurat"
            add(name, paste("h5ad ->", cls), m, time_it(function() ferry_read_h5ad(f, as = as)))
        }
        unlink(f)
        rm(objs, a, df, m)
        gc(FALSE)
    }
}

tab <- do.call(rbind, rows)
num <- c("median_s", "min_s", "median_per_10k", "min_per_10k")
tab[num] <- lapply(tab[num], round, 3)
cat(sprintf("\nscferry R bridge conversion overhead (%d runs per step; R %s, reticulate %s, Python %s, SCFERRY_THREADS=%s)\n\n",
            reps, getRversion(), utils::packageVersion("reticulate"),
            reticulate::py_config()$version, Sys.getenv("SCFERRY_THREADS", "unset")))
print(tab, row.names = FALSE, right = FALSE)
if (file.exists("/proc/loadavg")) cat("load average at the end (1, 5, 15 min):", readLines("/proc/loadavg"), "\n")
# Round trip per class: what ferry_integrate + ferry_transfer add around the Python work.
rt <- aggregate(cbind(median_per_10k, min_per_10k) ~ dataset + cells + cls,
                data = transform(subset(tab, grepl("^(R->Py|Py->R) (Seurat|SCE)$", step)),
                                 cls = sub(".* ", "", step)), FUN = sum)
cat("\nround trip (R->Py counts + Py->R embedding and predictions), seconds per 10k cells:\n")
print(rt[order(rt$dataset, rt$cells, rt$cls), ], row.names = FALSE, right = FALSE)
