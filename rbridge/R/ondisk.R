# Datasets too large to hold in R: paths to on-disk AnnData (.h5ad / .zarr), read by Python in
# chunks (scferry.ondisk). Results come back as matrices keyed by cell name.

.ferry_is_paths <- function(x) {
    (is.character(x) && length(x) >= 1L) ||
        (is.list(x) && length(x) >= 1L && all(vapply(x, function(v) is.character(v) && length(v) == 1L, TRUE)))
}

.ferry_check_paths <- function(paths, what, named = TRUE) {
    p <- unlist(paths, use.names = TRUE)
    if (anyNA(p) || !all(nzchar(p))) .ferry_stop(what, " must be file paths; got NA or an empty string")
    if (named && length(p) > 1L && (is.null(names(p)) || !all(nzchar(names(p))) || anyDuplicated(names(p)))) {
        .ferry_stop(what, " must be named by dataset, e.g. c(rna = 'rna.h5ad', atac = 'atac.h5ad')")
    }
    bad <- !grepl("\\.(h5ad|zarr)/?$", p, ignore.case = TRUE)
    if (any(bad)) {
        .ferry_stop(what, ": ", .ferry_list(p[bad]), " is not an .h5ad file or .zarr store; write the data with ",
                    "anndata (Python) or zellkonverter::writeH5AD() (R), or pass Seurat / SingleCellExperiment objects")
    }
    missing <- !file.exists(p)
    if (any(missing)) .ferry_stop(what, ": no such file ", .ferry_list(p[missing]))
    out <- normalizePath(p)
    names(out) <- names(p)
    out
}

# ferry_integrate() with paths: scferry.integrate() reads the stores in chunks; each store gets
# obsm/X_scferry written into it. Returns a named list of matrices (cells x latent, cell names as
# rownames), with attribute "ferry" (the record ferry_project() uses).
.ferry_integrate_paths <- function(paths, method, batch, layer, params, seed, progress, model_dir, verbose) {
    p <- .ferry_check_paths(paths, "objects", named = is.null(batch))
    if (is.null(batch) && length(p) < 2L) {
        .ferry_stop("one path integrates several datasets only with batch = the obs column naming them; ",
                    "or give several paths, e.g. c(rna = 'rna.h5ad', st = 'st.h5ad')")
    }
    if (!is.null(layer) && (!is.character(layer) || length(layer) != 1L)) .ferry_stop("layer must be one string or NULL")
    if (!is.numeric(seed) || length(seed) != 1L || is.na(seed)) .ferry_stop("seed must be one number")
    model_dir <- model_dir %||% tempdir()
    if (!dir.exists(model_dir) && !dir.create(model_dir, recursive = TRUE, showWarnings = FALSE)) {
        .ferry_stop("cannot create model_dir '", model_dir, "'")
    }
    sf <- .ferry_require_python()
    data <- if (length(p) == 1L && !is.null(batch)) p[[1L]] else
        reticulate::py_dict(names(p), unname(as.list(p)), convert = FALSE)
    args <- c(list(data, method = method, seed = as.integer(seed), progress = isTRUE(progress),
                   batch_key = batch, layer = layer), params)
    args <- args[!vapply(args, is.null, TRUE)]
    model <- .ferry_call(sf$integrate, args, paste0("scferry.integrate(method = '", method, "') on ",
                                                   length(p), " on-disk store(s)"))
    names_py <- unlist(.ferry$bridge$model_datasets_names(model))
    embs <- lapply(names_py, function(n) {
        parts <- .ferry_py(.ferry$bridge$dataset_embedding(model, n), sprintf("reading the embedding of '%s'", n))
        e <- parts$values
        if (!is.matrix(e)) e <- matrix(e, ncol = 1L)
        rownames(e) <- unlist(parts$obs_names)
        e
    })
    names(embs) <- names_py
    id <- .ferry_new_id()
    path <- file.path(normalizePath(model_dir), paste0("scferry_model_", id, ".scferry"))
    saved <- tryCatch({ model$save(path); path }, error = function(e) NA_character_)
    rec <- list(model_id = id, method = method, path = saved, datasets = names_py, stores = p,
                n_cells = vapply(embs, nrow, 0L), layer = layer, batch = batch,
                created = format(Sys.time(), "%Y-%m-%d %H:%M:%S"), scferry_version = .ferry_py_version())
    .ferry$models[[id]] <- list(model = model, datasets = names_py, cells = NULL, record = rec)
    if (isTRUE(verbose)) {
        message("ferry_integrate: method '", method, "' fitted on ",
                paste0("'", names_py, "' (", vapply(embs, nrow, 0L), " cells)", collapse = ", "),
                " read from disk; obsm['X_scferry'] written into ", .ferry_list(unique(p)))
    }
    structure(embs, ferry = rec)
}

# ferry_project() of a store: scferry.project(model, path, dataset) reads, preprocesses and encodes
# it in chunks and writes obsm/X_scferry into it; the embedding comes back keyed by cell.
.ferry_project_path <- function(query, reference, dataset, layer) {
    p <- .ferry_check_paths(query, "query", named = FALSE)
    if (length(p) != 1L) .ferry_stop("query must be one path")
    rec <- attr(reference, "ferry")
    if (is.null(rec)) rec <- .ferry_record(reference, "reference")
    if (is.null(dataset)) dataset <- rec$dataset
    if (is.null(dataset) && length(rec$datasets) == 1L) dataset <- rec$datasets
    if (!is.character(dataset) || length(dataset) != 1L || !dataset %in% rec$datasets) {
        .ferry_stop("dataset must name the training dataset the query cells match, one of ", .ferry_list(rec$datasets))
    }
    sf <- .ferry_require_fun("project")
    model <- .ferry_model_any(rec)
    parts <- .ferry_call(.ferry$bridge_raw$project_path, list(model, p[[1L]], dataset, layer = layer),
                         sprintf("scferry.project('%s', dataset = '%s')", basename(p[[1L]]), dataset))
    parts <- reticulate::py_to_r(parts)
    e <- parts$values
    if (!is.matrix(e)) e <- matrix(e, ncol = 1L)
    rownames(e) <- unlist(parts$obs_names)
    e
}
