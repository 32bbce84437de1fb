"""R objects in Python pipelines: read a Seurat / SingleCellExperiment ``.rds`` as AnnData, and write
scferry results back into the R object.

This is the rpy2 direction of the R bridge (Python drives R). The other direction, the scferry R
package driving Python through reticulate, calls :mod:`scferry._rbridge`, which needs neither R nor
rpy2.

Example (not run)::

    import scferry as sf
    from scferry import r as sfr
    rna = sfr.read_rds("rna.rds")             # Seurat or SingleCellExperiment -> AnnData
    st = sfr.read_rds("st.rds")
    model = sf.integrate({"rna": rna, "st": st})
    sf.transfer_labels(model, source="rna", target="st", label_key="cell_type")
    sfr.write_back(st, "st.rds", "st_ferry.rds")  # adds reduction "ferry" + predictions

Needs R with SingleCellExperiment (and Seurat for Seurat objects) and the Python packages
``rpy2<3.6`` (3.6 does not load with R < 4.3) and ``anndata2ri`` (``pip install 'scferry[r]'``);
``write_back`` also needs the scferry R package (``rbridge/``, installed by ``inst/setup.sh``), whose
write-back code it runs.
Conversions run inside ``rpy2``'s ``localconverter`` only: the global conversion rules of the
session are never changed.

What ``read_rds`` keeps (a Seurat object goes through ``Seurat::as.SingleCellExperiment``):

- the ``counts`` assay as ``X`` (sparse; name recorded in ``uns["X_name"]``), other assays
  (``logcounts``, ...) as layers;
- ``colData`` / Seurat ``meta.data`` as ``obs``: factors become categoricals, integers
  ``Int32``, logicals ``boolean``, with missing values kept missing (anndata2ri alone turns a
  logical NA into the integer -2147483648 and character NA into the string "NA": both are
  handled here);
- ``reducedDims`` as ``obsm`` (``PCA`` -> ``X_pca``, ``UMAP`` -> ``X_umap``, ``TSNE`` -> ``X_tsne``,
  other names unchanged, e.g. ``FERRY``);
- ``rowData`` as ``var``. Not converted: altExps / other Seurat assays, graphs, images,
  ``metadata`` (their names are listed in ``uns["scferry_r"]``).

``write_back`` reads the original ``.rds`` again and adds only the new results, so everything
else in the R object (metadata, reductions, assays) is unchanged.
"""
from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from anndata import AnnData

__all__ = ["read_rds", "write_back"]

_R_READ = r"""
function(path, assay) {
    obj <- readRDS(path)
    info <- list(class = class(obj)[1L], path = normalizePath(path))
    if (inherits(obj, "Seurat")) {
        if (!suppressPackageStartupMessages(requireNamespace("Seurat", quietly = TRUE))) {
            stop("R package 'Seurat' is needed to read a Seurat object")
        }
        assays <- SeuratObject::Assays(obj)
        if (is.null(assay)) assay <- SeuratObject::DefaultAssay(obj)
        if (!assay %in% assays) stop(sprintf("assay '%s' is not in the Seurat object; it has: %s",
                                             assay, paste(assays, collapse = ", ")))
        info$assay <- assay
        info$dropped_assays <- setdiff(assays, assay)
        info$dropped_graphs <- names(obj@graphs)
        md_names <- colnames(obj@meta.data)
        sce <- suppressWarnings(Seurat::as.SingleCellExperiment(obj, assay = assay))
        cd <- SummarizedExperiment::colData(sce)
        cd <- cd[, md_names, drop = FALSE]   # as.SingleCellExperiment adds 'ident'
        SummarizedExperiment::colData(sce) <- cd
    } else if (methods::is(obj, "SingleCellExperiment")) {
        sce <- obj
        info$assay <- NULL
    } else {
        stop(sprintf("%s holds a %s, not a Seurat or SingleCellExperiment object", path, class(obj)[1L]))
    }
    info$dropped_altexps <- SingleCellExperiment::altExpNames(sce)
    if (length(info$dropped_altexps)) SingleCellExperiment::altExps(sce) <- list()
    info$dropped_metadata <- names(S4Vectors::metadata(sce))
    S4Vectors::metadata(sce) <- list()
    an <- SummarizedExperiment::assayNames(sce)
    if (is.null(an) || !length(an)) stop("the object has no assays")
    first <- if ("counts" %in% an) "counts" else an[1L]
    SummarizedExperiment::assays(sce) <- SummarizedExperiment::assays(sce)[c(first, setdiff(an, first))]
    info$X_name <- first
    # anndata2ri maps a logical NA to -2147483648 and character NA to "NA": send both as
    # character with a marker and restore them in Python.
    fix <- function(df) {
        lg <- character(0); ch <- character(0)
        for (n in colnames(df)) {
            v <- df[[n]]
            if (is.logical(v)) {
                lg <- c(lg, n)
                df[[n]] <- ifelse(is.na(v), "\001NA", ifelse(v, "TRUE", "FALSE"))
            } else if (is.character(v) && anyNA(v)) {
                ch <- c(ch, n)
                v[is.na(v)] <- "\001NA"
                df[[n]] <- v
            }
        }
        list(df = df, logical = lg, character = ch)
    }
    cf <- fix(SummarizedExperiment::colData(sce))
    SummarizedExperiment::colData(sce) <- cf$df
    rf <- fix(SummarizedExperiment::rowData(sce))
    SummarizedExperiment::rowData(sce) <- rf$df
    info$obs_logical <- cf$logical
    info$obs_character_na <- cf$character
    info$var_logical <- rf$logical
    info$var_character_na <- rf$character
    list(sce = sce, info = info)
}
"""

# The shapes are built by the scferry R package (rbridge/R/writeback.R), the same code its
# ferry_integrate / ferry_transfer use, so objects written from Python and from R are identical.
_R_WRITE = r"""
function(path_in, path_out, emb, cells, name, P, labels) {
    if (!requireNamespace("scferry", quietly = TRUE)) {
        stop("writing results back needs the scferry R package: R CMD INSTALL rbridge in the scferry ",
             "repository (bash inst/setup.sh does it)")
    }
    obj <- readRDS(path_in)
    if (!inherits(obj, "Seurat") && !methods::is(obj, "SingleCellExperiment")) {
        stop(sprintf("%s holds a %s, not a Seurat or SingleCellExperiment object", path_in, class(obj)[1L]))
    }
    oc <- colnames(obj)
    cells <- as.character(cells)
    if (length(cells) != length(oc) || !setequal(cells, oc)) {
        stop(sprintf(paste0("the AnnData has %d cells and the R object %d; %d of the R object's cells are ",
                            "not in the AnnData (e.g. %s). write_back needs the same cells"),
                     length(cells), length(oc), sum(!oc %in% cells),
                     paste(utils::head(setdiff(oc, cells), 3L), collapse = ", ")))
    }
    if (!is.null(emb)) {
        rownames(emb) <- cells
        obj <- scferry:::.ferry_add_embedding(obj, emb, NULL, name)
    }
    if (!is.null(P)) {
        P <- t(P)
        dimnames(P) <- list(as.character(labels), cells)
        obj <- scferry:::.ferry_add_scores(obj, P, "predictions")
    }
    saveRDS(obj, path_out)
    invisible(TRUE)
}
"""

_NA_MARK = "\x01NA"
_state: dict[str, Any] = {}


def _r():
    """Start R (once) through rpy2 and return rpy2.robjects; a clear ImportError when unavailable."""
    if "ro" in _state:
        return _state["ro"]
    try:
        import anndata2ri  # noqa: F401  (checked here so that the error below names it)
        import rpy2.robjects as ro
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError(
            "scferry.r needs R and the Python packages rpy2<3.6 and anndata2ri==2.0.1: "
            "pip install 'scferry[r]' (rpy2 3.6 does not load with R 4.2). "
            f"Import failed with: {e}"
        ) from e
    # rpy2 prints a warning when R loads reticulate (which Seurat imports) about a bug fixed in
    # reticulate 1.23; drop that hook when the installed reticulate has the fix.
    ro.r('tryCatch(if (utils::packageVersion("reticulate") >= "1.23") '
         'setHook(packageEvent("reticulate", "onLoad"), NULL, "replace"), error = function(e) NULL)')
    ok = ro.r(
        'function() suppressPackageStartupMessages(all(vapply(c("SingleCellExperiment", '
        '"SummarizedExperiment", "S4Vectors"), requireNamespace, logical(1), quietly = TRUE)))'
    )()[0]
    if not ok:
        raise ImportError(
            "scferry.r needs the R packages SingleCellExperiment, SummarizedExperiment and S4Vectors "
            "(Bioconductor; on Debian: apt install r-bioc-singlecellexperiment)."
        )
    _state["ro"] = ro
    _state["read"] = ro.r(_R_SAFE % _R_READ)
    _state["write"] = ro.r(_R_SAFE % _R_WRITE)
    return ro


# Wrap an R function so that an R error comes back as its message (no console noise, no R call
# text) and package start-up messages are silenced.
_R_SAFE = r"""
local({
    f <- %s
    function(...) tryCatch(
        list(ok = TRUE, value = suppressPackageStartupMessages(f(...))),
        error = function(e) list(ok = FALSE, message = conditionMessage(e)))
})
"""


def _call(fun: str, what: str, *args):
    res = _state[fun](*args)
    if not res.rx2("ok")[0]:
        raise ValueError(f"{what} failed in R: {res.rx2('message')[0]}")
    return res.rx2("value")


def read_rds(path: str | os.PathLike, assay: str | None = None) -> AnnData:
    """Read an ``.rds`` file holding a Seurat or SingleCellExperiment object as AnnData.

    Parameters
    ----------
    path
        The ``.rds`` file.
    assay
        Seurat only: the assay to read (default: the object's default assay).

    Returns
    -------
    AnnData with raw counts in ``X`` (``uns["X_name"]`` names the R assay), other assays as layers,
    cell metadata in ``obs`` (types and missing values preserved), reductions in ``obsm``.
    ``uns["scferry_r"]`` records the source (class, path, assay) and what was not converted.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"no such file: {path}")
    ro = _r()
    import anndata2ri
    from rpy2.robjects.conversion import localconverter

    res = _call("read", f"reading {path}", path, ro.NULL if assay is None else assay)
    sce, info_r = res.rx2("sce"), res.rx2("info")
    info = {k: [str(x) for x in v] for k, v in zip(info_r.names, info_r)}
    with localconverter(ro.default_converter + anndata2ri.converter):
        adata = ro.conversion.get_conversion().rpy2py(sce)
    _restore(adata.obs, info.get("obs_logical", []), info.get("obs_character_na", []))
    _restore(adata.var, info.get("var_logical", []), info.get("var_character_na", []))
    adata.obs_names = adata.obs_names.astype(str)
    adata.var_names = adata.var_names.astype(str)
    x_name = info["X_name"][0]
    adata.uns["X_name"] = x_name
    adata.uns["scferry_r"] = {
        "class": info["class"][0],
        "path": info["path"][0],
        "assay": info["assay"][0] if info.get("assay") else "",
        "X_name": x_name,
        "not_converted": {k: info.get(k, []) for k in
                          ("dropped_assays", "dropped_altexps", "dropped_graphs", "dropped_metadata")},
    }
    return adata


def _restore(df: pd.DataFrame, logical: list[str], character_na: list[str]) -> None:
    for col in logical:
        v = df[col].astype(object)
        df[col] = pd.array([pd.NA if x == _NA_MARK or x is None else x == "TRUE" for x in v], dtype="boolean")
    for col in character_na:
        v = df[col]
        if isinstance(v.dtype, pd.CategoricalDtype):
            df[col] = v.cat.remove_categories([_NA_MARK]) if _NA_MARK in v.cat.categories else v
        else:
            df[col] = np.array([None if x == _NA_MARK else x for x in v.astype(object)], dtype=object)


def write_back(adata: AnnData, path_in: str | os.PathLike, path_out: str | os.PathLike,
               reduction_key: str = "X_scferry", name: str = "ferry") -> None:
    """Put scferry results of ``adata`` into the R object saved at ``path_in`` and save it to ``path_out``.

    Writes ``adata.obsm[reduction_key]`` as Seurat reduction ``name`` (key ``FERRY_``, assay = the
    default assay) or SingleCellExperiment ``reducedDim(toupper(name))``; and, when
    :func:`scferry.transfer_labels` wrote ``obsm["scferry_label_probs"]``, the predictions in the
    shapes the R package writes (Seurat: assay ``ferry.predictions`` with a ``max`` row, metadata
    ``predicted.id``, ``prediction.score.<label>``, ``prediction.score.max``; SingleCellExperiment:
    ``altExp "ferry.predictions"`` with assay ``probabilities`` and colData ``predicted.id``,
    ``prediction.score.max``). Rows are matched by cell name; the AnnData must hold the same cells
    as the R object (any order). Everything else in the R object is left as it was.
    """
    path_in, path_out = os.fspath(path_in), os.fspath(path_out)
    if not os.path.exists(path_in):
        raise FileNotFoundError(f"no such file: {path_in}")
    emb = None
    if reduction_key is not None:
        if reduction_key not in adata.obsm:
            raise KeyError(f"adata.obsm has no {reduction_key!r} (keys: {sorted(adata.obsm.keys())}); "
                           "run scferry.integrate first or pass reduction_key=")
        emb = np.ascontiguousarray(np.asarray(adata.obsm[reduction_key], dtype=np.float64))
    P = labels = None
    if "scferry_label_probs" in adata.obsm:
        cols = adata.uns.get("scferry_label_probs_columns")
        P = np.ascontiguousarray(np.asarray(adata.obsm["scferry_label_probs"], dtype=np.float64))
        if cols is None or len(cols) != P.shape[1]:
            raise ValueError("obsm['scferry_label_probs'] has no matching uns['scferry_label_probs_columns']")
        labels = [str(c) for c in cols]
    if emb is None and P is None:
        raise ValueError("nothing to write: no embedding and no label predictions")
    ro = _r()
    from rpy2.robjects import numpy2ri
    from rpy2.robjects.conversion import localconverter

    with localconverter(ro.default_converter + numpy2ri.converter):
        r_emb = ro.NULL if emb is None else ro.conversion.get_conversion().py2rpy(emb)
        r_P = ro.NULL if P is None else ro.conversion.get_conversion().py2rpy(P)
    r_labels = ro.NULL if labels is None else ro.StrVector(labels)
    cells = ro.StrVector([str(c) for c in adata.obs_names])
    _call("write", f"writing back into {path_in}", path_in, path_out, r_emb, cells, name, r_P, r_labels)
