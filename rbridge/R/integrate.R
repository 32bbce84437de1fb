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
#'   (the names are the dataset names); or one object together with \code{batch}. For data too
#'   large to hold in R: a named character vector of paths to on-disk AnnData stores
#'   (\code{c(rna = "rna.h5ad", st = "st.zarr")}, raw counts in \code{X} or \code{layer}, stored
#'   by cells), or one path with \code{batch}. Python reads them in chunks, never whole, and writes
#'   the embedding into each store (\code{obsm/X_scferry}); the value is then a named list of
#'   matrices, one per dataset (cells x latent, cell names as row names), whose attribute
#'   \code{"ferry"} is the record \code{\link{ferry_project}} takes as \code{reference}.
#' @param method Integration method; one of the names \code{scferry.available_methods()} returns in
#'   Python (e.g. \code{"uniport"}).
#' @param batch For a single object: the cell-metadata column that names the dataset of each cell.
#' @param assay Seurat: the assay to read (default \code{DefaultAssay(obj)}). SingleCellExperiment:
#'   \code{NULL} for the main experiment, or the name of an \code{altExp}. One name for all
#'   datasets, or one per dataset: named by dataset (\code{assay = c(rna = "RNA", adt = "ADT")})
#'   or in the order of \code{objects}. With one object and no \code{batch}, several assays make
#'   one dataset each, paired by cell (CITE-seq RNA + ADT, multiome RNA + ATAC in one Seurat
#'   object): the result is that object with reduction \code{"ferry"} (the mean of the datasets'
#'   embeddings of each cell) and \code{"ferry.<dataset>"} (each dataset's embedding).
#' @param layer Seurat: the layer (slot) holding raw counts (\code{"counts"}). SingleCellExperiment:
#'   the assay holding raw counts (\code{"counts"}).
#' @param ... Parameters passed to \code{scferry.integrate()} in Python: training settings
#'   (\code{max_iter}, \code{lr}, \code{weight_decay}, \code{batch_size}, \code{device}, \code{reference} (a dataset name),
#'   \code{preprocess}), distributed training (\code{devices = 2} training processes,
#'   \code{accelerator = "cpu"} or \code{"gpu"}, \code{strategy = "ddp"}; the processes are started
#'   from inside the call) and method hyper-parameters (e.g. \code{n_latent = 16}). Whole numbers are
#'   sent as Python \code{int} (in nested lists too); wrap a value in \code{I()} to send it
#'   unchanged. Vectors and lists keep their shape (a named list becomes a \code{dict}, a vector a
#'   \code{list}), except that a length-one vector becomes a scalar: write \code{list("CD3E")} for
#'   a one-element Python list (e.g. \code{specific_genes = list(st = list("CD3E"))}).
#' @param seed Random seed for Python (the R random stream is not used or changed).
#' @param progress Show Python's progress bar.
#' @param model_dir Folder for the saved model file (default \code{tempdir()}, which is deleted when
#'   the R session ends: pass a lasting folder to use the model in later sessions).
#' @param verbose Print a message saying what was fitted: the datasets and their sizes, the choices
#'   made for you (e.g. \code{mode = 'horizontal'} and why, as the model records them) and how many
#'   genes the datasets share. Python's warnings are R warnings (class \code{"ferry_warning"})
#'   whatever \code{verbose} says.
#' @return The objects, same structure as given (a named list, or one object), each with the
#'   embedding and the record added; for paths, the named list of embedding matrices.
#' @seealso \code{\link{ferry_transfer}}, \code{\link{ferry_python_ok}}
#' @examples
#' if (requireNamespace("Seurat", quietly = TRUE) && ferry_python_ok()) {
#'     data("pbmc_small", package = "SeuratObject")
#'     pbmc <- suppressWarnings(SeuratObject::UpdateSeuratObject(pbmc_small))
#'     objs <- ferry_integrate(list(g1 = subset(pbmc, subset = groups == "g1"),
#'                                  g2 = subset(pbmc, subset = groups == "g2")),
#'                             max_iter = 20, progress = FALSE)
#'     dim(SeuratObject::Embeddings(objs$g1, "ferry"))
#'     # then e.g. Seurat::RunUMAP(objs$g1, reduction = "ferry", dims = 1:16)
#' }
#' @export
ferry_integrate <- function(objects, method = "uniport", batch = NULL, assay = NULL, layer = "counts",
                            ..., seed = 0L, progress = TRUE, model_dir = NULL, verbose = TRUE) {
    if (!is.character(method) || length(method) != 1L || is.na(method)) {
        .ferry_stop("method must be one string, e.g. 'uniport'")
    }
    if (.ferry_is_paths(objects)) {  # on-disk AnnData, read by Python in chunks (R/ondisk.R)
        return(.ferry_integrate_paths(objects, method, batch, if (missing(layer)) NULL else layer,
                                      .ferry_method_params(list(...)), seed, progress, model_dir, verbose))
    }
    inp <- .ferry_inputs(objects, batch, assay)
    for (cls in inp$cls) {
        .ferry_need(if (cls == "Seurat") "SeuratObject" else "SingleCellExperiment", "for these objects")
    }
    mats <- .ferry_dataset_matrices(inp, layer)
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
    model <- .ferry_call(sf$integrate, args, paste0("scferry.integrate(method = '", method, "')"),
                         x_name = .ferry_x_name(inp$cls, inp$assay, layer))
    if (isTRUE(verbose)) message(.ferry_fit_message(model, mats))

    # one matrix per dataset: paired datasets share cell names but not coordinates
    embs <- lapply(adatas, .ferry_read_obsm, key = "X_scferry")
    gw <- .ferry_gw_record(model)
    if (!is.null(gw)) {
        if (isTRUE(verbose)) message("scferry: the datasets share no features and no labels were given, so ", method,
                " aligned them with a Gromov-Wasserstein match of their geometries (", gw,
                "); pass gw_prior = FALSE for unguided OT, or label_key = for the cell-type ",
                "prior. ",
                "method = \"gw\" returns the match's own embedding (no encoders for new cells)")
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
    .ferry$models[[id]] <- list(model = model, datasets = names(adatas), cells = lapply(mats, colnames))
    assay_rec <- if (all(vapply(inp$assay, is.null, TRUE))) NULL else inp$assay
    base <- list(model_id = id, method = method, path = saved, datasets = names(adatas),
                 n_cells = vapply(mats, ncol, 0L),
                 assay = assay_rec, layer = layer, batch = batch,
                 params = params, created = format(Sys.time(), "%Y-%m-%d %H:%M:%S"),
                 scferry_version = .ferry_py_version())

    .ferry$models[[id]]$record <- base
    if (inp$single) {
        obj <- inp$objects[[1L]]
        rec <- c(base, list(dataset = NULL))
        return(.ferry_add_embedding(obj, do.call(rbind, embs), rec))
    }
    if (inp$one_object) {
        # one object, one dataset per assay: "ferry" = the mean of the datasets' embeddings of each
        # cell (the paired cells' joint position), "ferry.<dataset>" = each dataset's embedding
        obj <- inp$objects[[1L]]
        cells <- colnames(obj)
        joint <- Reduce(`+`, lapply(embs, function(e) e[cells, , drop = FALSE])) / length(embs)
        rec <- c(base, list(dataset = NULL, paired = names(embs)))
        obj <- .ferry_add_embedding(obj, joint, rec)
        for (n in names(embs)) {
            obj <- .ferry_add_embedding(obj, embs[[n]], NULL, name = paste0("ferry.", n),
                                        assay = inp$assay[[n]])
        }
        return(obj)
    }
    out <- Map(function(obj, n) .ferry_add_embedding(obj, embs[[n]], c(base, list(dataset = n))),
               inp$objects, names(inp$objects))
    names(out) <- names(inp$objects)
    out
}

# The message ferry_integrate() prints after fitting: what was fitted on what, every choice the
# model records as made for the user (model.choices: the mode, ...; else the mode in model.params),
# and how many genes the datasets share.
.ferry_fit_message <- function(model, mats) {
    s <- tryCatch(.ferry$bridge$model_summary(model), error = function(e) NULL)
    sizes <- paste0("'", names(mats), "' (", vapply(mats, ncol, 0L), " cells)", collapse = ", ")
    if (is.null(s)) return(paste0("ferry_integrate: fitted on ", sizes))
    ch <- s$choices
    choice <- if (length(ch)) {
        paste0("; ", paste0(names(ch), " = '", vapply(ch, function(x) x$value, ""), "'",
                            vapply(ch, function(x) if (nzchar(x$reason)) paste0(" (", x$reason, ")") else "", ""),
                            collapse = "; "))
    } else ""
    genes <- if (s$n_common_genes >= 0L) {
        paste0("; ", format(s$n_common_genes, big.mark = ","), " genes shared by the datasets used")
    } else ""
    paste0("ferry_integrate: method '", s$method, "' fitted on ", sizes, choice, genes)
}

.ferry_new_id <- function() {
    # tempfile() names do not touch R's random number stream (.Random.seed)
    paste0(format(Sys.time(), "%Y%m%d%H%M%S"), "-", sub("^ferry", "", basename(tempfile("ferry"))))
}

.ferry_py_version <- function(sf = .ferry$sf) {
    v <- tryCatch(reticulate::py_to_r(reticulate::py_get_attr(sf, "__version__")),
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

# The record ferry_integrate() stored in an object, or an error. Looked up in obj@misc$ferry (or
# metadata(sce)$ferry), then in the "ferry" reduction's misc slot, then, for objects that lost both
# (merge() keeps neither @misc nor reductions' misc), among the models of this R session whose
# datasets hold exactly the object's cells.
.ferry_record <- function(obj, objname) {
    if (!(.ferry_is_seurat(obj) || .ferry_is_sce(obj))) {
        .ferry_stop(objname, " must be a Seurat or SingleCellExperiment object; got ", class(obj)[1L])
    }
    seurat <- .ferry_is_seurat(obj)
    rec <- if (seurat) obj@misc$ferry else S4Vectors::metadata(obj)$ferry
    if (!is.null(rec$model_id)) return(rec)
    has_red <- if (seurat) "ferry" %in% SeuratObject::Reductions(obj) else
        "FERRY" %in% SingleCellExperiment::reducedDimNames(obj)
    if (seurat && has_red) {
        rec <- tryCatch(obj[["ferry"]]@misc$ferry, error = function(e) NULL)
        if (!is.null(rec$model_id)) return(rec)
    }
    rec <- if (has_red) .ferry_record_from_cells(colnames(obj))
    if (!is.null(rec)) {
        message(objname, " has no scferry record (merge() drops obj@misc and the reductions' misc); ",
                "using model ", rec$model_id, " of this R session, whose datasets hold its cells")
        return(rec)
    }
    if (has_red) {
        .ferry_stop(objname, " has a 'ferry' reduction but no scferry record: merge() drops obj@misc and ",
                    "the reductions' misc slot, where ferry_integrate() keeps it, and no model of this R ",
                    "session holds these cells. Call ferry_transfer()/ferry_deconvolve() on the objects ",
                    "ferry_integrate() returned (or subsets of them), then merge the results; or integrate ",
                    "the merged object with ferry_integrate(merged, batch = '<dataset column>')")
    }
    .ferry_stop(objname, " was not integrated with scferry: run ferry_integrate() and pass the ",
                "object it returned (merge() drops the 'ferry' reduction unless merge.dr = 'ferry', and ",
                "its record always: call scferry functions before merging)")
}

# A record for cells of one live model (each cell in exactly one of its datasets), or NULL.
.ferry_record_from_cells <- function(cells) {
    for (id in rev(names(.ferry$models))) {
        m <- .ferry$models[[id]]
        if (is.null(m$cells) || is.null(m$record)) next
        ds <- rep(names(m$cells), lengths(m$cells))
        all_cells <- unlist(m$cells, use.names = FALSE)
        if (anyDuplicated(all_cells)) next   # paired datasets: a cell name does not say its dataset
        idx <- match(cells, all_cells)
        if (anyNA(idx)) next
        rec <- m$record
        rec$dataset <- NULL
        rec$batch <- NULL
        rec$cell_dataset <- ds[idx]
        if (length(unique(rec$cell_dataset)) == 1L) rec$dataset <- rec$cell_dataset[1L]
        return(rec)
    }
    NULL
}

# Dataset name of each cell of an integrated object.
.ferry_cell_datasets <- function(obj, rec, objname) {
    if (!is.null(rec$cell_dataset)) return(rec$cell_dataset)
    if (!is.null(rec$dataset)) return(rep(rec$dataset, ncol(obj)))
    if (!is.null(rec$paired)) {
        .ferry_stop(objname, " holds paired datasets (", .ferry_list(rec$paired), ") of the same cells, ",
                    "integrated from one object; labels are transferred between datasets of different cells")
    }
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
    for (n in names(pieces)) {
        want <- rec$n_cells[[n]]
        if (!is.null(want) && length(pieces[[n]]$cells) != want) {
            .ferry_stop("the scferry model ", rec$model_id, " is not in this R session; reloading it from ",
                        rec$path, " needs all ", want, " cells of dataset '", n, "' as integrated, and the ",
                        "object holds ", length(pieces[[n]]$cells), ". Pass the objects ferry_integrate() ",
                        "returned once (the model then stays loaded for this session, and subsets work)")
        }
    }
    adatas <- lapply(names(pieces), function(n) {
        p <- pieces[[n]]
        a_n <- if (is.list(rec$assay)) rec$assay[[n]] else rec$assay
        m <- .ferry_counts(p$obj, a_n, rec$layer, "the object")[, p$cells, drop = FALSE]
        a <- .ferry_anndata(m)
        emb <- if (.ferry_is_seurat(p$obj)) {
            SeuratObject::Embeddings(p$obj, "ferry")
        } else SingleCellExperiment::reducedDim(p$obj, "FERRY")
        .ferry$bridge$set_obsm(a, "X_scferry", emb[p$cells, , drop = FALSE])
        a
    })
    pydict <- reticulate::py_dict(names(pieces), adatas, convert = FALSE)
    model <- .ferry_py(.ferry$sf$load(rec$path, adatas = pydict), paste0("scferry.load('", rec$path, "')"))
    .ferry$models[[rec$model_id]] <- list(model = model, datasets = names(pieces),
                                          cells = lapply(pieces, function(p) p$cells), record = rec)
    model
}


# The Python fit's record of the Gromov-Wasserstein guidance (uniPort, diagonal mode without labels)
# as one line, or NULL when it was not used.
.ferry_gw_record <- function(model) {
    rec <- tryCatch(reticulate::py_to_r(model$params$get("gw_record")), error = function(e) NULL)
    if (!is.list(rec) || !isTRUE(rec$used)) return(NULL)
    fit <- tryCatch(reticulate::py_to_r(model$params$get("gw_fit_weight")), error = function(e) 0)
    genome <- rec$choices$tss$value
    paste0("metacells: ", paste(unlist(rec$n_metacells), collapse = " / "), ", kinds: ",
           paste(unlist(rec$kinds), collapse = " / "),
           if (is.character(genome) && length(genome) == 1)
               paste0("; the peaks read as assembly ", genome,
                      ", linked to genes by their gene activity"),
           if (is.numeric(fit) && length(fit) == 1 && fit > 0)
               paste0("; its encoders learn the match's coordinates, gw_fit_weight = ", fit))
}
