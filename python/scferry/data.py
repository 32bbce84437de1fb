"""Input handling: every dataset check and its error message lives here.

`collect_datasets` turns what the user passes (a dict of AnnData, a list, or one AnnData plus a
batch column) into a list of :class:`Dataset`, raising a clear error before any training. Nothing
here modifies the user's objects.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData

from .errors import announce


@dataclass
class Dataset:
    """One input dataset: a name, the user's AnnData, and which of its rows belong to it."""

    name: str
    adata: AnnData
    rows: np.ndarray | None = None  # row positions in `adata` (single AnnData + batch_key), else all
    layer: str | None = None

    @property
    def n_obs(self) -> int:
        return self.adata.n_obs if self.rows is None else len(self.rows)

    @property
    def obs_names(self) -> pd.Index:
        names = self.adata.obs_names
        return names if self.rows is None else names[self.rows]

    @property
    def var_names(self) -> pd.Index:
        return self.adata.var_names

    @property
    def obs(self) -> pd.DataFrame:
        return self.adata.obs if self.rows is None else self.adata.obs.iloc[self.rows]

    def counts(self) -> sp.csr_matrix:
        """The dataset's matrix as CSR float32 (a new object; the user's matrix is untouched)."""
        X = self.adata.X if self.layer is None else self.adata.layers[self.layer]
        if self.rows is not None and len(self.rows):
            X = take_rows(X, self.rows)
        elif self.rows is not None:
            X = X[self.rows]
        if sp.issparse(X):
            X = sp.csr_matrix(X, dtype=np.float32, copy=True)
        else:
            X = sp.csr_matrix(np.asarray(X, dtype=np.float32))
        X.sum_duplicates()
        return X


def _describe(name: str) -> str:
    return f"dataset {name!r}"


def collect_datasets(
    datasets: Mapping[str, AnnData] | Sequence[AnnData] | AnnData,
    *,
    batch_key: str | None = None,
    layer: str | None = None,
    min_datasets: int = 2,
    allow_negative: bool = False,
) -> list[Dataset]:
    """Validate the user's input and return one :class:`Dataset` per dataset.

    Accepted forms: ``{"rna": rna, "atac": atac}``; a list of AnnData (named ``"0"``, ``"1"``, ...);
    or one AnnData with ``batch_key`` naming an ``obs`` column whose levels are the datasets.
    A path to an on-disk AnnData (``.h5ad`` / ``.zarr``) may stand for any AnnData: it is opened
    read-only and its matrix stays on disk (:mod:`scferry.ondisk`).
    """
    from . import ondisk
    if isinstance(datasets, AnnData) or ondisk.is_path(datasets):
        out = (_split_by_batch(datasets, batch_key, layer) if isinstance(datasets, AnnData) else
               ondisk.open_split(datasets, batch_key, layer) if batch_key is not None else
               [ondisk.open_dataset("0", datasets, layer)])
    else:
        if batch_key is not None:
            raise ValueError(
                "batch_key is only used with a single AnnData; with several datasets each input is "
                "already one dataset. Drop batch_key, or concatenate the inputs into one AnnData."
            )
        if isinstance(datasets, Mapping):
            items = list(datasets.items())
        elif isinstance(datasets, Sequence) and not isinstance(datasets, str):
            items = [(str(i), a) for i, a in enumerate(datasets)]
        else:
            raise TypeError(
                f"datasets must be a dict of name -> AnnData, a list of AnnData, or one AnnData with "
                f"batch_key; got {type(datasets).__name__}."
            )
        out = []
        for name, adata in items:
            if not isinstance(name, str) or not name:
                raise TypeError(f"dataset names must be non-empty strings; got {name!r}.")
            if ondisk.is_path(adata):
                out.append(ondisk.open_dataset(name, adata, layer))
                continue
            if not isinstance(adata, AnnData):
                raise TypeError(
                    f"{_describe(name)} is a {type(adata).__name__}, not an AnnData. Convert it first "
                    "(e.g. anndata.AnnData(X=matrix, obs=..., var=...)), or give the path of an "
                    "on-disk .h5ad file or .zarr store."
                )
            out.append(Dataset(name, adata, None, layer))
    if len(out) < min_datasets:
        raise ValueError(
            f"integration needs at least {min_datasets} datasets; got {len(out)}"
            + (f" (levels of {batch_key!r}: {[d.name for d in out]})" if batch_key else "")
            + ". Pass a dict like {'rna': rna, 'atac': atac}, or one AnnData with a batch_key "
            "column that has several levels."
        )
    for d in out:
        check_dataset(d, allow_negative=allow_negative)
    return out


def _split_by_batch(adata: AnnData, batch_key: str | None, layer: str | None) -> list[Dataset]:
    if batch_key is None:
        raise ValueError(
            "a single AnnData needs batch_key= naming the obs column that says which dataset each "
            "cell belongs to; or pass a dict of datasets, e.g. {'rna': rna, 'atac': atac}."
        )
    batches = check_obs_column(Dataset("the input", adata, None, layer), batch_key, "batch_key")
    codes, levels = pd.factorize(batches.astype(str), sort=False)
    return [
        Dataset(str(level), adata, np.flatnonzero(codes == i), layer)
        for i, level in enumerate(levels)
    ]


def check_dataset(d: Dataset, allow_negative: bool = False) -> None:
    """Shape, names and values of one dataset; errors name the dataset and the fix."""
    what = _describe(d.name)
    if d.n_obs == 0:
        raise ValueError(f"{what} has no cells. Remove it or check how it was subset.")
    if d.adata.n_vars == 0:
        raise ValueError(f"{what} has no features (genes/peaks). Check how it was subset.")
    if d.adata.isbacked:
        raise ValueError(
            f"{what} is backed on disk (read with backed='r', file {d.adata.filename}). Pass the "
            "path of the file instead (scferry reads it in chunks and never loads it whole; close "
            "this backed object first, since results are written into the file), or load it: "
            "adata = adata.to_memory().")
    if d.layer is not None and d.layer not in d.adata.layers:
        raise KeyError(
            f"{what} has no layer {d.layer!r}; available layers: {list(d.adata.layers.keys())}."
        )
    if not d.adata.var_names.is_unique:
        dup = d.adata.var_names[d.adata.var_names.duplicated()].unique()[:5].tolist()
        raise ValueError(
            f"{what} has duplicated feature names (e.g. {dup}). Make them unique first: "
            "adata.var_names_make_unique()."
        )
    if not d.obs_names.is_unique:
        dup = d.obs_names[d.obs_names.duplicated()].unique()[:5].tolist()
        raise ValueError(
            f"{what} has duplicated cell names (e.g. {dup}). Make them unique first: "
            "adata.obs_names_make_unique()."
        )
    if getattr(d, "store", None) is not None:
        return  # on disk: values are checked chunk by chunk in the statistics pass (ondisk.gene_stats)
    check_values(d.adata.X if d.layer is None else d.adata.layers[d.layer], what, d.rows,
                 allow_negative=allow_negative)


def take_rows(X, rows: np.ndarray):
    """``X[rows]`` for sorted ``rows``, read through the block of rows they span. For CSR input
    the block is cut from the raw arrays: scipy's own row slicing and fancy indexing cast the
    index arrays of the *whole* matrix to a common dtype when ``indptr`` and ``indices`` differ
    (int64 / int32, as anndata stores large matrices), a transient copy as large as the
    matrix's indices."""
    lo, hi = int(rows[0]), int(rows[-1]) + 1
    if sp.issparse(X) and X.format == "csr":
        a, b = int(X.indptr[lo]), int(X.indptr[hi])
        part = sp.csr_matrix((X.data[a:b], X.indices[a:b], X.indptr[lo:hi + 1] - a),
                             shape=(hi - lo, X.shape[1]))
    else:
        part = X[lo:hi]
    return part if hi - lo == len(rows) else part[rows - lo]


def check_values(X, what: str, rows: np.ndarray | None = None, allow_negative: bool = False,
                 chunk: int = 20_000) -> None:
    """Non-finite or (unless ``allow_negative``) negative values are errors (counts are expected).
    ``rows``: the dataset's rows of ``X`` (sorted), checked ``chunk`` rows at a time, so that no
    copy of the dataset's whole matrix is made."""
    if rows is not None:
        if len(rows) > chunk:
            for start in range(0, len(rows), chunk):
                check_values(X, what, rows[start:start + chunk], allow_negative, chunk)
            return
        X = take_rows(X, rows) if len(rows) else X[rows]
    values = X.data if sp.issparse(X) else np.asarray(X)
    if not np.issubdtype(values.dtype, np.number):
        raise TypeError(f"{what} has a non-numeric matrix (dtype {values.dtype}).")
    if not np.all(np.isfinite(values)):
        n = int(np.size(values) - np.isfinite(values).sum())
        raise ValueError(
            f"{what} has {n} non-finite values (NaN or inf). scferry expects raw counts; "
            "replace or drop them first."
        )
    if not allow_negative and values.size and values.min() < 0:
        n = int((values < 0).sum())
        raise ValueError(
            f"{what} has {n} negative values. scferry expects raw counts in .X (or layer=...): "
            "pass unscaled counts, not scaled or centred data."
        )


def warn_if_not_counts(X, what: str, layer: str | None = None, fix: str = "", stacklevel: int = 3) -> None:
    """Warn (:class:`~scferry.ScferryWarning`) when a matrix expected to hold raw counts holds
    non-integer values, e.g. log-normalised data passed as counts; the first 5,000 cells are
    checked. Non-integer counts exist (estimated counts, ambient-corrected counts), so this
    warns rather than refuses."""
    X = X[:5000]
    values = X.data if sp.issparse(X) else np.asarray(X).ravel()
    frac = values != np.round(values)
    if frac.any():
        where = ".X" if layer is None else f".layers[{layer!r}]"
        example = float(values[np.flatnonzero(frac)[0]])
        announce(
            f"{what} {where} holds non-integer values (e.g. {example:.4g}), but raw counts are "
            "expected: scferry normalises and log-transforms them itself, so log-normalised or "
            "scaled values are transformed twice. " + (fix or "Pass the raw counts (layer='counts' "
            "if they are there), or preprocess=False for data prepared already."), stacklevel=stacklevel)


def check_cell_totals(X: sp.csr_matrix, what: str) -> None:
    totals = np.asarray(X.sum(axis=1)).ravel()
    empty = int((totals == 0).sum())
    if empty:
        raise ValueError(
            f"{what} has {empty} cells with zero counts, which cannot be normalised. Filter them "
            "first: sc.pp.filter_cells(adata, min_counts=1)."
        )


def check_obs_column(d: Dataset, key: str, role: str = "label_key", missing_ok: bool = False) -> pd.Series:
    """Return obs[key] for the dataset's cells, or raise an error that lists what exists. With
    ``missing_ok``, missing values (unlabelled cells) stay NaN and the others become strings; a
    column with no value at all is still an error."""
    if key not in d.adata.obs.columns:
        raise KeyError(
            f"{role} {key!r} is not a column of {_describe(d.name)}'s obs; available columns: "
            f"{list(d.adata.obs.columns)}."
        )
    col = d.obs[key]
    missing = col.isna().to_numpy()
    if missing.all():
        raise ValueError(f"{role} {key!r} is missing for all {len(col)} cells of {_describe(d.name)}; "
                         "no cell has a label.")
    if not missing.any():
        return normalise_labels(col, key, _describe(d.name), role)
    if not missing_ok:
        raise ValueError(
            f"{role} {key!r} has {int(missing.sum())} missing values in {_describe(d.name)}. "
            "Fill them (e.g. with 'unknown') or drop those cells before integrating."
        )
    known = normalise_labels(col[~missing], key, _describe(d.name), role).astype(str)
    out = pd.Series(np.full(len(col), np.nan, dtype=object), index=col.index, name=col.name)
    out.iloc[np.flatnonzero(~missing)] = known.to_numpy()
    return out


MAX_FLOAT_LEVELS = 20  # more distinct non-integer values than this: a continuous column


def normalise_labels(col: pd.Series, key: str, what: str, role: str = "label_key") -> pd.Series:
    """Cell labels (or batches) as categories whatever their type: integer-valued floats become
    integers, so that 2 and 2.0 are one label ('2') across datasets; a float column with more
    than ``MAX_FLOAT_LEVELS`` distinct non-integer values is refused as continuous."""
    values = col.astype(col.cat.categories.dtype) if isinstance(col.dtype, pd.CategoricalDtype) else col
    if not pd.api.types.is_float_dtype(values.dtype):
        return col
    v = values.to_numpy(np.float64)
    if np.all(v == np.round(v)):
        return pd.Series(v.astype(np.int64), index=col.index, name=col.name)
    levels = np.unique(v)
    if len(levels) > MAX_FLOAT_LEVELS:
        raise ValueError(
            f"{role} {key!r} looks continuous in {what}: {len(levels)} distinct non-integer values "
            f"(e.g. {', '.join(f'{x:.4g}' for x in levels[:3])}). It should name categories such as "
            "cell types: pass a categorical column, or bin the values first (e.g. pd.cut).")
    return col


def check_paired(datasets: Sequence[Dataset]) -> None:
    """Paired (vertical) inputs: the same cells, with the same names, in the same order, in every
    dataset. The error names the first datasets and cells that differ."""
    first = datasets[0]
    for d in datasets[1:]:
        if d.n_obs != first.n_obs:
            raise ValueError(
                f"paired datasets must hold the same cells: {_describe(first.name)} has {first.n_obs} "
                f"cells, {_describe(d.name)} has {d.n_obs}. Subset both to the cells measured in both "
                "modalities (e.g. rna[common], atac[common]) in the same order.")
        differ = np.flatnonzero(np.asarray(first.obs_names) != np.asarray(d.obs_names))
        if len(differ):
            same_set = set(first.obs_names) == set(d.obs_names)
            shown = ", ".join(f"{i}: {first.obs_names[i]!r} vs {d.obs_names[i]!r}" for i in differ[:5])
            raise ValueError(
                f"paired datasets must list the same cells in the same order: {len(differ)} of "
                f"{first.n_obs} cell names differ between {_describe(first.name)} and "
                f"{_describe(d.name)} (positions {shown}{', ...' if len(differ) > 5 else ''}). " + (
                    f"They are the same cells in another order: reorder with {d.name}[{first.name}.obs_names]."
                    if same_set else
                    "Keep only the cells measured in both, in one order, or integrate them as "
                    "unpaired data (e.g. method='uniport', mode='diagonal')."))


def _common_features(datasets: Sequence[Dataset]) -> pd.Index:
    common = datasets[0].var_names
    for d in datasets[1:]:
        common = common[common.isin(d.var_names)]
    return common


def has_shared_features(datasets: Sequence[Dataset]) -> bool:
    return len(_common_features(datasets)) > 0


def shared_features(datasets: Sequence[Dataset]) -> pd.Index:
    """Features present in every dataset, in the first dataset's order."""
    common = _common_features(datasets)
    if len(common) == 0:
        sizes = ", ".join(f"{d.name!r}: {d.adata.n_vars}" for d in datasets)
        raise ValueError(
            f"the datasets share no feature names ({sizes} features). Horizontal integration needs "
            "shared genes: check that all use the same gene identifiers (symbols vs Ensembl IDs, case); "
            "for data without shared features (e.g. RNA + ATAC peaks) use "
            "method='uniport', mode='diagonal' (or mode='vertical' for the same cells)."
        )
    return common
