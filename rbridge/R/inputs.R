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

# A metadata column that must exist, be a plain vector and have no NA (unless allow_na).
# `keep`: optional logical vector; only those cells must be free of NA (and only they are returned).
.ferry_check_column <- function(obj, col, what, objname, keep = NULL, allow_na = FALSE) {
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
    if (allow_na) return(v)
    n_na <- sum(is.na(v))
    if (n_na > 0L) {
        .ferry_stop(what, " column '", col, "' of ", objname, " has ", n_na, " missing value(s) (NA) among ",
                    length(v), " cells; remove those cells or fill the values first")
    }
    v
}

# Normalise `objects` (+ batch, assay) into a description of the input:
# list(single = logical (one object split by batch), one_object = logical (one object, one dataset
# per assay), cls = class name, objects = named list, batch = column or NULL,
# assay = named list dataset -> assay name or NULL)
.ferry_inputs <- function(objects, batch = NULL, assay = NULL) {
    if (!is.null(assay) && (!is.character(assay) || !length(assay) || anyNA(assay) || any(!nzchar(assay)))) {
        .ferry_stop("assay must be NULL, one assay name, or one per dataset (e.g. assay = c(rna = 'RNA', ",
                    "adt = 'ADT')); got ", if (is.character(assay)) "empty or NA names" else class(assay)[1L])
    }
    if (.ferry_is_seurat(objects) || .ferry_is_sce(objects)) {
        if (is.null(batch) && length(assay) >= 2L) {
            # one object, several assays of the same cells (CITE-seq RNA + ADT, multiome RNA + ATAC):
            # one dataset per assay, paired by cell name
            nm <- names(assay) %||% rep("", length(assay))
            nm[!nzchar(nm)] <- assay[!nzchar(nm)]
            if (anyDuplicated(nm)) .ferry_stop("assay names the same dataset twice: ", .ferry_list(nm[duplicated(nm)]))
            .ferry_cells(objects)
            return(list(single = FALSE, one_object = TRUE, cls = .ferry_class(objects),
                        objects = stats::setNames(rep(list(objects), length(nm)), nm), batch = NULL,
                        assay = stats::setNames(as.list(unname(assay)), nm)))
        }
        if (is.null(batch)) {
            .ferry_stop("a single ", .ferry_class(objects), " object needs batch = '<metadata column>' ",
                        "naming the dataset of each cell, or assay = c(<dataset> = '<assay>', ...) naming ",
                        "one dataset per assay (e.g. CITE-seq: assay = c(rna = 'RNA', adt = 'ADT')); or pass ",
                        "a named list of objects, one per dataset")
        }
        if (length(assay) > 1L) {
            .ferry_stop("with batch = '", batch, "' every dataset is read from one assay: give one assay name ",
                        "(got ", length(assay), "), or leave batch = NULL to make one dataset per assay")
        }
        v <- .ferry_check_column(objects, batch, "batch", "the object")
        n <- length(unique(v))
        if (n < 2L) {
            .ferry_stop("batch column '", batch, "' has a single value ('", as.character(v[1L]),
                        "'); integration needs at least two datasets")
        }
        .ferry_cells(objects)
        lv <- if (is.factor(v)) intersect(levels(v), as.character(v)) else unique(as.character(v))
        return(list(single = TRUE, one_object = FALSE, cls = .ferry_class(objects),
                    objects = list(.single = objects), batch = batch,
                    assay = stats::setNames(rep(list(assay), length(lv)), lv)))
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
    list(single = FALSE, one_object = FALSE, cls = cls[[1L]], objects = objects, batch = NULL,
         assay = .ferry_assay_per_dataset(assay, nm))
}

# assay = NULL / one name / one per dataset (named by dataset, or in the order of the datasets).
.ferry_assay_per_dataset <- function(assay, nm) {
    n <- length(nm)
    if (is.null(assay)) return(stats::setNames(rep(list(NULL), n), nm))
    if (length(assay) == 1L && is.null(names(assay))) return(stats::setNames(rep(list(unname(assay)), n), nm))
    if (!is.null(names(assay)) && all(nzchar(names(assay)))) {
        miss <- setdiff(nm, names(assay))
        extra <- setdiff(names(assay), nm)
        if (length(miss) || length(extra)) {
            .ferry_stop("the names of assay must be the dataset names (", .ferry_list(nm), ")",
                        if (length(miss)) paste0("; missing: ", .ferry_list(miss)),
                        if (length(extra)) paste0("; not datasets: ", .ferry_list(extra)))
        }
        return(as.list(assay[nm]))
    }
    if (length(assay) != n) {
        .ferry_stop("assay must be one assay name, or one per dataset: named by dataset (e.g. assay = ",
                    "c(rna = 'RNA', adt = 'ADT')) or in the order of the objects; got ", length(assay),
                    " names for ", n, " datasets (", .ferry_list(nm), ")")
    }
    stats::setNames(as.list(unname(assay)), nm)
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
        if (inherits(a, "Assay5") && .ferry_seurat5()) {
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
                            "scferry needs the raw (unnormalised) counts, which Seurat keeps in the 'counts' ",
                            "layer: GetAssayData(obj, assay = '", assay, "', slot = \"counts\"). ",
                            "Non-empty layers here: ", .ferry_list(filled), ". If the object was built from ",
                            "normalised data only, rebuild it from the raw count matrix ",
                            "(CreateSeuratObject(counts = <raw counts>))")
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
                        .ferry_list(an), ". scferry needs the raw (unnormalised) counts, usually ",
                        "counts(sce) (assay 'counts'); pass layer = '<assay holding raw counts>'")
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
    attr(m, "ferry_where") <- if (.ferry_is_seurat(obj)) {
        paste0("layer (slot) '", layer, "' of assay '", assay, "' in ", objname)
    } else paste0("assay '", layer, "'", if (!is.null(assay)) paste0(" of altExp '", assay, "'"), " in ", objname)
    m
}

# Counts must be finite and non-negative (checked after every dataset's matrix was found, so that a
# missing or empty layer is reported first). Returns m without the description attribute.
.ferry_check_counts <- function(m) {
    where <- attr(m, "ferry_where")
    attr(m, "ferry_where") <- NULL
    bad <- !is.finite(m@x)
    if (any(bad)) {
        .ferry_stop(where, " has ", sum(bad), " non-finite value(s) (NA, NaN or Inf); scferry needs raw counts")
    }
    if (length(m@x) && min(m@x) < 0) {
        .ferry_stop(where, " has ", sum(m@x < 0), " negative value(s): it holds scaled or centred data, ",
                    "but scferry needs the raw counts (Seurat: layer = 'counts', i.e. GetAssayData(obj, ",
                    "slot = \"counts\"); SingleCellExperiment: layer = 'counts', i.e. counts(sce))")
    }
    m
}

# SeuratObject >= 5 (Assay5 objects with layers); the Assay5 code needs its API.
.ferry_seurat5 <- function() utils::packageVersion("SeuratObject") >= "5.0.0"

# What the R user calls the counts matrix of a dataset (for messages that Python wrote about ".X").
.ferry_x_name <- function(cls, assay, layer) {
    a <- unique(unlist(assay))
    if (identical(cls, "Seurat")) {
        paste0("layer (slot) '", layer, "'", if (length(a) == 1L) paste0(" of assay '", a, "'"))
    } else {
        paste0("assay '", layer, "'", if (length(a) == 1L) paste0(" of altExp '", a, "'"))
    }
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
.ferry_dataset_matrices <- function(inp, layer) {
    if (inp$single) {
        obj <- inp$objects[[1L]]
        m <- .ferry_check_counts(.ferry_counts(obj, inp$assay[[1L]], layer, "the object"))
        b <- as.character(.ferry_coldata(obj, inp$batch))
        lv <- if (is.factor(.ferry_coldata(obj, inp$batch))) {
            intersect(levels(.ferry_coldata(obj, inp$batch)), b)
        } else unique(b)
        mats <- lapply(lv, function(l) m[, b == l, drop = FALSE])
        names(mats) <- lv
    } else {
        mats <- Map(function(o, n) {
            .ferry_counts(o, inp$assay[[n]], layer,
                          if (inp$one_object) paste0("the object (dataset '", n, "')") else paste0("'", n, "'"))
        }, inp$objects, names(inp$objects))
    }
    # Shared feature names are the method's business (uniPort's diagonal mode and MinNet need none):
    # Python checks them and its message comes back.
    mats <- lapply(mats, .ferry_check_counts)
    empty <- vapply(mats, ncol, 0L) == 0L
    if (any(empty)) .ferry_stop("dataset(s) without cells: ", .ferry_list(names(mats)[empty]))
    one <- vapply(mats, ncol, 0L) < 2L
    if (any(one)) {
        .ferry_stop("dataset(s) ", .ferry_list(names(mats)[one]), " hold a single cell; integration learns ",
                    "from the spread of cells within each dataset and needs at least 2 cells per dataset ",
                    "(in practice hundreds): drop such datasets, or merge them into a related one")
    }
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
    lapply(dots, .ferry_py_value)
}

# One parameter value on its way to Python, its shape kept: whole-number doubles become integers
# (in nested lists too, e.g. list(rna = 3) -> {"rna": 3}); I(x) is sent as it is. reticulate sends
# a length-one vector as a scalar and a vector or unnamed list as a Python list, so list("CD3E")
# gives ["CD3E"].
.ferry_py_value <- function(v) {
    if (inherits(v, "AsIs")) return(unclass(v))
    if (is.list(v) && !is.data.frame(v) && is.null(attr(v, "class"))) {
        out <- lapply(v, .ferry_py_value)
        attributes(out) <- attributes(v)
        return(out)
    }
    if (is.double(v) && length(v) >= 1L && all(is.finite(v)) &&
        all(v == round(v)) && all(abs(v) < .Machine$integer.max) && is.null(dim(v))) {
        return(stats::setNames(as.integer(v), names(v)))
    }
    v
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
