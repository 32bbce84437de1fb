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
.ferry_add_embedding <- function(obj, emb, rec, name = "ferry", assay = NULL) {
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
        # the record also goes into the reduction's misc slot, which subsetting keeps with the reduction
        dr <- SeuratObject::CreateDimReducObject(embeddings = emb, key = key,
                                                 assay = assay %||% SeuratObject::DefaultAssay(obj),
                                                 misc = if (is.null(rec)) list() else list(ferry = rec))
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

# P: labels x cells (columns = colnames(obj), each sums to 1, or NA for cells no labelled
# reference cell reached), rownames = labels.
# kind = "predictions" (max row + metadata, like Seurat::TransferData) or "proportions".
# pname (predictions only): NULL writes assay "ferry.predictions" and the TransferData columns
# predicted.id, prediction.score.<label>, prediction.score.max (removing prediction.score.* columns
# of an earlier transfer first); a name writes assay "ferry.predictions.<name>" and the MapQuery
# columns predicted.<name>, predicted.<name>.score, leaving other transfers alone.
.ferry_add_scores <- function(obj, P, kind = c("predictions", "proportions"), pname = NULL) {
    kind <- match.arg(kind)
    P <- P[, colnames(obj), drop = FALSE]
    labels <- rownames(P)
    name <- paste0("ferry.", kind, if (!is.null(pname)) paste0(".", pname))
    reached <- colSums(is.na(P)) == 0L
    pmax_ <- rep(NA_real_, ncol(P))
    pred <- rep(NA_character_, ncol(P))
    if (any(reached)) {
        pmax_[reached] <- apply(P[, reached, drop = FALSE], 2L, max)
        pred[reached] <- labels[max.col(t(P[, reached, drop = FALSE]), ties.method = "first")]
    }
    names(pmax_) <- colnames(P)
    id_col <- if (is.null(pname)) "predicted.id" else paste0("predicted.", pname)
    max_col <- if (is.null(pname)) "prediction.score.max" else paste0("predicted.", pname, ".score")
    if (.ferry_is_seurat(obj)) {
        M <- P
        rownames(M) <- .ferry_assay_rownames(labels, kind == "predictions")
        if (kind == "predictions") M <- rbind(M, max = pmax_)
        a <- SeuratObject::CreateAssayObject(data = M, check.matrix = FALSE)
        SeuratObject::Key(a) <- paste0(gsub("[^[:alnum:]]", "", name), "_")
        obj[[name]] <- a
        if (kind == "predictions") {
            md <- data.frame(pred, row.names = colnames(P), stringsAsFactors = FALSE)
            names(md) <- id_col
            if (is.null(pname)) {
                old <- grep("^prediction\\.score\\.", colnames(obj@meta.data), value = TRUE)
                for (col in old) obj[[col]] <- NULL
                # as Seurat's TransferData: "prediction.score." + label, through make.names as a
                # whole (label 2 -> prediction.score.2, "B cell" -> prediction.score.B.cell)
                score_names <- make.unique(c(id_col, max_col,
                                             make.names(paste0("prediction.score.", labels))))[-(1:2)]
                sc <- as.data.frame(t(P), optional = TRUE)
                names(sc) <- score_names
                md <- cbind(md, sc)
            }
            md[[max_col]] <- unname(pmax_)
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
            cd[[id_col]] <- pred
            cd[[max_col]] <- unname(pmax_)
            SummarizedExperiment::colData(obj) <- cd
        }
    }
    obj
}
