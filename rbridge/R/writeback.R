# Building the R-side results (DimReduc / reducedDim, prediction assays / altExps). These functions
# take and return objects; callers assign only after every step has succeeded. The Python package's
# scferry.r.write_back calls them too (scferry:::), so objects written from Python get these shapes.

# Seurat key for a reduction name: "ferry" -> "FERRY_" (alphanumeric, starting with a letter).
.ferry_reduction_key <- function(name) {
    key <- toupper(gsub("[^[:alnum:]]", "", name))
    if (!grepl("^[[:alpha:]]", key)) key <- paste0("X", key)
    paste0(key, "_")
}

# emb: cells x k matrix with rownames = cell names (any order, a superset of the object's cells).
# Seurat: reduction `name` (assay = the default assay); SCE: reducedDim toupper(name).
# rec: the ferry_integrate record for obj@misc$ferry / metadata(sce)$ferry (NULL: none).
.ferry_add_embedding <- function(obj, emb, rec, name = "ferry") {
    cells <- colnames(obj)
    miss <- setdiff(cells, rownames(emb))
    if (length(miss)) {
        .ferry_stop("internal: the embedding lacks ", length(miss), " cell(s) of the object (e.g. ",
                    .ferry_list(miss, 3L), ")")
    }
    emb <- emb[cells, , drop = FALSE]
    storage.mode(emb) <- "double"
    key <- .ferry_reduction_key(name)
    colnames(emb) <- paste0(key, seq_len(ncol(emb)))
    if (.ferry_is_seurat(obj)) {
        dr <- SeuratObject::CreateDimReducObject(embeddings = emb, key = key,
                                                 assay = SeuratObject::DefaultAssay(obj))
        obj[[name]] <- dr
        if (!is.null(rec)) {
            misc <- obj@misc
            misc$ferry <- rec
            obj@misc <- misc
        }
    } else {
        SingleCellExperiment::reducedDim(obj, toupper(name)) <- emb
        if (!is.null(rec)) {
            md <- S4Vectors::metadata(obj)
            md$ferry <- rec
            S4Vectors::metadata(obj) <- md
        }
    }
    obj
}

# Seurat's CreateAssayObject replaces "_" and "|" with "-" in feature names; do it ourselves (and
# keep names unique and clear of the "max" row) so that no warning is raised.
.ferry_assay_rownames <- function(labels, max_row) {
    rn <- gsub("[_|]", "-", labels)
    rn[!nzchar(rn)] <- "unnamed"
    if (max_row) make.unique(c("max", rn))[-1L] else make.unique(rn)
}

# P: labels x cells (columns = colnames(obj), each sums to 1), rownames = labels.
# kind = "predictions" (max row + metadata, like Seurat::TransferData) or "proportions".
.ferry_add_scores <- function(obj, P, kind = c("predictions", "proportions")) {
    kind <- match.arg(kind)
    P <- P[, colnames(obj), drop = FALSE]
    labels <- rownames(P)
    name <- paste0("ferry.", kind)
    pmax_ <- apply(P, 2L, max)
    pred <- labels[max.col(t(P), ties.method = "first")]
    if (.ferry_is_seurat(obj)) {
        M <- P
        rownames(M) <- .ferry_assay_rownames(labels, kind == "predictions")
        if (kind == "predictions") M <- rbind(M, max = pmax_)
        a <- SeuratObject::CreateAssayObject(data = M, check.matrix = FALSE)
        SeuratObject::Key(a) <- paste0("ferry", kind, "_")
        obj[[name]] <- a
        if (kind == "predictions") {
            md <- data.frame(predicted.id = pred, t(P), prediction.score.max = pmax_,
                             row.names = colnames(P), check.names = FALSE, stringsAsFactors = FALSE)
            score_names <- make.unique(c("predicted.id", "prediction.score.max",
                                         paste0("prediction.score.", make.names(labels))))[-(1:2)]
            names(md) <- c("predicted.id", score_names, "prediction.score.max")
            obj <- SeuratObject::AddMetaData(obj, md)
        }
    } else {
        M <- P
        if (kind == "predictions") {
            rownames(M) <- make.unique(c("max", labels))[-1L]
            M <- rbind(M, max = pmax_)
        }
        assays <- stats::setNames(list(M), if (kind == "predictions") "probabilities" else "proportions")
        se <- SummarizedExperiment::SummarizedExperiment(assays = assays)
        SingleCellExperiment::altExp(obj, name) <- se
        if (kind == "predictions") {
            cd <- SummarizedExperiment::colData(obj)
            cd$predicted.id <- pred
            cd$prediction.score.max <- unname(pmax_)
            SummarizedExperiment::colData(obj) <- cd
        }
    }
    obj
}
