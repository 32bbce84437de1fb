#' Read an .h5ad file into a Seurat or SingleCellExperiment object
#'
#' Reads the file with the Python \code{anndata} package of the scferry environment and builds the R
#' object without densifying the counts. \code{X} (or \code{layer}) becomes the \code{counts} of the
#' object; \code{obs} columns become cell metadata (categoricals become factors, missing values NA);
#' numeric \code{obsm} entries become reductions: Seurat reduction \code{tolower(name)} without the
#' \code{X_} prefix (key e.g. \code{SPATIAL_}), SingleCellExperiment \code{reducedDim}
#' \code{toupper(name)} without the prefix (\code{"X_pca"} -> \code{"PCA"}). For Seurat, "_" in feature
#' names is replaced by "-" (as Seurat itself does).
#'
#' @param path Path of the .h5ad file.
#' @param as Class of the result.
#' @param layer \code{NULL} to use \code{X}, or the name of a layer holding the counts.
#' @param assay Name of the Seurat assay (default \code{"RNA"}) or of the SingleCellExperiment assay
#'   (default \code{"counts"}) for the counts.
#' @param project Seurat project name.
#' @return A Seurat or SingleCellExperiment object.
#' @examples
#' f <- ferry_example_data("st", must_exist = FALSE)
#' if (!is.na(f) && requireNamespace("SingleCellExperiment", quietly = TRUE) && ferry_python_ok()) {
#'     sce <- ferry_read_h5ad(f, as = "SingleCellExperiment")
#'     sce
#' }
#' @export
ferry_read_h5ad <- function(path, as = c("Seurat", "SingleCellExperiment"), layer = NULL,
                            assay = NULL,
                            project = "scferry") {
    as <- match.arg(as)
    assay <- assay %||% if (as == "Seurat") "RNA" else "counts"
    if (!is.character(path) || length(path) != 1L || !file.exists(path)) {
        .ferry_stop("path must be an existing .h5ad file; got ", if (is.character(path)) path[1L] else class(path)[1L])
    }
    .ferry_need(if (as == "Seurat") "SeuratObject" else "SingleCellExperiment", paste0("for as = '", as, "'"))
    .ferry_require_python()
    parts <- .ferry_py(.ferry$bridge$read_h5ad_parts(normalizePath(path), layer), paste0("reading ", path))
    cells <- unlist(parts$cells)
    genes <- unlist(parts$genes)
    if (as == "Seurat") genes <- make.unique(gsub("_", "-", genes, fixed = TRUE))
    m <- methods::new("dgCMatrix", i = as.integer(parts$i), p = as.integer(parts$p),
                      x = as.numeric(parts$x), Dim = c(as.integer(parts$n_genes), as.integer(parts$n_cells)),
                      Dimnames = list(genes, cells))
    md <- .ferry_obs_frame(parts$obs, cells)
    if (as == "Seurat") {
        obj <- SeuratObject::CreateSeuratObject(counts = m, project = project, assay = assay,
                                                meta.data = if (ncol(md)) md else NULL)
        for (k in names(parts$obsm)) {
            e <- parts$obsm[[k]]
            nm <- tolower(sub("^X_", "", k))
            key <- .ferry_reduction_key(nm)
            dimnames(e) <- list(cells, paste0(key, seq_len(ncol(e))))
            obj[[nm]] <- SeuratObject::CreateDimReducObject(embeddings = e, key = key, assay = assay)
        }
    } else {
        obj <- SingleCellExperiment::SingleCellExperiment(
            assays = stats::setNames(list(m), assay),
            colData = S4Vectors::DataFrame(md, check.names = FALSE))
        for (k in names(parts$obsm)) {
            e <- parts$obsm[[k]]
            rownames(e) <- cells
            SingleCellExperiment::reducedDim(obj, toupper(sub("^X_", "", k))) <- e
        }
    }
    obj
}

# obs parts from scferry._rbridge.read_h5ad_parts -> data.frame with NA restored.
.ferry_obs_frame <- function(obs, cells) {
    cols <- lapply(obs, function(p) {
        mask <- as.logical(p$mask)
        v <- switch(p$kind,
            factor = {
                lv <- as.character(unlist(p$levels))
                idx <- as.integer(p$values) + 1L
                idx[idx < 1L] <- NA_integer_
                structure(idx, levels = lv, class = "factor")
            },
            logical = as.logical(p$values),
            integer = as.integer(p$values),
            double = as.numeric(p$values),
            character = as.character(unlist(p$values)))
        v[mask] <- NA
        v
    })
    df <- data.frame(row.names = cells)
    for (n in names(cols)) df[[n]] <- cols[[n]]
    df
}

#' Paths of the example data shipped with scferry
#'
#' The pancreatic ductal adenocarcinoma demo (Moncada et al. 2020, patient A): \code{"scrna"}, inDrop
#' scRNA-seq with \code{obs$cell_type}, and \code{"st"}, spatial transcriptomics spots; both raw counts,
#' as .h5ad files. They live in the scferry repository (\file{inst/extdata}); the folder is found from
#' \env{SCFERRY_EXTDATA}, this package's \file{extdata}, or the repository checkout (see
#' \code{\link{ferry_setup}}).
#'
#' @param which \code{"scrna"} or \code{"st"}.
#' @param must_exist Signal an error when the file is not found (otherwise return \code{NA}).
#' @return The file path.
#' @examples
#' ferry_example_data("scrna", must_exist = FALSE)
#' @export
ferry_example_data <- function(which = c("scrna", "st"), must_exist = TRUE) {
    which <- match.arg(which)
    file <- paste0("pdac_demo_", which, ".h5ad")
    dirs <- c(Sys.getenv("SCFERRY_EXTDATA", unset = ""), system.file("extdata", package = "scferry"))
    repo <- .ferry_repo_path()
    if (!is.null(repo)) dirs <- c(dirs, file.path(repo, "inst", "extdata"))
    for (d in dirs[nzchar(dirs)]) {
        f <- file.path(d, file)
        if (file.exists(f)) return(normalizePath(f))
    }
    if (must_exist) {
        .ferry_stop("example file ", file, " not found in ", .ferry_list(dirs[nzchar(dirs)]),
                    "; set SCFERRY_EXTDATA to the folder holding it")
    }
    NA_character_
}
