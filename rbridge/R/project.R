#' Project new cells onto an integrated scferry model
#'
#' Maps the cells of \code{query} (raw counts, not used in training) into the latent space of the
#' model \code{reference} was integrated with, without retraining: \code{scferry.project()} in
#' Python, through the encoder and saved preprocessing of training dataset \code{dataset} (the one
#' the new cells resemble: same technology, same gene identifiers). This is what Seurat's
#' \code{MapQuery()} does for a reference atlas. The embedding is written as reduction
#' \code{reduction.name} (Seurat \code{DimReduc}, key e.g. \code{FERRY_}) or
#' \code{reducedDim(sce, toupper(reduction.name))}, in the same coordinates as the reference's
#' \code{"ferry"} reduction, so both can be plotted or clustered together.
#'
#' The model is the live one of this R session, or the file \code{ferry_integrate()} saved
#' (\code{model_dir}). The query must hold every gene the encoder reads.
#'
#' @param query Seurat or SingleCellExperiment object with raw counts; or the path of an on-disk
#'   AnnData (\code{.h5ad} / \code{.zarr}, raw counts by cells) too large to hold in R: Python
#'   reads and encodes it in chunks and writes \code{obsm/X_scferry} into it, and the value is the
#'   embedding matrix (cells x latent, cell names as row names).
#' @param reference Integrated object (as returned by \code{\link{ferry_integrate}}) whose model to
#'   use, or the list of matrices \code{ferry_integrate()} returns for paths.
#' @param dataset Name of the training dataset the query cells match; default: the dataset of
#'   \code{reference} when it holds one.
#' @param assay,layer Where the query's raw counts are (as in \code{\link{ferry_integrate}}).
#' @param reduction.name Name of the reduction to write.
#' @return \code{query} with the reduction added (and the record \code{obj@misc$ferry_project}, or
#'   \code{metadata(sce)$ferry_project}: model id, dataset); for a path, the embedding matrix.
#' @seealso \code{\link{ferry_integrate}}, \code{\link{ferry_impute}}
#' @examples
#' if (requireNamespace("Seurat", quietly = TRUE) && ferry_python_ok()) {
#'     data("pbmc_small", package = "SeuratObject")
#'     pbmc <- suppressWarnings(SeuratObject::UpdateSeuratObject(pbmc_small))
#'     g1 <- subset(pbmc, subset = groups == "g1")
#'     g2 <- subset(pbmc, subset = groups == "g2")
#'     objs <- ferry_integrate(list(g1 = g1[, 1:30], g2 = g2), max_iter = 20, progress = FALSE)
#'     new <- ferry_project(g1[, 31:ncol(g1)], objs$g1)
#'     dim(SeuratObject::Embeddings(new, "ferry"))
#' }
#' @export
ferry_project <- function(query, reference, dataset = NULL, assay = NULL, layer = "counts",
                          reduction.name = "ferry") {
    if (is.character(query)) {  # an on-disk store (R/ondisk.R): a matrix keyed by cell comes back
        return(.ferry_project_path(query, reference, dataset, if (missing(layer)) NULL else layer))
    }
    if (!(.ferry_is_seurat(query) || .ferry_is_sce(query))) {
        .ferry_stop("query must be a Seurat or SingleCellExperiment object; got ", class(query)[1L])
    }
    if (!is.character(reduction.name) || length(reduction.name) != 1L || is.na(reduction.name) ||
        !nzchar(reduction.name)) {
        .ferry_stop("reduction.name must be one non-empty string")
    }
    job <- .ferry_model_job(reference, dataset, assay, query)
    m <- .ferry_check_counts(.ferry_counts(query, job$assay, layer, "query"))
    .ferry_cells(query)
    sf <- .ferry_require_fun("project")
    model <- .ferry_model_any(job$rec)
    a <- .ferry_anndata(m)
    .ferry_call(sf$project, list(model, a, job$dataset), sprintf("scferry.project(dataset = '%s')", job$dataset),
                x_name = .ferry_x_name(.ferry_class(query), job$assay, layer))
    emb <- .ferry_read_obsm(a, "X_scferry")
    out <- .ferry_add_embedding(query, emb, NULL, name = reduction.name, assay = job$assay)
    rec <- list(model_id = job$rec$model_id, dataset = job$dataset, path = job$rec$path,
                reduction = reduction.name, created = format(Sys.time(), "%Y-%m-%d %H:%M:%S"))
    if (.ferry_is_seurat(out)) {
        misc <- out@misc
        misc$ferry_project <- rec
        out@misc <- misc
    } else {
        md <- S4Vectors::metadata(out)
        md$ferry_project <- rec
        S4Vectors::metadata(out) <- md
    }
    out
}

#' Impute another dataset's genes for cells through an integrated model
#'
#' Predicts, for the cells of \code{object}, the genes specific to training dataset \code{target}:
#' \code{scferry.impute()} in Python, e.g. genes a spatial panel did not measure, from the
#' scRNA-seq reference integrated with it (uniPort's online prediction), or the protein of RNA-only
#' cells with a CITE-seq model. The cells are encoded through training dataset \code{dataset}'s
#' encoder, as \code{\link{ferry_project}} does, then decoded by \code{target}'s decoder
#' (\code{method = "decoder"}, uniPort) or given the kernel-weighted mean measured values of their \code{k} nearest
#' training cells of \code{target} in the joint space (\code{method = "knn"}, any model, e.g.
#' MinNet; the model's training objects must be in this R session); \code{"auto"} takes the
#' decoder when the model has one. Needs a model with dataset-specific genes
#' (\code{n_specific_genes > 0} or \code{specific_genes = list(<target> = c(...))}).
#'
#' Written back as Seurat assay \code{new.assay} (data layer = genes x cells, in \code{target}'s
#' log-normalised units, log1p of counts per 10,000; "_" in gene names becomes "-") or
#' SingleCellExperiment \code{altExp(sce, new.assay)} with assay \code{"logcounts"}.
#'
#' @param object Seurat or SingleCellExperiment object with raw counts of cells like training
#'   dataset \code{dataset} (the integrated object itself, or new cells).
#' @param target Name of the training dataset whose specific genes to predict.
#' @param reference Integrated object whose model to use; default \code{object}.
#' @param dataset Training dataset \code{object}'s cells match; default: \code{object}'s dataset
#'   when it is an integrated object of one dataset, else (two-dataset models) the one that is not
#'   \code{target}.
#' @param assay,layer Where \code{object}'s raw counts are.
#' @param new.assay Name of the assay (Seurat) or altExp (SingleCellExperiment) to write.
#' @param method \code{"auto"}, \code{"decoder"} or \code{"knn"} (see above).
#' @param k Neighbours for \code{method = "knn"}; \code{NULL} (the default): the 100 nearest
#'   training cells (all of them if there are fewer), with Gaussian kernel weights (Python's
#'   \code{scferry.tl.project.KNN_IMPUTE_K}).
#' @return \code{object} with the imputed values added.
#' @seealso \code{\link{ferry_project}}
#' @examples
#' if (requireNamespace("Seurat", quietly = TRUE) && ferry_python_ok()) {
#'     data("pbmc_small", package = "SeuratObject")
#'     pbmc <- suppressWarnings(SeuratObject::UpdateSeuratObject(pbmc_small))
#'     objs <- ferry_integrate(list(g1 = subset(pbmc, subset = groups == "g1"),
#'                                  g2 = subset(pbmc, subset = groups == "g2")),
#'                             max_iter = 20, progress = FALSE, n_specific_genes = 20)
#'     g1 <- ferry_impute(objs$g1, target = "g2")
#'     dim(SeuratObject::GetAssayData(g1[["ferry.imputed"]], slot = "data"))
#' }
#' @export
ferry_impute <- function(object, target, reference = object, dataset = NULL, assay = NULL, layer = "counts",
                         new.assay = "ferry.imputed", method = "auto", k = NULL) {
    if (!(.ferry_is_seurat(object) || .ferry_is_sce(object))) {
        .ferry_stop("object must be a Seurat or SingleCellExperiment object; got ", class(object)[1L])
    }
    if (!is.null(k) && (!is.numeric(k) || length(k) != 1L || is.na(k) || k < 1 || k != round(k))) {
        .ferry_stop("k must be NULL (the default neighbourhood) or one positive whole number")
    }
    for (a in list(list("target", target), list("new.assay", new.assay), list("method", method))) {
        v <- a[[2L]]
        if (!is.character(v) || length(v) != 1L || is.na(v) || !nzchar(v)) .ferry_stop(a[[1L]], " must be one string")
    }
    rec <- .ferry_record(reference, "reference")
    if (!target %in% rec$datasets) {
        .ferry_stop("target '", target, "' is not a dataset of the model; its datasets: ", .ferry_list(rec$datasets))
    }
    if (is.null(dataset) && is.null(rec$dataset) && length(rec$datasets) == 2L) {
        dataset <- setdiff(rec$datasets, target)
    }
    job <- .ferry_model_job(reference, dataset, assay, object)
    m <- .ferry_check_counts(.ferry_counts(object, job$assay, layer, "object"))
    sf <- .ferry_require_fun("impute")
    model <- .ferry_model_any(job$rec)
    a <- .ferry_anndata(m)
    res <- .ferry_call(sf$impute, list(model, a, target, dataset = job$dataset, method = method,
                                         k = if (is.null(k)) NULL else as.integer(k)),
                       sprintf("scferry.impute(target = '%s', dataset = '%s', method = '%s')", target, job$dataset,
                               method),
                       x_name = .ferry_x_name(.ferry_class(object), job$assay, layer))
    parts <- .ferry_py(.ferry$bridge$matrix_parts(res), "reading the imputed values")
    M <- t(parts$values)
    if (!is.matrix(M)) M <- matrix(M, nrow = length(parts$var_names))
    dimnames(M) <- list(unlist(parts$var_names), unlist(parts$obs_names))
    M <- M[, colnames(object), drop = FALSE]
    if (.ferry_is_seurat(object)) {
        rownames(M) <- make.unique(gsub("_", "-", rownames(M), fixed = TRUE))
        ao <- SeuratObject::CreateAssayObject(data = M, check.matrix = FALSE)
        SeuratObject::Key(ao) <- paste0(gsub("[^[:alnum:]]", "", tolower(new.assay)), "_")
        object[[new.assay]] <- ao
    } else {
        se <- SummarizedExperiment::SummarizedExperiment(assays = list(logcounts = M))
        SingleCellExperiment::altExp(object, new.assay) <- se
    }
    object
}

# The model record of `reference`, the training dataset the cells of `cells_obj` match, and the
# assay to read them from (the one that dataset was read from, unless given).
.ferry_model_job <- function(reference, dataset, assay, cells_obj) {
    rec <- .ferry_record(reference, "reference")
    if (is.null(dataset)) {
        if (is.null(rec$dataset)) {
            .ferry_stop("reference holds several datasets (", .ferry_list(rec$datasets), "); pass dataset = ",
                        "the one the new cells match")
        }
        dataset <- rec$dataset
    }
    if (!is.character(dataset) || length(dataset) != 1L || !dataset %in% rec$datasets) {
        .ferry_stop("dataset must be one of the model's datasets: ", .ferry_list(rec$datasets))
    }
    if (is.null(assay)) assay <- if (is.list(rec$assay)) rec$assay[[dataset]] else rec$assay
    if (.ferry_is_seurat(cells_obj) && !is.null(assay) && !assay %in% SeuratObject::Assays(cells_obj)) {
        assay <- NULL   # the reference's assay name is not in the query: its default assay
    }
    list(rec = rec, dataset = dataset, assay = assay)
}

# The model of a record for projection: the live one, or loaded from its file without the training
# data (projection needs only the networks and the preprocessing).
.ferry_model_any <- function(rec) {
    live <- .ferry$models[[rec$model_id]]
    if (!is.null(live)) return(live$model)
    if (is.null(rec$path) || is.na(rec$path) || !file.exists(rec$path)) {
        .ferry_stop("the scferry model ", rec$model_id, " is not in this R session and its saved file is ",
                    "gone (", rec$path %||% "none", "); pass model_dir = to ferry_integrate() to keep it")
    }
    .ferry_py(.ferry$sf$load(rec$path), paste0("scferry.load('", rec$path, "')"))
}
