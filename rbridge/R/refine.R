#' Refine an embedding with scBIOT's batch-aware optimal transport
#'
#' Sends one reduction of the object (a Seurat \code{DimReduc} or a SingleCellExperiment
#' \code{reducedDim}: PCA, LSI, \code{"ferry"} from \code{\link{ferry_integrate}}, any other method's
#' embedding) and the batch of each cell to \code{scferry.refine()} in Python, and writes the refined
#' embedding back as a new reduction: Seurat reduction \code{name} (default \code{"ferry.refined"},
#' key \code{FERRYREFINED_}, same assay as the input reduction) or SingleCellExperiment
#' \code{reducedDim(sce, toupper(name))} (\code{"FERRY.REFINED"}), cells in the object's order, as
#' many dimensions as the input. Use it like any reduction, e.g.
#' \code{Seurat::RunUMAP(obj, reduction = "ferry.refined", dims = 1:30)}.
#'
#' The algorithm (MiniBatch k-means prototypes per batch, unbalanced entropic OT to reference
#' prototypes, bridge-weighted displacements, cluster sharpening, rare-aware smoothing, step and
#' edge-stretch guards, best-iterate selection) is the Python package's; see
#' \code{help(scferry.refine)} there. The record of the run (selected iteration, its batch mixing,
#' neighbourhood overlap, graph strain, objective, trustworthiness, the input reduction and batch
#' column) is stored in \code{obj@misc$ferry_refine[[name]]} (Seurat) or
#' \code{S4Vectors::metadata(sce)$ferry_refine[[name]]}.
#'
#' Only the embedding and the batch column are sent to Python. Input checks run before Python
#' starts, and the object you pass is not modified: the result is in the returned object.
#'
#' @param object A Seurat or SingleCellExperiment object.
#' @param reduction Name of the reduction to refine (default \code{"pca"} for Seurat, \code{"PCA"}
#'   for SingleCellExperiment).
#' @param batch Cell-metadata column naming the batch of each cell (at least two batches, no NA).
#' @param name Name of the new reduction (must differ from \code{reduction}).
#' @param ... Parameters of \code{scferry.refine()}: \code{max_iter} (15), \code{device}, and the
#'   algorithm's hyper-parameters by name (e.g. \code{reference = "largest"}, \code{reg = 0.028},
#'   \code{prealign = "none"}, \code{prealign_shift = "ot"} (for batches that hold different
#'   cell types in different proportions, e.g. a sorted population: the pre-alignment's shift
#'   by unbalanced OT instead of the Gaussian map), \code{keep_input = FALSE},
#'   \code{centring = 0} (no final centring within clusters); the paper's field:
#'   \code{assign = "nearest", mass_weight = FALSE, sharpen_within = FALSE, prealign_linear = 1,
#'   union_size = "prototypes"}). Whole numbers are sent as Python \code{int}; wrap a value in
#'   \code{I()} to send it unchanged.
#' @param seed Random seed for Python (the R random stream is not used or changed).
#' @param progress Show Python's progress bar.
#' @return \code{object} with the new reduction and the record added.
#' @seealso \code{\link{ferry_integrate}}
#' @examples
#' if (requireNamespace("SeuratObject", quietly = TRUE) && ferry_python_ok()) {
#'     data("pbmc_small", package = "SeuratObject")
#'     pbmc <- suppressWarnings(SeuratObject::UpdateSeuratObject(pbmc_small))
#'     # pbmc_small has a PCA; with your data: Seurat::RunPCA(...) first
#'     pbmc <- ferry_refine(pbmc, reduction = "pca", batch = "groups", max_iter = 3)
#'     dim(SeuratObject::Embeddings(pbmc, "ferry.refined"))
#'     # then e.g. Seurat::RunUMAP(pbmc, reduction = "ferry.refined", dims = 1:19)
#' }
#' @export
ferry_refine <- function(object, reduction = NULL, batch, name = "ferry.refined", ..., seed = 0L,
                         progress = FALSE) {
    if (!(.ferry_is_seurat(object) || .ferry_is_sce(object))) {
        .ferry_stop("object must be a Seurat or SingleCellExperiment object; got ", class(object)[1L])
    }
    seurat <- .ferry_is_seurat(object)
    .ferry_need(if (seurat) "SeuratObject" else "SingleCellExperiment", "for this object")
    reduction <- reduction %||% (if (seurat) "pca" else "PCA")
    for (a in list(list("reduction", reduction), list("name", name))) {
        v <- a[[2L]]
        if (!is.character(v) || length(v) != 1L || is.na(v) || !nzchar(v)) {
            .ferry_stop(a[[1L]], " must be one non-empty string")
        }
    }
    if (missing(batch)) .ferry_stop("batch = '<metadata column>' naming the batch of each cell is required")
    out_name <- if (seurat) name else toupper(name)
    if (identical(out_name, reduction)) {
        .ferry_stop("name must differ from reduction ('", reduction, "'): refine never overwrites its input")
    }
    have <- if (seurat) SeuratObject::Reductions(object) else SingleCellExperiment::reducedDimNames(object)
    if (!reduction %in% have) {
        .ferry_stop("reduction '", reduction, "' is not in the object; available: ", .ferry_list(have),
                    if (seurat) ". Compute it first, e.g. Seurat::RunPCA(obj)" else
                        ". Compute it first, e.g. scater::runPCA(sce)")
    }
    emb <- if (seurat) SeuratObject::Embeddings(object, reduction) else
        SingleCellExperiment::reducedDim(object, reduction)
    emb <- as.matrix(emb)
    if (!is.numeric(emb) || nrow(emb) != ncol(object)) {
        .ferry_stop("reduction '", reduction, "' must be a numeric cells x dimensions matrix with one row ",
                    "per cell")
    }
    bad <- !is.finite(emb)
    if (any(bad)) {
        .ferry_stop("reduction '", reduction, "' has ", sum(bad), " non-finite value(s) (NA, NaN or Inf) in ",
                    sum(rowSums(bad) > 0), " cell(s); recompute it or drop those cells first")
    }
    cells <- .ferry_cells(object)
    b <- .ferry_check_column(object, batch, "batch", "the object")
    f <- if (is.factor(b)) droplevels(b) else factor(as.character(b))
    if (nlevels(f) < 2L) {
        .ferry_stop("batch column '", batch, "' has a single value ('", levels(f)[1L],
                    "'); refine aligns batches to each other and needs at least two")
    }
    params <- .ferry_method_params(list(...),
                                   reserved = c("adata", "basis", "batch_key", "key_added", "seed", "progress"))
    if (!is.numeric(seed) || length(seed) != 1L || is.na(seed)) .ferry_stop("seed must be one number")

    sf <- .ferry_require_python()
    empty <- Matrix::sparseMatrix(i = integer(0), j = integer(0), x = numeric(0),
                                  dims = c(1L, length(cells)), dimnames = list("none", cells))
    adata <- .ferry_anndata(methods::as(empty, "CsparseMatrix"))
    .ferry$bridge$set_obsm(adata, "X_input", unname(emb))
    .ferry$bridge$set_obs_categorical(adata, "batch", as.integer(f) - 1L, levels(f))
    args <- c(list(adata, basis = "X_input", batch_key = "batch", key_added = "X_refined",
                   seed = as.integer(seed), progress = isTRUE(progress)), params)
    rec <- .ferry_call(sf$refine, args, "scferry.refine()")
    out <- .ferry_read_obsm(adata, "X_refined")

    fields <- c("best_iter", "n_iter", "mix", "overlap", "strain", "J", "mix_start",
                "prealign_strength", "input_mixing", "start_competed",
                "centring_clusters", "centring_gain", "trustworthiness")
    record <- c(list(reduction = reduction, batch = batch),
                lapply(stats::setNames(fields, fields),
                       function(k) reticulate::py_to_r(reticulate::py_get_item(rec, k))),
                list(params = params, seed = as.integer(seed),
                     created = format(Sys.time(), "%Y-%m-%d %H:%M:%S"),
                     scferry_version = .ferry_py_version()))
    object <- .ferry_add_embedding(object, out, NULL, name = name)
    if (seurat) {
        # the refined reduction belongs to the same assay as its input
        SeuratObject::DefaultAssay(object[[name]]) <- SeuratObject::DefaultAssay(object[[reduction]])
        misc <- object@misc
        misc$ferry_refine[[name]] <- record
        object@misc <- misc
    } else {
        md <- S4Vectors::metadata(object)
        md$ferry_refine[[out_name]] <- record
        S4Vectors::metadata(object) <- md
    }
    object
}
