#' Integrate single-cell datasets with scferry
#'
#' Sends the counts of each dataset to the scferry Python package (sparse, never densified), runs
#' \code{scferry.integrate()} and writes the joint embedding back into every object: a Seurat
#' \code{DimReduc} named \code{"ferry"} (key \code{FERRY_}, columns \code{FERRY_1}, ...) or a
#' SingleCellExperiment \code{reducedDim(sce, "FERRY")}, rows in the object's cell order. Downstream
#' Seurat/Bioconductor functions use it like any reduction, e.g.
#' \code{Seurat::RunUMAP(obj, reduction = "ferry", dims = 1:k)}.
#'
#' Each object also gets a small record of the fit (\code{obj@misc$ferry} or
#' \code{S4Vectors::metadata(sce)$ferry}: model id, dataset name, method, path of the saved model),
#' which \code{\link{ferry_transfer}} uses to find the model. The fitted Python model stays alive in
#' this R session and is also saved to \code{model_dir}, so objects saved with \code{saveRDS} and read
#' again in a new session still find it.
#'
#' Only the counts are sent to Python (plus the batch column when \code{batch} is used, and the
#' \code{label_key} column for methods trained with labels, e.g. \code{method = "minnet"}); the cell
#' metadata stays in R. All input checks run before Python starts, and the objects you pass are
#' never modified (R objects are copied on change): the results are in the returned objects.
#'
#' @param objects A named list of Seurat objects, or a named list of SingleCellExperiment objects
#'   (the names are the dataset names); or one object together with \code{batch}.
#' @param method Integration method; one of the names \code{scferry.available_methods()} returns in
#'   Python (e.g. \code{"uniport"}).
#' @param batch For a single object: the cell-metadata column that names the dataset of each cell.
#' @param assay Seurat: the assay to read (default \code{DefaultAssay(obj)}). SingleCellExperiment:
#'   \code{NULL} for the main experiment, or the name of an \code{altExp}.
#' @param layer Seurat: the layer (slot) holding raw counts (\code{"counts"}). SingleCellExperiment:
#'   the assay holding raw counts (\code{"counts"}).
#' @param ... Parameters passed to \code{scferry.integrate()} in Python: training settings
#'   (\code{max_iter}, \code{lr}, \code{batch_size}, \code{device}, \code{reference} (a dataset name),
#'   \code{preprocess}) and method hyper-parameters (e.g. \code{n_latent = 16}). Whole numbers are
#'   sent as Python \code{int}; wrap a value in \code{I()} to send it unchanged.
#' @param seed Random seed for Python (the R random stream is not used or changed).
#' @param progress Show Python's progress bar.
#' @param model_dir Folder for the saved model file (default \code{tempdir()}, which is deleted when
#'   the R session ends: pass a lasting folder to use the model in later sessions).
#' @return The objects, same structure as given (a named list, or one object), each with the
#'   embedding and the record added.
#' @seealso \code{\link{ferry_transfer}}, \code{\link{ferry_python_ok}}
#' @examples
#' \dontrun{
#' library(Seurat)
#' objs <- ferry_integrate(list(rna = rna, atac = atac), method = "uniport")
#' rna <- RunUMAP(objs$rna, reduction = "ferry", dims = 1:16)
#' }
#' @export
ferry_integrate <- function(objects, method = "uniport", batch = NULL, assay = NULL, layer = "counts",
                            ..., seed = 0L, progress = TRUE, model_dir = NULL) {
    if (!is.character(method) || length(method) != 1L || is.na(method)) {
        .ferry_stop("method must be one string, e.g. 'uniport'")
    }
    inp <- .ferry_inputs(objects, batch)
    for (cls in inp$cls) {
        .ferry_need(if (cls == "Seurat") "SeuratObject" else "SingleCellExperiment", "for these objects")
    }
    mats <- .ferry_dataset_matrices(inp, assay, layer)
    params <- .ferry_method_params(list(...))
    if (!is.numeric(seed) || length(seed) != 1L || is.na(seed)) .ferry_stop("seed must be one number")
    model_dir <- model_dir %||% tempdir()
    if (!dir.exists(model_dir) && !dir.create(model_dir, recursive = TRUE, showWarnings = FALSE)) {
        .ferry_stop("cannot create model_dir '", model_dir, "'")
    }

    sf <- .ferry_require_python()
    methods_ok <- .ferry_py(unlist(reticulate::py_to_r(sf$available_methods())), "available_methods()")
    if (!method %in% methods_ok) {
        .ferry_stop("unknown method '", method, "'; available methods: ", .ferry_list(methods_ok))
    }
    labels <- if (!is.null(params$label_key)) .ferry_dataset_labels(inp, mats, params$label_key)
    adatas <- lapply(mats, .ferry_anndata)
    for (n in names(labels)) {
        f <- factor(labels[[n]])
        .ferry$bridge$set_obs_categorical(adatas[[n]], params$label_key, as.integer(f) - 1L, levels(f))
    }
    pydict <- reticulate::py_dict(names(adatas), unname(adatas), convert = FALSE)
    args <- c(list(pydict, method = method, seed = as.integer(seed), progress = isTRUE(progress)), params)
    model <- .ferry_py(do.call(sf$integrate, args), paste0("scferry.integrate(method = '", method, "')"))

    # one matrix per dataset: paired datasets share cell names but not coordinates
    embs <- lapply(adatas, .ferry_read_obsm, key = "X_scferry")
    gw <- .ferry_gw_record(model)
    if (!is.null(gw)) {
        message("scferry: the datasets share no features and no labels were given, so ", method,
                " aligned them with a Gromov-Wasserstein match of their geometries (", gw,
                "); pass gw_prior = FALSE for unguided OT, or label_key = for the cell-type prior")
        params$gw_record <- gw
    }

    id <- .ferry_new_id()
    path <- file.path(normalizePath(model_dir), paste0("scferry_model_", id, ".scferry"))
    saved <- tryCatch({
        model$save(path)
        path
    }, error = function(e) {
        .ferry_warn("the fitted model could not be saved to ", path, " (", .ferry_py_message(e),
                    "); it is usable in this R session only")
        NA_character_
    })
    .ferry$models[[id]] <- list(model = model, datasets = names(adatas))
    base <- list(model_id = id, method = method, path = saved, datasets = names(adatas),
                 assay = assay, layer = layer, batch = batch,
                 params = params, created = format(Sys.time(), "%Y-%m-%d %H:%M:%S"),
                 scferry_version = .ferry_py_version())

    if (inp$single) {
        obj <- inp$objects[[1L]]
        rec <- c(base, list(dataset = NULL))
        return(.ferry_add_embedding(obj, do.call(rbind, embs), rec))
    }
    out <- Map(function(obj, n) .ferry_add_embedding(obj, embs[[n]], c(base, list(dataset = n))),
               inp$objects, names(inp$objects))
    names(out) <- names(inp$objects)
    out
}

.ferry_new_id <- function() {
    # tempfile() names do not touch R's random number stream (.Random.seed)
    paste0(format(Sys.time(), "%Y%m%d%H%M%S"), "-", sub("^ferry", "", basename(tempfile("ferry"))))
}

.ferry_py_version <- function() {
    v <- tryCatch(reticulate::py_to_r(reticulate::py_get_attr(.ferry$sf, "__version__")),
                  error = function(e) NA_character_)
    as.character(v)
}

# AnnData (cells x genes, CSR float32) from a dgCMatrix (genes x cells), without densifying.
# (reticulate::np_array, not a plain vector: plain R vectors become Python lists, 10x slower.)
.ferry_anndata <- function(m) {
    .ferry$bridge$make_anndata(
        reticulate::np_array(m@x, dtype = "float32"), reticulate::np_array(m@i, dtype = "int32"),
        reticulate::np_array(m@p, dtype = "int64"), nrow(m), ncol(m),
        reticulate::np_array(colnames(m)), reticulate::np_array(rownames(m)))
}

# adata.obsm[key] as an R matrix (cells x k) with the cell names as rownames.
.ferry_read_obsm <- function(adata, key) {
    parts <- .ferry_py(.ferry$bridge$get_obsm(adata, key), sprintf("reading obsm['%s']", key))
    e <- parts$values
    if (!is.matrix(e)) e <- matrix(e, ncol = 1L)
    rownames(e) <- unlist(parts$obs_names)
    e
}

# The record ferry_integrate() stored in an object, or an error.
.ferry_record <- function(obj, objname) {
    if (!(.ferry_is_seurat(obj) || .ferry_is_sce(obj))) {
        .ferry_stop(objname, " must be a Seurat or SingleCellExperiment object; got ", class(obj)[1L])
    }
    rec <- if (.ferry_is_seurat(obj)) obj@misc$ferry else S4Vectors::metadata(obj)$ferry
    if (is.null(rec) || is.null(rec$model_id)) {
        .ferry_stop(objname, " was not integrated with scferry: run ferry_integrate() and pass the ",
                    "object it returned")
    }
    rec
}

# Dataset name of each cell of an integrated object.
.ferry_cell_datasets <- function(obj, rec, objname) {
    if (!is.null(rec$dataset)) return(rep(rec$dataset, ncol(obj)))
    if (!rec$batch %in% .ferry_coldata_names(obj)) {
        .ferry_stop(objname, " has lost its batch column '", rec$batch, "' that ferry_integrate() used")
    }
    as.character(.ferry_coldata(obj, rec$batch))
}

# The fitted model for a record: the live one, or reloaded from its file with AnnData objects rebuilt
# from the given integrated objects (named list dataset -> list(obj, cells)).
.ferry_model <- function(rec, pieces) {
    live <- .ferry$models[[rec$model_id]]
    if (!is.null(live)) return(live$model)
    if (is.null(rec$path) || is.na(rec$path) || !file.exists(rec$path)) {
        .ferry_stop("the scferry model ", rec$model_id, " is not in this R session and its saved file ",
                    "is gone (", rec$path %||% "none", "); models saved to tempdir() last one session: ",
                    "pass model_dir = to ferry_integrate() to keep them, or integrate again")
    }
    adatas <- lapply(names(pieces), function(n) {
        p <- pieces[[n]]
        m <- .ferry_counts(p$obj, rec$assay, rec$layer, "the object")[, p$cells, drop = FALSE]
        a <- .ferry_anndata(m)
        emb <- if (.ferry_is_seurat(p$obj)) {
            SeuratObject::Embeddings(p$obj, "ferry")
        } else SingleCellExperiment::reducedDim(p$obj, "FERRY")
        .ferry$bridge$set_obsm(a, "X_scferry", emb[p$cells, , drop = FALSE])
        a
    })
    pydict <- reticulate::py_dict(names(pieces), adatas, convert = FALSE)
    model <- .ferry_py(.ferry$sf$load(rec$path, adatas = pydict), paste0("scferry.load('", rec$path, "')"))
    .ferry$models[[rec$model_id]] <- list(model = model, datasets = names(pieces))
    model
}


# The Python fit's record of the Gromov-Wasserstein guidance (uniPort, diagonal mode without labels)
# as one line, or NULL when it was not used.
.ferry_gw_record <- function(model) {
    rec <- tryCatch(reticulate::py_to_r(model$params$get("gw_record")), error = function(e) NULL)
    if (!is.list(rec) || !isTRUE(rec$used)) return(NULL)
    paste0("metacells: ", paste(unlist(rec$n_metacells), collapse = " / "), ", kinds: ",
           paste(unlist(rec$kinds), collapse = " / "))
}
