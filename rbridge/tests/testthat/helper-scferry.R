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

# The repository this package was installed from (inst/test_r.sh sets SCFERRY_REPO; else the
# checkout around rbridge/tests/testthat).
repo_root <- function() {
    r <- Sys.getenv("SCFERRY_REPO")
    if (nzchar(r)) return(r)
    normalizePath(file.path(testthat::test_path(), "..", "..", ".."), mustWork = FALSE)
}

# A real-data fixture shipped in the repository (tests/data: small subsets of the public datasets,
# provenance in tests/data/README.md), the same files the Python quality tests use.
fixture_file <- function(name) {
    f <- file.path(repo_root(), "tests", "data", name)
    if (!file.exists(f)) skip(sprintf("fixture %s not found (run the tests from a checkout, or set SCFERRY_REPO)", name))
    f
}

# The full shared data folder: SCFERRY_SHARED_DATA, or shared/data beside the checkout.
shared_data_dir <- function() {
    d <- Sys.getenv("SCFERRY_SHARED_DATA")
    if (nzchar(d)) d else file.path(dirname(repo_root()), "shared", "data")
}

# The PDAC demo pair (scRNA with obs cell_type, ST spots). The shipped demo files when present;
# otherwise the full PDAC-A files from the shared data folder, with the scRNA cells subsampled
# (every 3rd cell) to keep the tests quick.
pdac_files <- function() {
    sc <- scferry::ferry_example_data("scrna", must_exist = FALSE)
    st <- scferry::ferry_example_data("st", must_exist = FALSE)
    if (!is.na(sc) && !is.na(st)) return(list(scrna = sc, st = st, subsample = FALSE))
    d <- shared_data_dir()
    sc <- file.path(d, "pdac_a_scrna.h5ad")
    st <- file.path(d, "pdac_a_st.h5ad")
    if (!file.exists(sc) || !file.exists(st)) skip("PDAC demo data not found (set SCFERRY_EXTDATA or SCFERRY_SHARED_DATA)")
    list(scrna = sc, st = st, subsample = TRUE)
}

# ---- baselines for the quality tests (computed in the same test, on the same cells)

# FOSCTTM (fraction of samples closer than the true match; rows of a and b are the same cells):
# 0 = every cell's own match is its nearest, 0.5 = random.
foscttm <- function(a, b) {
    d <- as.matrix(stats::dist(rbind(a, b)))[seq_len(nrow(a)), nrow(a) + seq_len(nrow(b))]
    n <- nrow(a)
    (mean(sweep(d, 1, diag(d), "<")) * n / (n - 1) + mean(sweep(d, 2, diag(d), "<")) * n / (n - 1)) / 2
}

# log1p(counts per 10,000), scaled, first `k` principal components (cells x k); counts genes x cells.
log_pca <- function(counts, k = 20L) {
    x <- as.matrix(counts)
    x <- log1p(t(t(x) / pmax(colSums(x), 1)) * 1e4)
    x <- x[apply(x, 1L, stats::sd) > 0, , drop = FALSE]
    stats::prcomp(t(x), center = TRUE, scale. = TRUE, rank. = k)$x
}

# CCA of two views of the same cells (paired baseline): canonical scores of each view.
cca_scores <- function(a, b, k = 10L) {
    cc <- stats::cancor(a, b)
    k <- min(k, ncol(cc$xcoef), ncol(cc$ycoef))
    list(a = scale(a, cc$xcenter, FALSE) %*% cc$xcoef[, seq_len(k)],
         b = scale(b, cc$ycenter, FALSE) %*% cc$ycoef[, seq_len(k)])
}

# Mean fraction of each cell's k nearest neighbours (in emb) that share its label (NA labels are
# neither counted nor used as neighbours).
same_label_fraction <- function(emb, labels, k = 15L) {
    ok <- !is.na(labels)
    emb <- emb[ok, , drop = FALSE]
    labels <- labels[ok]
    d <- as.matrix(stats::dist(emb))
    diag(d) <- Inf
    nn <- t(apply(d, 1L, function(r) order(r)[seq_len(k)]))
    mean(labels[nn] == labels[row(nn)])
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
