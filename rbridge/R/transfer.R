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
#' Label columns sum to 1 for every cell. The label column names follow Seurat's: label
#' \code{2} gives \code{prediction.score.2}, \code{"B cell"} gives \code{prediction.score.B.cell}
#' (\code{make.names} of the whole name).
#'
#' Subsets of the integrated objects work as \code{reference} and \code{query}. The objects find
#' their model through a record \code{ferry_integrate()} stored in \code{obj@misc$ferry} and in the
#' \code{"ferry"} reduction's \code{misc} slot; \code{merge()} drops both: a merged object is then
#' matched, by its cell names, to the models of this R session (with a message), and otherwise
#' gets an error that says so.
#'
#' @param reference Integrated object holding the labels (as returned by \code{ferry_integrate}).
#' @param query Integrated object to label, from the same \code{ferry_integrate} call.
#' @param label Cell-metadata column of \code{reference} with the labels. Reference cells whose
#'   label is \code{NA}, and cells of the reference dataset that are not in \code{reference} (a
#'   subset of the integrated object), are left out of the transfer: the probabilities are
#'   computed over the labelled cells only (a message gives the count). Query cells that the OT
#'   plan links only to unlabelled cells get a kNN vote on the embedding over the labelled
#'   reference cells instead (as for cells the plan never reached), with a warning.
#' @param source,target Dataset names, needed only when an object holds cells of several datasets
#'   (one object integrated with \code{batch}): the dataset whose labels are used, and the dataset
#'   to label (\code{query} must then hold only cells of \code{target}; subset it first).
#' @param ... Options of \code{scferry.transfer_labels()} in Python, e.g. \code{method = "knn"},
#'   \code{k = 30} (whole numbers are sent as \code{int}).
#' @return \code{query} with the predictions added.
#' @seealso \code{\link{ferry_integrate}}, \code{\link{ferry_deconvolve}}
#' @param prediction.name \code{NULL} (default) for the names above, or a name that keeps this
#'   transfer apart from others on the same object, as Seurat's \code{MapQuery}: assay
#'   \code{"ferry.predictions.<name>"} and metadata columns \code{predicted.<name>} and
#'   \code{predicted.<name>.score} (the highest probability). With the default names, the
#'   \code{prediction.score.*} columns of an earlier transfer are removed first, so that no stale
#'   label column is left.
#' @examples
#' if (requireNamespace("Seurat", quietly = TRUE) && ferry_python_ok()) {
#'     data("pbmc_small", package = "SeuratObject")
#'     pbmc <- suppressWarnings(SeuratObject::UpdateSeuratObject(pbmc_small))
#'     objs <- ferry_integrate(list(g1 = subset(pbmc, subset = groups == "g1"),
#'                                  g2 = subset(pbmc, subset = groups == "g2")),
#'                             max_iter = 20, progress = FALSE)
#'     ref <- objs$g1
#'     ref$cluster <- as.character(ref$RNA_snn_res.1)
#'     ref$cluster[1:3] <- NA        # cells without a label are left out
#'     g2 <- ferry_transfer(ref, objs$g2, label = "cluster")
#'     table(g2$predicted.id)
#'     g2 <- ferry_transfer(ref, g2, label = "letter.idents", prediction.name = "letter")
#'     head(g2[[c("predicted.id", "predicted.letter", "predicted.letter.score")]])
#' }
#' @export
ferry_transfer <- function(reference, query, label, source = NULL, target = NULL, ...,
                           prediction.name = NULL) {
    if (!is.null(prediction.name) && (!is.character(prediction.name) || length(prediction.name) != 1L ||
                                      is.na(prediction.name) || !nzchar(prediction.name))) {
        .ferry_stop("prediction.name must be NULL or one non-empty string, e.g. 'celltype'")
    }
    .ferry_scores_call("transfer_labels", c("source", "target"), "predictions",
                       reference, query, "query", label, source, target, list(...), pname = prediction.name)
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
#' @param label Cell-metadata column of \code{reference} with the cell types; cells with \code{NA}
#'   are left out, as in \code{\link{ferry_transfer}}.
#' @param ... Options of \code{scferry.deconvolve()} in Python: \code{readout = "counts"}
#'   (default: a Poisson fit of each spot's counts on the reference's per-type mean counts, with
#'   gene-wise platform factors and a Gamma prior on the abundances, \code{prior_shape}; \code{NULL}
#'   for maximum likelihood; on the genes that mark a type, \code{select_genes = TRUE}, as RCTD
#'   selects them; \code{n_states}, cell states per type as BayesPrism splits its reference, off by
#'   default), \code{"type_mean"} (each type's plan mass divided by its number
#'   of reference cells, as uniPort's R tutorial) or \code{"mass"} (the plan mass as it is),
#'   \code{k} (neighbours of the kNN vote for spots the plan never reached).
#' @return \code{spots} with the proportions added.
#' @examples
#' if (requireNamespace("Seurat", quietly = TRUE) && ferry_python_ok()) {
#'     data("pbmc_small", package = "SeuratObject")
#'     pbmc <- suppressWarnings(SeuratObject::UpdateSeuratObject(pbmc_small))
#'     objs <- ferry_integrate(list(g1 = subset(pbmc, subset = groups == "g1"),
#'                                  g2 = subset(pbmc, subset = groups == "g2")),
#'                             max_iter = 20, progress = FALSE)
#'     g2 <- ferry_deconvolve(objs$g1, objs$g2, label = "RNA_snn_res.1")
#'     summary(colSums(SeuratObject::GetAssayData(g2[["ferry.proportions"]], slot = "data")))
#' }
#' @export
ferry_deconvolve <- function(reference, spots, label, source = NULL, target = NULL, ...) {
    .ferry_scores_call("deconvolve", c("reference", "spots"), "proportions",
                       reference, spots, "spots", label, source, target, list(...))
}

# ferry_transfer / ferry_deconvolve: check the pair (before Python starts), then
# scferry.<fun>(model, <ds_args[1]> = source dataset, <ds_args[2]> = target dataset, label_key = label,
# ...) returns a DataFrame (target cells x labels) that is written into `obj` as `kind`.
.ferry_scores_call <- function(fun, ds_args, kind, reference, obj, objname, label, source, target, dots,
                               pname = NULL) {
    job <- .ferry_pair(reference, obj, label, source, target, c("reference", objname))
    params <- .ferry_method_params(dots, reserved = c("model", ds_args, "label_key", "prediction.name"))
    sf <- .ferry_require_fun(fun)
    model <- .ferry_model(job$rec, job$pieces)
    .ferry_set_labels(model, job, paste0("ferry_", if (kind == "predictions") "transfer" else "deconvolve"))
    ds <- stats::setNames(list(job$source, job$target), ds_args)
    args <- c(list(model), ds, list(label_key = label), params)
    what <- sprintf("scferry.%s(%s = '%s', %s = '%s')", fun, ds_args[1L], job$source, ds_args[2L], job$target)
    res <- .ferry_call(sf[[fun]], args, what)
    .ferry_add_scores(obj, .ferry_scores_matrix(res, obj, objname), kind, pname)
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
    # only the cells of the source dataset matter; NA labels are allowed (those cells are left out)
    labels <- .ferry_check_column(reference, label, "label",
                                  if (all(keep)) argnames[1L] else paste0(argnames[1L], " (dataset '", source, "')"),
                                  keep = keep, allow_na = TRUE)
    if (all(is.na(labels))) {
        .ferry_stop("label column '", label, "' of ", argnames[1L], " is NA for all ", length(labels),
                    " cells of dataset '", source, "'; no cell has a label to transfer")
    }
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
# Cells of the dataset with an NA label, or missing from the reference (a subset), get a missing
# label, which Python leaves out of the transfer; a message gives their count.
.ferry_set_labels <- function(model, job, fname = "ferry_transfer") {
    ad <- .ferry_py(.ferry$bridge$model_adata(model, job$source), "model.adatas")
    names_py <- unlist(.ferry$bridge$obs_names(ad))
    idx <- match(names_py, job$ref_cells)
    v <- job$ref_labels
    lv <- if (is.factor(v)) levels(droplevels(v)) else sort(unique(as.character(v[!is.na(v)])))
    lab <- as.character(v)[idx]
    n_na <- sum(!is.na(idx) & is.na(lab))
    n_out <- sum(is.na(idx))
    if (n_na + n_out == length(names_py)) {
        .ferry_stop("none of the ", length(names_py), " cells of dataset '", job$source, "' in the model has ",
                    "a label in the reference (", n_na, " NA, ", n_out, " not in the reference object)")
    }
    if (n_na + n_out > 0L) {
        message(fname, ": ", n_na + n_out, " of the ", length(names_py), " cells of reference dataset '",
                job$source, "' have no label and are left out of the transfer (",
                paste(c(if (n_na) paste0(n_na, " with NA in '", job$label, "'"),
                        if (n_out) paste0(n_out, " not in the reference object")), collapse = ", "), ")")
    }
    # NA codes (-1) become missing values, which Python leaves out of the transfer
    f <- factor(lab, levels = lv)
    codes <- as.integer(f) - 1L
    codes[is.na(codes)] <- -1L
    .ferry$bridge$set_obs_categorical(ad, job$label, codes, levels(f))
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
    P <- P[, colnames(obj), drop = FALSE]
    P
}
