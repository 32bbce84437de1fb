"""The Python side of the scferry R package (``rbridge/``), called through reticulate.

The R package imports this module (``reticulate::import("scferry._rbridge")``); Python users who
want R objects in Python pipelines use :mod:`scferry.r` (rpy2) instead. Both are the two directions
of one bridge: this module needs neither R nor rpy2, only NumPy, pandas, SciPy and anndata.

This module holds no algorithm. It exists because reticulate 1.28 (Debian bookworm) cannot convert
SciPy >= 1.11 sparse matrices to R and corrupts NA in data frames: every function here takes or
returns plain NumPy arrays, lists of strings or dicts of those, never sparse matrices or pandas
objects, so the R side always receives well-defined types. :func:`call` runs a scferry function
and returns the warnings it raised as data, so that R re-signals them as R warnings (Python's own
``sys:1: UserWarning: ...`` text on stderr is invisible to ``suppressWarnings`` and knitr).
"""
from __future__ import annotations

import os
import warnings

import numpy as np

# warnings other libraries raise about their own future that R users cannot act on
_QUIET = (DeprecationWarning, PendingDeprecationWarning, FutureWarning, ImportWarning, ResourceWarning)
_PKG_DIR = os.path.dirname(os.path.abspath(__file__))


def call(fun, args=(), kwargs=None):
    """Run ``fun(*args, **kwargs)`` recording the warnings it raises.

    Returns ``{"value": result, "warnings": [{"category": name, "message": text}, ...]}`` (each
    distinct warning once, in the order raised, every call: not only the first time a line warns).
    Deprecation-type warnings of other libraries are left out (Python hides them by default too).
    The warning filters are restored on return; exceptions propagate unchanged.
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        value = fun(*tuple(args), **dict(kwargs or {}))
    seen, out = set(), []
    for w in caught:
        if issubclass(w.category, _QUIET) and _PKG_DIR not in os.path.abspath(str(w.filename)):
            continue
        key = (w.category.__name__, str(w.message))
        if key in seen:
            continue
        seen.add(key)
        out.append({"category": key[0], "message": key[1]})
    return {"value": value, "warnings": out}


def model_summary(model):
    """What the fit chose, for the R message: ``{"method", "choices", "n_common_genes",
    "datasets"}``. ``choices`` is ``model.choices`` when the model records them (``{name:
    {"value", "reason"}}``), else the mode from ``model.params`` (without a reason)."""
    params = getattr(model, "params", None) or {}
    choices = {}
    recorded = getattr(model, "choices", None)
    if isinstance(recorded, dict):
        for k, v in recorded.items():
            if isinstance(v, dict):
                choices[str(k)] = {"value": _plain_str(v.get("value")), "reason": str(v.get("reason") or "")}
            else:
                choices[str(k)] = {"value": _plain_str(v), "reason": ""}
    if "mode" not in choices and params.get("mode") is not None:
        choices["mode"] = {"value": str(params["mode"]), "reason": ""}
    prep = getattr(model, "preprocessing", None)
    common = getattr(prep, "common_genes", None) if prep is not None else None
    n_common = -1 if common is None else int(len(common))
    return {"method": str(getattr(model, "method", "")), "choices": choices, "n_common_genes": n_common,
            "datasets": [str(n) for n in (getattr(model, "dataset_names", None) or [])]}


def _plain_str(v):
    if isinstance(v, (list, tuple)):
        return ", ".join(str(x) for x in v)
    return str(v)


def make_anndata(x, i, p, n_genes, n_cells, cells, genes):
    """AnnData (cells x genes, CSR float32) from the slots of an R dgCMatrix (genes x cells).

    A dgCMatrix (genes x cells) in CSC form has exactly the arrays of the CSR form of its transpose
    (cells x genes), so no copy of the index arrays and no densifying is needed.
    """
    import anndata as ad
    import pandas as pd
    import scipy.sparse as sp

    data = np.asarray(x, dtype=np.float32)
    indices = np.asarray(i, dtype=np.int32)
    indptr = np.asarray(p, dtype=np.int64 if len(data) > np.iinfo(np.int32).max else np.int32)
    X = sp.csr_matrix((data, indices, indptr), shape=(int(n_cells), int(n_genes)))
    cells = [str(c) for c in _as_list(cells)]
    genes = [str(g) for g in _as_list(genes)]
    obs = pd.DataFrame(index=pd.Index(cells, dtype=object))
    var = pd.DataFrame(index=pd.Index(genes, dtype=object))
    return ad.AnnData(X=X, obs=obs, var=var)


def set_obs_categorical(adata, key, codes, categories):
    """Set adata.obs[key] to a pandas Categorical from 0-based integer codes (-1: missing)."""
    import pandas as pd

    codes = np.asarray(codes, dtype=np.int64)
    categories = [str(c) for c in _as_list(categories)]
    adata.obs[str(key)] = pd.Categorical.from_codes(codes, categories=categories)
    return None


def set_obsm(adata, key, values):
    """Set adata.obsm[key] to a float32 array (cells x k)."""
    adata.obsm[str(key)] = np.ascontiguousarray(np.asarray(values, dtype=np.float32))
    return None


def get_obsm(adata, key):
    """adata.obsm[key] as (float64 dense array, list of obs names); raises KeyError if absent."""
    if key not in adata.obsm:
        raise KeyError(
            f"the AnnData for this dataset has no obsm[{key!r}] after the Python call; "
            f"obsm keys: {sorted(adata.obsm.keys())}"
        )
    m = adata.obsm[key]
    if hasattr(m, "toarray"):
        m = m.toarray()
    m = np.asarray(m, dtype=np.float64)
    if m.ndim == 1:
        m = m[:, None]
    return {"values": np.ascontiguousarray(m), "obs_names": [str(s) for s in adata.obs_names]}


def matrix_parts(adata):
    """An AnnData's ``X`` as {values: float64 dense array (cells x features), obs_names, var_names}."""
    X = adata.X
    if hasattr(X, "toarray"):
        X = X.toarray()
    return {
        "values": np.ascontiguousarray(np.asarray(X, dtype=np.float64)),
        "obs_names": [str(s) for s in adata.obs_names],
        "var_names": [str(s) for s in adata.var_names],
    }


def frame_parts(df):
    """A pandas DataFrame as {values: float64 array, index: [str], columns: [str]}."""
    return {
        "values": np.ascontiguousarray(np.asarray(df.to_numpy(dtype=np.float64))),
        "index": [str(s) for s in df.index],
        "columns": [str(s) for s in df.columns],
    }


def obs_names(adata):
    """Cell names of an AnnData as a list of str."""
    return [str(s) for s in adata.obs_names]


def model_datasets(model):
    """{name: [obs names]} for the datasets a fitted scferry model holds (model.adatas)."""
    adatas = getattr(model, "adatas", None) or {}
    return {str(k): [str(s) for s in v.obs_names] for k, v in adatas.items()}


def model_adata(model, name):
    """The AnnData of dataset ``name`` attached to a fitted model."""
    adatas = getattr(model, "adatas", None) or {}
    if name not in adatas:
        raise KeyError(f"the model has no dataset {name!r}; it has {sorted(adatas)}")
    return adatas[name]


def read_h5ad_parts(path, layer=None):
    """Read an .h5ad file into plain parts the R side can rebuild without reticulate's sparse path.

    Returns dict with the counts as the arrays of a genes x cells dgCMatrix (x, i, p, dims),
    cell and gene names, obs columns as {name: {kind, values, levels}} and obsm as dense arrays.
    """
    import anndata as ad
    import pandas as pd
    import scipy.sparse as sp

    a = ad.read_h5ad(path)
    if layer is None:
        X = a.X
        x_name = "X"
    else:
        if layer not in a.layers:
            raise ValueError(f"{path} has no layer {layer!r}; layers: {sorted(a.layers.keys())} (or use layer=NULL for X)")
        X = a.layers[layer]
        x_name = layer
    if not sp.issparse(X):
        X = sp.csr_matrix(np.asarray(X))
    X = sp.csr_matrix(X, dtype=np.float64)  # copy, canonical below
    X.sum_duplicates()
    X.sort_indices()
    obs = {}
    for col in a.obs.columns:
        obs[str(col)] = _column_parts(a.obs[col])
    obsm = {}
    for k in a.obsm.keys():
        v = a.obsm[k]
        if isinstance(v, pd.DataFrame):
            v = v.to_numpy()
        if hasattr(v, "toarray"):
            v = v.toarray()
        v = np.asarray(v)
        if v.ndim == 2 and np.issubdtype(v.dtype, np.number):
            obsm[str(k)] = np.ascontiguousarray(v.astype(np.float64))
    return {
        "x": X.data,
        "i": X.indices.astype(np.int32),
        "p": X.indptr.astype(np.int64),
        "n_cells": int(X.shape[0]),
        "n_genes": int(X.shape[1]),
        "cells": [str(s) for s in a.obs_names],
        "genes": [str(s) for s in a.var_names],
        "obs": obs,
        "obsm": obsm,
        "x_name": x_name,
        "x_kind": str(a.uns.get("x_kind", "")),
    }


def _column_parts(s):
    """One obs column as {kind, values, mask, levels}; mask marks missing values."""
    import pandas as pd

    if isinstance(s.dtype, pd.CategoricalDtype):
        codes = np.asarray(s.cat.codes, dtype=np.int64)
        return {"kind": "factor", "values": codes, "mask": codes < 0,
                "levels": [str(c) for c in s.cat.categories]}
    mask = np.asarray(pd.isna(s), dtype=bool)
    if pd.api.types.is_bool_dtype(s.dtype):
        vals = np.asarray(s.fillna(False).astype(bool), dtype=bool)
        return {"kind": "logical", "values": vals, "mask": mask, "levels": []}
    if pd.api.types.is_integer_dtype(s.dtype):
        vals = np.asarray(s.fillna(0).astype(np.int64))
        small = vals.size == 0 or (np.abs(vals).max() < 2**31 - 1)
        return {"kind": "integer" if small else "double", "values": vals.astype(np.float64), "mask": mask, "levels": []}
    if pd.api.types.is_numeric_dtype(s.dtype):
        vals = np.asarray(s.astype(np.float64))
        return {"kind": "double", "values": vals, "mask": mask, "levels": []}
    vals = ["" if m else str(v) for v, m in zip(s.tolist(), mask)]
    return {"kind": "character", "values": vals, "mask": mask, "levels": []}


def _as_list(x):
    if isinstance(x, str):
        return [x]
    return list(x)


def model_datasets_names(model):
    """The dataset names of a fitted model, in training order."""
    return [str(n) for n in model.dataset_names]


def project_path(model, path, dataset, layer=None):
    """scferry.project of an on-disk store; {values: float64 array, obs_names: [str]}."""
    from . import ondisk
    from .tl import project
    z = project(model, path, dataset, layer=layer)
    names = ondisk.Store(path, layer=layer, role="query").obs.index
    return {"values": np.ascontiguousarray(np.asarray(z, dtype=np.float64)), "obs_names": [str(s) for s in names]}


def dataset_embedding(model, name, key="X_scferry"):
    """obsm[key] of training dataset ``name``'s cells only (also when several datasets share
    one AnnData or store): {values: float64 array, obs_names: [str]}."""
    d = model.dataset(name)
    X = np.asarray(d.adata.obsm[key], dtype=np.float64)
    if d.rows is not None:
        X = X[d.rows]
    return {"values": np.ascontiguousarray(X), "obs_names": [str(s) for s in d.obs_names]}
