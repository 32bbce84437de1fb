#' Transfer cell labels between integrated datasets
#'
#' Uses the scferry model both objects came from (\code{\link{ferry_integrate}}) to predict, for every
#' cell of \code{query}, the probability of each label of \code{reference} (\code{scferry.transfer_labels()}
#' in Python), and writes the result in the shapes Seurat's \code{TransferData()} produces:
#' \itemize{
#'   \item Seurat: assay \code{"ferry.predictions"} (a v3 \code{Assay} whose data layer holds labels x
#'     cells probabilities plus a \code{"max"} row; key \code{ferrypredictions_}; as in Seurat, "_" and
#'     "|" in label names become "-" in the assay's row names) and metadata columns
#'     \code{predicted.id} (character, the original labels), \code{prediction.score.<label>}
#'     (\code{make.names} of each label) and \code{prediction.score.max}.
#'   \item SingleCellExperiment: \code{altExp(sce, "ferry.predictions")}, a SummarizedExperiment with
#'     assay \code{"probabilities"} (labels x cells plus a \code{"max"} row), and colData columns
#'     \code{predicted.id}, \code{prediction.score.max}.
#' }
#' Label columns sum to 1 for every cell.
#'
#' @param reference Integrated object holding the labels (as returned by \code{ferry_integrate}).
#' @param query Integrated object to label, from the same \code{ferry_integrate} call.
#' @param label Cell-metadata column of \code{reference} with the labels (no NA).
#' @param source,target Dataset names, needed only when an object holds cells of several datasets
#'   (one object integrated with \code{batch}): the dataset whose labels are used, and the dataset
#'   to label (\code{query} must then hold only cells of \code{target}; subset it first).
#' @param ... Options of \code{scferry.transfer_labels()} in Python, e.g. \code{method = "knn"},
#'   \code{k = 30} (whole numbers are sent as \code{int}).
#' @return \code{query} with the predictions added.
#' @seealso \code{\link{ferry_integrate}}, \code{\link{ferry_deconvolve}}
#' @examples
#' \dontrun{
#' objs <- ferry_integrate(list(rna = rna, atac = atac))
#' atac <- ferry_transfer(objs$rna, objs$atac, label = "cell_type")
#' table(atac$predicted.id)
#' }
#' @export
ferry_transfer <- function(reference, query, label, source = NULL, target = NULL, ...) {
    .ferry_scores_call("transfer_labels", c("source", "target"), "predictions",
                       reference, query, "query", label, source, target, list(...))
}

#' Estimate cell-type proportions of spots from an integrated reference
#'
#' Uses the scferry model both objects came from to estimate, for every spot of \code{spots}, the
#' proportion of each cell type of \code{reference}: \code{scferry.deconvolve(model, reference =,
#' spots =, label_key =)} in Python (dataset names), which returns a spots x cell types table whose
#' rows sum to 1. Written back as
#' \itemize{
#'   \item Seurat: assay \code{"ferry.proportions"} (a v3 \code{Assay}, data layer = cell types x
#'     spots, key \code{ferryproportions_}, no \code{"max"} row; "_" and "|" in cell-type names
#'     become "-", as in \code{TransferData}'s prediction assay). On a Visium object
#'     \code{DefaultAssay(spots) <- "ferry.proportions"; SpatialFeaturePlot(spots, features =
#'     "Ductal")} then maps a cell type's proportion over the tissue, as Seurat's spatial vignette does
#'     with its "predictions" assay.
#'   \item SingleCellExperiment: \code{altExp(sce, "ferry.proportions")} with assay
#'     \code{"proportions"} (cell types x spots, original names).
#' }
#' Needs a scferry Python package that provides \code{deconvolve}; otherwise an error says so.
#'
#' @inheritParams ferry_transfer
#' @param spots Integrated object of spatial spots, from the same \code{ferry_integrate} call.
#' @param label Cell-metadata column of \code{reference} with the cell types (no NA).
#' @param ... Options of \code{scferry.deconvolve()} in Python: \code{readout = "counts"}
#'   (default: a Poisson fit of each spot's counts on the reference's per-type mean counts, with
#'   gene-wise platform factors), \code{"type_mean"} (each type's plan mass divided by its number
#'   of reference cells, as uniPort's R tutorial) or \code{"mass"} (the plan mass as it is),
#'   \code{k} (neighbours of the kNN vote for spots the plan never reached).
#' @return \code{spots} with the proportions added.
#' @export
ferry_deconvolve <- function(reference, spots, label, source = NULL, target = NULL, ...) {
    .ferry_scores_call("deconvolve", c("reference", "spots"), "proportions",
                       reference, spots, "spots", label, source, target, list(...))
}

# ferry_transfer / ferry_deconvolve: check the pair (before Python starts), then
# scferry.<fun>(model, <ds_args[1]> = source dataset, <ds_args[2]> = target dataset, label_key = label,
# ...) returns a DataFrame (target cells x labels) that is written into `obj` as `kind`.
.ferry_scores_call <- function(fun, ds_args, kind, reference, obj, objname, label, source, target, dots) {
    job <- .ferry_pair(reference, obj, label, source, target, c("reference", objname))
    params <- .ferry_method_params(dots, reserved = c("model", ds_args, "label_key"))
    sf <- .ferry_require_python()
    if (!reticulate::py_has_attr(sf, fun)) {
        .ferry_stop("scferry.", fun, "() is not in the scferry Python package of this environment (version ",
                    .ferry_py_version(), "); update it with scferry::ferry_setup() in a fresh R session")
    }
    model <- .ferry_model(job$rec, job$pieces)
    .ferry_set_labels(model, job)
    ds <- stats::setNames(list(job$source, job$target), ds_args)
    args <- c(list(model), ds, list(label_key = label), params)
    what <- sprintf("scferry.%s(%s = '%s', %s = '%s')", fun, ds_args[1L], job$source, ds_args[2L], job$target)
    res <- .ferry_py(do.call(sf[[fun]], args), what)
    .ferry_add_scores(obj, .ferry_scores_matrix(res, obj, objname), kind)
}

# All checks for a reference/query pair, before Python runs.
.ferry_pair <- function(reference, query, label, source, target, argnames) {
    rec_r <- .ferry_record(reference, argnames[1L])
    rec_q <- .ferry_record(query, argnames[2L])
    if (!identical(rec_r$model_id, rec_q$model_id)) {
        .ferry_stop(argnames[1L], " and ", argnames[2L], " come from different ferry_integrate() calls ",
                    "(models ", rec_r$model_id, " and ", rec_q$model_id, "); integrate them together first")
    }
    ds_r <- .ferry_cell_datasets(reference, rec_r, argnames[1L])
    ds_q <- .ferry_cell_datasets(query, rec_q, argnames[2L])
    source <- .ferry_pick_dataset(ds_r, source, argnames[1L], "source", whole = FALSE)
    target <- .ferry_pick_dataset(ds_q, target, argnames[2L], "target", whole = TRUE)
    if (identical(source, target)) {
        .ferry_stop(argnames[1L], " and ", argnames[2L], " are the same dataset ('", source, "'); ",
                    "labels are transferred from one dataset to another")
    }
    keep <- ds_r == source
    # only the cells of the source dataset need labels (a merged object may have NA elsewhere)
    labels <- .ferry_check_column(reference, label, "label",
                                  if (all(keep)) argnames[1L] else paste0(argnames[1L], " (dataset '", source, "')"),
                                  keep = keep)
    pieces <- list(list(obj = reference, cells = colnames(reference)[keep]),
                   list(obj = query, cells = colnames(query)))
    names(pieces) <- c(source, target)
    list(rec = rec_r, source = source, target = target, label = label,
         ref_cells = colnames(reference)[keep], ref_labels = labels, pieces = pieces)
}

.ferry_pick_dataset <- function(ds, given, objname, argname, whole) {
    u <- unique(ds)
    if (!is.null(given)) {
        if (!is.character(given) || length(given) != 1L) .ferry_stop(argname, " must be one dataset name")
        if (!given %in% u) {
            .ferry_stop(argname, " = '", given, "' is not a dataset of ", objname, "; it holds cells of ",
                        .ferry_list(u))
        }
        if (whole && length(u) > 1L) {
            .ferry_stop(objname, " holds cells of several datasets (", .ferry_list(u), "); subset it to ",
                        "the cells of '", given, "' first")
        }
        return(given)
    }
    if (length(u) > 1L) {
        .ferry_stop(objname, " holds cells of several datasets (", .ferry_list(u), "); pass ", argname,
                    " = one of them", if (whole) paste0(" and subset ", objname, " to its cells") else "")
    }
    u
}

# Put the reference labels on the bridge-owned AnnData of the source dataset, in its cell order.
.ferry_set_labels <- function(model, job) {
    ad <- .ferry_py(.ferry$bridge$model_adata(model, job$source), "model.adatas")
    names_py <- unlist(.ferry$bridge$obs_names(ad))
    idx <- match(names_py, job$ref_cells)
    if (anyNA(idx)) {
        .ferry_stop("the reference lacks ", sum(is.na(idx)), " of the ", length(idx), " cells of dataset '",
                    job$source, "' in the model (e.g. ", .ferry_list(names_py[is.na(idx)], 3L), "); pass the ",
                    "object ferry_integrate() returned, not a subset of its cells")
    }
    v <- job$ref_labels[idx]
    f <- if (is.factor(v)) droplevels(v) else factor(as.character(v))
    .ferry$bridge$set_obs_categorical(ad, job$label, as.integer(f) - 1L, levels(f))
}

# pandas DataFrame (cells x labels) -> labels x cells matrix in the object's cell order.
.ferry_scores_matrix <- function(df, obj, objname) {
    parts <- .ferry_py(.ferry$bridge$frame_parts(df), "reading the result")
    P <- t(parts$values)
    if (!is.matrix(P)) P <- matrix(P, nrow = length(parts$columns))
    rownames(P) <- unlist(parts$columns)
    colnames(P) <- unlist(parts$index)
    miss <- setdiff(colnames(obj), colnames(P))
    if (length(miss)) {
        .ferry_stop("the Python result has no row for ", length(miss), " cell(s) of ", objname,
                    " (e.g. ", .ferry_list(miss, 3L), ")")
    }
    P[, colnames(obj), drop = FALSE]
}
