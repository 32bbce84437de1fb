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

# obsm[key] of dataset `n` in the live Python model behind an integration record (cells x k).
model_obsm <- function(rec, n, key) {
    ad <- reticulate::py_to_r(scferry:::.ferry$models[[rec$model_id]]$model$adatas)[[n]]
    scferry:::.ferry_read_obsm(ad, key)
}

# Run R code in a fresh R process (for checks about Python start-up); returns its output lines.
# The child inherits none of this process's interpreter settings; `env` ("NAME=value") sets some.
run_fresh_r <- function(code, env = character()) {
    f <- tempfile(fileext = ".R")
    writeLines(code, f)
    unset <- c("RETICULATE_PYTHON", "RETICULATE_PYTHON_ENV", "SCFERRY_VENV")
    args <- c(rbind("-u", unset), env, file.path(R.home("bin"), "Rscript"), "--vanilla", f)
    suppressWarnings(system2("env", args, stdout = TRUE, stderr = TRUE))
}

# ferry_python_ok() in a fresh R process: its answer and whether it started Python there.
fresh_python_ok <- function(env = character()) {
    out <- run_fresh_r(c(
        "ok <- scferry::ferry_python_ok()",
        "cat(sprintf('%s=%s\\n', c('OK', 'REASON', 'PY', 'SRC', 'INIT'),",
        "    c(isTRUE(ok), attr(ok, 'reason'), attr(ok, 'python'), c(attr(ok, 'source'), '')[1L],",
        "      reticulate::py_available(initialize = FALSE))), sep = '')"), env)
    field <- function(k) sub(paste0("^", k, "="), "", grep(paste0("^", k, "="), out, value = TRUE)[1L])
    list(ok = identical(field("OK"), "TRUE"), reason = field("REASON"), python = field("PY"),
         source = field("SRC"), init = field("INIT"), out = paste(out, collapse = "\n"))
}

# An executable stand-in for a Python interpreter that prints `lines` and exits with `status`.
fake_python <- function(lines = "OK 3.11.7", status = 0L) {
    d <- tempfile("fakepy")
    dir.create(file.path(d, "bin"), recursive = TRUE)
    py <- file.path(d, "bin", "python")
    writeLines(c("#!/bin/sh", paste0("echo '", lines, "'"), paste("exit", status)), py)
    Sys.chmod(py, "0755")
    py
}

# A value for R_USER_CONFIG_DIR whose set-up record names `python` (R_user_dir adds "R/<pkg>").
record_dir <- function(python) {
    d <- tempfile("rconfig")
    dir.create(file.path(d, "R", "scferry"), recursive = TRUE)
    writeLines(python, file.path(d, "R", "scferry", "python"))
    d
}

# Skip while the scferry Python package lacks `name` (functions other work is adding); the test
# then runs as soon as the Python side has it.
skip_unless_python_has <- function(name) {
    sf <- scferry:::.ferry_require_python()
    if (!reticulate::py_has_attr(sf, name)) {
        skip(sprintf("scferry.%s() is not in the scferry Python package yet; this test runs once it is", name))
    }
}

# A blank Visium image for spots whose array positions are the reduction "spatial" (the PDAC ST
# data have no tissue image), so that SpatialFeaturePlot can draw them.
fake_visium <- function(obj, px = 10) {
    xy <- SeuratObject::Embeddings(obj, "spatial")
    coords <- data.frame(tissue = 1L, row = as.integer(xy[, 2]), col = as.integer(xy[, 1]),
                         imagerow = xy[, 2] * px, imagecol = xy[, 1] * px, row.names = rownames(xy))
    img <- array(1, dim = c(ceiling(max(coords$imagerow)) + px, ceiling(max(coords$imagecol)) + px, 3))
    methods::new("VisiumV1", image = img, coordinates = coords, spot.radius = 0.02,
                 scale.factors = Seurat::scalefactors(spot = px, fiducial = px, hires = 1, lowres = 1),
                 assay = SeuratObject::DefaultAssay(obj), key = "slice_")
}

# Draw a ggplot/patchwork on a null device (catches errors raised only when rendering).
render_plot <- function(p) {
    grDevices::pdf(NULL)
    on.exit(grDevices::dev.off())
    print(p)
    invisible(TRUE)
}
