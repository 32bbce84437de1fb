# Input checks. Everything here runs before Python is started, and nothing here modifies the
# user's objects.

.ferry_coldata_names <- function(obj) {
    if (.ferry_is_seurat(obj)) colnames(obj@meta.data) else colnames(SummarizedExperiment::colData(obj))
}

.ferry_coldata <- function(obj, col) {
    if (.ferry_is_seurat(obj)) obj@meta.data[[col]] else SummarizedExperiment::colData(obj)[[col]]
}

.ferry_cells <- function(obj) {
    cells <- colnames(obj)
    if (is.null(cells)) {
        .ferry_stop("a ", .ferry_class(obj), " object has no cell names (colnames); set them first")
    }
    cells
}

# A metadata column that must exist, be a plain vector and have no NA.
# `keep`: optional logical vector; only those cells must be free of NA (and only they are returned).
.ferry_check_column <- function(obj, col, what, objname, keep = NULL) {
    if (!is.character(col) || length(col) != 1L || is.na(col) || !nzchar(col)) {
        .ferry_stop(what, " must be one column name (a string)")
    }
    cols <- .ferry_coldata_names(obj)
    if (!col %in% cols) {
        .ferry_stop(what, " column '", col, "' is not in the cell metadata of ", objname,
                    "; available columns: ", .ferry_list(cols, 50L))
    }
    v <- .ferry_coldata(obj, col)
    if (!is.atomic(v) || !is.null(dim(v))) {
        .ferry_stop(what, " column '", col, "' of ", objname, " must be a plain vector (factor, character, ",
                    "number or logical); it is a ", class(v)[1L])
    }
    if (!is.null(keep)) v <- v[keep]
    n_na <- sum(is.na(v))
    if (n_na > 0L) {
        .ferry_stop(what, " column '", col, "' of ", objname, " has ", n_na, " missing value(s) (NA) among ",
                    length(v), " cells; remove those cells or fill the values first")
    }
    v
}

# Normalise `objects` (+ batch) into a description of the input:
# list(single = logical, cls = class name, objects = named list, batch = column or NULL)
.ferry_inputs <- function(objects, batch = NULL) {
    if (.ferry_is_seurat(objects) || .ferry_is_sce(objects)) {
        if (is.null(batch)) {
            .ferry_stop("a single ", .ferry_class(objects), " object needs batch = '<metadata column>' ",
                        "naming the dataset of each cell; or pass a named list of objects, one per dataset")
        }
        v <- .ferry_check_column(objects, batch, "batch", "the object")
        n <- length(unique(v))
        if (n < 2L) {
            .ferry_stop("batch column '", batch, "' has a single value ('", as.character(v[1L]),
                        "'); integration needs at least two datasets")
        }
        .ferry_cells(objects)
        return(list(single = TRUE, cls = .ferry_class(objects), objects = list(.single = objects),
                    batch = batch))
    }
    if (!is.list(objects) || inherits(objects, "data.frame")) {
        .ferry_stop("objects must be a named list of Seurat or SingleCellExperiment objects (one per ",
                    "dataset), or one such object with batch = '<column>'; got ", class(objects)[1L])
    }
    if (length(objects) < 2L) {
        .ferry_stop("objects must hold at least two datasets; got ", length(objects),
                    ". For one object with several batches use batch = '<column>'")
    }
    nm <- names(objects)
    if (is.null(nm) || any(is.na(nm)) || any(!nzchar(nm))) {
        .ferry_stop("objects must be a *named* list (the names are the dataset names, e.g. ",
                    "list(rna = rna, atac = atac)); some names are missing")
    }
    if (anyDuplicated(nm)) .ferry_stop("dataset names must be unique; duplicated: ", .ferry_list(nm[duplicated(nm)]))
    cls <- vapply(objects, .ferry_class, "")
    bad <- !cls %in% c("Seurat", "SingleCellExperiment")
    if (any(bad)) {
        .ferry_stop("every element of objects must be a Seurat or SingleCellExperiment object; ",
                    paste0("'", nm[bad], "' is a ", cls[bad], collapse = ", "))
    }
    if (length(unique(cls)) > 1L) {
        .ferry_stop("objects mixes classes (", paste0(nm, ": ", cls, collapse = ", "), "); convert them to ",
                    "one class first (e.g. Seurat::as.SingleCellExperiment())")
    }
    if (!is.null(batch)) {
        .ferry_stop("batch = is for a single object holding several datasets; with a list, each element ",
                    "is one dataset already")
    }
    cells <- lapply(objects, .ferry_cells)
    all_cells <- unlist(cells, use.names = FALSE)
    # Paired modalities (e.g. RNA + ATAC of the same nuclei) hold the same cells in every object;
    # Python's check_paired then checks the order. Partial overlaps stay an error.
    paired <- all(vapply(cells, function(x) setequal(x, cells[[1L]]), TRUE))
    if (!paired && anyDuplicated(all_cells)) {
        dup <- unique(all_cells[duplicated(all_cells)])
        where <- vapply(cells, function(x) sum(x %in% dup), 0L)
        .ferry_stop(length(dup), " cell name(s) occur in more than one object (e.g. ", .ferry_list(dup, 5L),
                    "; per object: ", paste0(nm, " ", where, collapse = ", "), "); cell names must be unique ",
                    "across datasets, e.g. prefix them with the dataset name (Seurat::RenameCells(obj, ",
                    "add.cell.id = 'rna'), or colnames(sce) <- paste0('rna_', colnames(sce)))")
    }
    list(single = FALSE, cls = cls[[1L]], objects = objects, batch = NULL)
}

# Counts matrix (genes x cells, dgCMatrix with dimnames) of one object.
# Seurat: `assay` (default DefaultAssay) and `layer` (slot: counts/data/scale.data; Seurat 5 layer).
# SingleCellExperiment: `layer` is the assay name ("counts"); `assay`, if given, names an altExp.
.ferry_counts <- function(obj, assay, layer, objname) {
    if (!is.character(layer) || length(layer) != 1L) .ferry_stop("layer must be one string, e.g. 'counts'")
    if (.ferry_is_seurat(obj)) {
        assays <- SeuratObject::Assays(obj)
        assay <- assay %||% SeuratObject::DefaultAssay(obj)
        if (!assay %in% assays) {
            .ferry_stop("assay '", assay, "' not found in ", objname, "; it has assays: ", .ferry_list(assays))
        }
        a <- obj[[assay]]
        if (inherits(a, "Assay5")) {
            # Seurat 5 API, looked up at run time (SeuratObject 4 has no Layers/LayerData)
            Layers <- getExportedValue("SeuratObject", "Layers")
            LayerData <- getExportedValue("SeuratObject", "LayerData")
            layers <- Layers(a)
            hit <- layers[layers == layer | startsWith(layers, paste0(layer, "."))]
            if (!length(hit)) {
                .ferry_stop("layer '", layer, "' not found in assay '", assay, "' of ", objname,
                            "; it has layers: ", .ferry_list(layers))
            }
            ms <- lapply(hit, function(l) LayerData(a, layer = l))
            m <- if (length(ms) == 1L) ms[[1L]] else do.call(cbind, ms)[, colnames(obj), drop = FALSE]
        } else {
            slots <- c("counts", "data", "scale.data")
            filled <- slots[vapply(slots, function(s) {
                length(methods::slot(a, s)) > 0L
            }, TRUE)]
            if (!layer %in% slots) {
                .ferry_stop("layer '", layer, "' is not a layer of a Seurat v3/v4 assay; use one of ",
                            .ferry_list(filled), " (assay '", assay, "' of ", objname, ")")
            }
            m <- SeuratObject::GetAssayData(obj, assay = assay, slot = layer)
            if (!prod(dim(m))) {
                .ferry_stop("layer '", layer, "' of assay '", assay, "' in ", objname, " is empty; ",
                            "non-empty layers: ", .ferry_list(filled))
            }
        }
    } else {
        x <- obj
        if (!is.null(assay)) {
            alts <- SingleCellExperiment::altExpNames(obj)
            if (!assay %in% alts) {
                .ferry_stop("assay = '", assay, "' names an altExp of a SingleCellExperiment, but ", objname,
                            " has altExps: ", .ferry_list(alts), " (use assay = NULL for the main experiment)")
            }
            x <- SingleCellExperiment::altExp(obj, assay)
        }
        an <- SummarizedExperiment::assayNames(x)
        if (!layer %in% an) {
            .ferry_stop("assay '", layer, "' (argument layer) not found in ", objname, "; it has assays: ",
                        .ferry_list(an))
        }
        m <- SummarizedExperiment::assay(x, layer, withDimnames = TRUE)
    }
    m <- .ferry_as_dgc(m, objname)
    if (is.null(rownames(m))) .ferry_stop("the counts of ", objname, " have no feature (gene) names")
    if (anyDuplicated(rownames(m))) {
        .ferry_stop("feature names of ", objname, " are not unique (e.g. ",
                    .ferry_list(unique(rownames(m)[duplicated(rownames(m))]), 5L), ")")
    }
    colnames(m) <- colnames(obj)
    m
}

.ferry_as_dgc <- function(m, objname) {
    if (methods::is(m, "dgCMatrix")) return(m)
    out <- tryCatch({
        if (!methods::is(m, "Matrix") && !is.matrix(m)) m <- methods::as(m, "CsparseMatrix")
        m <- methods::as(m, "CsparseMatrix")
        m <- methods::as(m, "generalMatrix")
        methods::as(m, "dMatrix")
    }, error = function(e) {
        .ferry_stop("cannot turn the counts of ", objname, " (a ", class(m)[1L], ") into a sparse ",
                    "dgCMatrix: ", conditionMessage(e))
    })
    if (!methods::is(out, "dgCMatrix")) out <- methods::as(out, "dgCMatrix")
    out
}

# Named list (dataset -> dgCMatrix genes x cells) from the normalised input.
.ferry_dataset_matrices <- function(inp, assay, layer) {
    if (inp$single) {
        obj <- inp$objects[[1L]]
        m <- .ferry_counts(obj, assay, layer, "the object")
        b <- as.character(.ferry_coldata(obj, inp$batch))
        lv <- if (is.factor(.ferry_coldata(obj, inp$batch))) {
            intersect(levels(.ferry_coldata(obj, inp$batch)), b)
        } else unique(b)
        mats <- lapply(lv, function(l) m[, b == l, drop = FALSE])
        names(mats) <- lv
    } else {
        mats <- Map(function(o, n) .ferry_counts(o, assay, layer, paste0("'", n, "'")),
                    inp$objects, names(inp$objects))
    }
    # Shared feature names are the method's business (uniPort's diagonal mode and MinNet need none):
    # Python checks them and its message comes back.
    empty <- vapply(mats, ncol, 0L) == 0L
    if (any(empty)) .ferry_stop("dataset(s) without cells: ", .ferry_list(names(mats)[empty]))
    mats
}

# Method parameters from `...`: named; whole-number doubles become integers (so that max_iter = 200
# reaches Python as int) unless wrapped in I().
.ferry_method_params <- function(dots, reserved = c("datasets", "method", "batch_key", "seed", "progress")) {
    if (!length(dots)) return(list())
    nm <- names(dots)
    if (is.null(nm) || any(!nzchar(nm))) {
        .ferry_stop("extra arguments (...) are method parameters and must be named, e.g. max_iter = 200")
    }
    if (any(nm %in% reserved)) {
        .ferry_stop("use the argument of the R function instead of passing ", .ferry_list(nm[nm %in% reserved]),
                    " through ...")
    }
    lapply(dots, function(v) {
        if (inherits(v, "AsIs")) return(unclass(v))
        if (is.double(v) && length(v) >= 1L && !is.null(v) && all(is.finite(v)) &&
            all(v == round(v)) && all(abs(v) < .Machine$integer.max) && is.null(dim(v))) {
            return(as.integer(v))
        }
        v
    })
}

# Cell labels for methods trained with labels (integrate(label_key = ...)): named list dataset ->
# character vector, only for datasets whose object has the column (the others count as unlabelled).
# NA is refused here: reticulate would turn it into a label.
.ferry_dataset_labels <- function(inp, mats, key) {
    if (!is.character(key) || length(key) != 1L || is.na(key)) .ferry_stop("label_key must be one column name")
    objs <- if (inp$single) rep(list(inp$objects[[1L]]), length(mats)) else inp$objects
    names(objs) <- names(mats)
    out <- list()
    for (n in names(mats)) {
        obj <- objs[[n]]
        if (!key %in% .ferry_coldata_names(obj)) next
        lab <- .ferry_coldata(obj, key)
        if (inp$single) lab <- lab[as.character(.ferry_coldata(obj, inp$batch)) == n]
        if (anyNA(lab)) {
            .ferry_stop("label_key '", key, "' has ", sum(is.na(lab)), " NA value(s) in dataset '", n,
                        "'; fill them (e.g. with 'unknown') or drop those cells")
        }
        out[[n]] <- as.character(lab)
    }
    if (!length(out)) {
        .ferry_stop("label_key '", key, "' is not a cell-metadata column of any dataset (",
                    .ferry_list(names(mats)), ")")
    }
    out
}
