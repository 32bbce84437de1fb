# Shared fixtures. Integrations are cached per test run (they are the slow part).

# Torch on a 2-core CI machine shared with other jobs: one thread is many times faster.
if (is.null(getOption("scferry.threads")) && !nzchar(Sys.getenv("SCFERRY_THREADS"))) {
    options(scferry.threads = 1L)
}

.fx <- new.env(parent = emptyenv())

skip_if_no_python <- function() {
    ok <- scferry::ferry_python_ok()
    if (!isTRUE(ok)) skip(paste("scferry Python environment not usable:", attr(ok, "reason")))
}

skip_if_no_seurat <- function() {
    skip_if_not_installed("SeuratObject")
    skip_if_not_installed("Seurat")
}

skip_if_no_sce <- function() {
    skip_if_not_installed("SingleCellExperiment")
    skip_if_not_installed("SummarizedExperiment")
    skip_if_not_installed("S4Vectors")
}

# pbmc_small split by its `groups` column into two Seurat objects (g1, g2).
pbmc_pair <- function() {
    data("pbmc_small", package = "SeuratObject", envir = environment())
    pbmc_small <- suppressMessages(suppressWarnings(SeuratObject::UpdateSeuratObject(pbmc_small)))
    list(g1 = subset(pbmc_small, subset = groups == "g1"), g2 = subset(pbmc_small, subset = groups == "g2"))
}

pbmc_sce_pair <- function() {
    lapply(pbmc_pair(), function(o) suppressWarnings(Seurat::as.SingleCellExperiment(o)))
}

# The PDAC demo pair (scRNA with obs cell_type, ST spots). The shipped demo files when present;
# otherwise the full PDAC-A files from SCFERRY_SHARED_DATA (default /work/shared/data), with the scRNA
# cells subsampled (every 3rd cell) to keep the tests quick.
pdac_files <- function() {
    sc <- scferry::ferry_example_data("scrna", must_exist = FALSE)
    st <- scferry::ferry_example_data("st", must_exist = FALSE)
    if (!is.na(sc) && !is.na(st)) return(list(scrna = sc, st = st, subsample = FALSE))
    d <- Sys.getenv("SCFERRY_SHARED_DATA", "/work/shared/data")
    sc <- file.path(d, "pdac_a_scrna.h5ad")
    st <- file.path(d, "pdac_a_st.h5ad")
    if (!file.exists(sc) || !file.exists(st)) skip("PDAC demo data not found (set SCFERRY_EXTDATA)")
    list(scrna = sc, st = st, subsample = TRUE)
}

pdac_objects <- function(as = c("Seurat", "SingleCellExperiment")) {
    as <- match.arg(as)
    key <- paste0("pdac_", as)
    if (is.null(.fx[[key]])) {
        f <- pdac_files()
        sc <- scferry::ferry_read_h5ad(f$scrna, as = as)
        st <- scferry::ferry_read_h5ad(f$st, as = as)
        if (f$subsample) sc <- sc[, seq(1L, ncol(sc), by = 3L)]
        .fx[[key]] <- list(rna = sc, st = st)
    }
    .fx[[key]]
}

pdac_integrated <- function(as = c("Seurat", "SingleCellExperiment")) {
    as <- match.arg(as)
    key <- paste0("pdac_int_", as)
    if (is.null(.fx[[key]])) {
        .fx[[key]] <- scferry::ferry_integrate(pdac_objects(as), method = "uniport", max_iter = 30,
                                               progress = FALSE, model_dir = tempfile("models"))
    }
    .fx[[key]]
}

pdac_transferred <- function(as = c("Seurat", "SingleCellExperiment")) {
    as <- match.arg(as)
    key <- paste0("pdac_tr_", as)
    if (is.null(.fx[[key]])) {
        objs <- pdac_integrated(as)
        .fx[[key]] <- scferry::ferry_transfer(objs$rna, objs$st, label = "cell_type")
    }
    .fx[[key]]
}

# Run R code in a fresh R process (for checks about Python start-up); returns its output lines.
run_fresh_r <- function(code, env = character()) {
    f <- tempfile(fileext = ".R")
    writeLines(code, f)
    out <- suppressWarnings(system2(file.path(R.home("bin"), "Rscript"), c("--vanilla", f),
                                    stdout = TRUE, stderr = TRUE, env = env))
    out
}
