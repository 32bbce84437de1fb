"""Shared pieces of the tools: label matrices, the kept plan, embeddings of a fitted model's
datasets, writing per-cell results, and the checks every tool runs before any work."""
from __future__ import annotations


import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData

from ..data import Dataset, check_obs_column, normalise_labels
from ..model import EMBEDDING_KEY, Model

LABEL_KEY = "scferry_label"
SCORE_KEY = "scferry_label_score"
PROBS_KEY = "scferry_label_probs"
PROPORTIONS_KEY = "scferry_proportions"
IMPUTE_KEY = "scferry_impute"


def _label_codes(labels, classes: list[str]) -> np.ndarray:
    """Each cell's index in ``classes``; -1 for a cell without a label (missing)."""
    labels = pd.Series(labels)
    known = labels.notna().to_numpy()
    codes = np.full(len(labels), -1, np.int64)
    codes[known] = pd.Categorical(labels[known].astype(str), categories=classes).codes
    return codes


def _label_classes(labels) -> list[str]:
    """The labels present, sorted; a missing value is not a label."""
    return sorted(pd.unique(pd.Series(labels).dropna().astype(str)))


def _label_counts(labels) -> pd.Series:
    """Cells per label; cells without one (missing) are not counted."""
    return pd.Series(labels).dropna().astype(str).value_counts()


def _label_matrix(labels: pd.Series) -> tuple[sp.csr_matrix, list[str]]:
    """Cells x classes one-hot (sorted classes); cells without a label get an empty row."""
    classes = _label_classes(labels)
    codes = _label_codes(labels, classes)
    rows = np.flatnonzero(codes >= 0)
    onehot = sp.csr_matrix((np.ones(len(rows), np.float32), (rows, codes[rows])),
                           shape=(len(codes), len(classes)))
    return onehot, classes


def _plan(model: Model, source: str, target: str):
    """The kept global OT plan with ``target`` cells as rows (a ``TopKPlan``), or None."""
    get = getattr(model.module, "plan", None)
    return None if get is None else get(model.index(source), model.index(target))


def _knn_probabilities(X_source, labels, X_target, classes: list[str], k: int) -> np.ndarray:
    """Distance-weighted kNN vote of the source cells that have a label."""
    from ..metrics import knn_label_transfer
    known = labels.notna().to_numpy()
    _, probs = knn_label_transfer(X_source[known], labels[known].astype(str).to_numpy(), X_target, k=k)
    return probs.reindex(columns=classes, fill_value=0.0).to_numpy(dtype=np.float64)


def _embedding(model: Model, d: Dataset) -> np.ndarray:
    """The dataset's joint embedding: ``obsm["X_scferry"]`` when this model wrote it (its id in
    ``uns["scferry"]``; one written by another model is an error), else encoded from the
    attached data (e.g. an embedding of unknown origin, or none)."""
    X = model.embedding_of(d)
    if X is not None and X.shape[1] == model.params.get("n_latent", X.shape[1]) and np.isfinite(X).all():
        return X
    adata = d.adata if d.rows is None else d.adata[d.rows]
    return model.encode(model.transform(adata, d.name, layer=d.layer, what=f"dataset {d.name!r}"), d.name)


def _class_mass(model: Model, src: Dataset, tgt: Dataset, labels: pd.Series, method: str,
                k: int) -> tuple[pd.DataFrame, int, int]:
    """Source-label mass per target cell, rows normalised to 1: from the kept global OT plan
    (``method="plan"``/``"auto"``) or a kNN vote on the joint embedding (``"knn"``, and
    ``"auto"`` without a plan). Source cells without a label (NaN) carry no mass. Target cells
    with no labelled plan mass get the kNN vote of the labelled source cells. Returns the table
    (target cells x sorted labels), how many rows the plan did not reach, and how many it
    reached only through unlabelled source cells."""
    onehot, classes = _label_matrix(labels)
    probs, n_unreached, n_unlabelled = None, 0, 0
    if method in ("auto", "plan"):
        plan = _plan(model, src.name, tgt.name)
        if plan is None and method == "plan":
            raise ValueError(
                f"this {model.method!r} model kept no OT plan between {src.name!r} and {tgt.name!r}; "
                "use method='knn', or retrain with keep_plan=True.")
        if plan is not None:
            P = plan.to_csr()
            mass = (P @ onehot).toarray().astype(np.float64)
            total = mass.sum(axis=1, keepdims=True)
            with np.errstate(invalid="ignore", divide="ignore"):
                probs = np.where(total > 0, mass / total, np.nan)
            reached = np.asarray(P.sum(axis=1)).ravel() > 0
            n_unreached = int((~reached).sum())
            n_unlabelled = int((reached & (total.ravel() <= 0)).sum())
    fill = np.ones(tgt.n_obs, bool) if probs is None else np.isnan(probs).any(axis=1)
    if fill.any():
        # only those rows are queried: a kNN of every target cell is quadratic in cells
        knn = _knn_probabilities(_embedding(model, src), labels, _embedding(model, tgt)[fill], classes, k)
        if probs is None:
            probs = knn
        else:
            probs[fill] = knn
    return pd.DataFrame(probs, index=tgt.obs_names.copy(), columns=classes), n_unreached, n_unlabelled


def _write_rows(d: Dataset, key: str, values: np.ndarray, where: str = "obsm") -> None:
    """Write per-cell values of dataset ``d`` to ``obs``/``obsm``; with one AnnData + batch_key,
    the other datasets' rows get NaN (missing for categoricals)."""
    adata = d.adata
    if d.rows is not None:
        if isinstance(values, pd.Categorical):
            full = pd.Series(pd.Categorical([None] * adata.n_obs, categories=values.categories),
                             index=adata.obs_names)
            full.iloc[d.rows] = values
            values = full.values
        else:
            full = np.full((adata.n_obs,) + np.shape(values)[1:], np.nan, dtype=np.asarray(values).dtype)
            full[d.rows] = values
            values = full
    if where == "obsm":
        adata.obsm[key] = values
    else:
        adata.obs[key] = values


def _check_names(**names) -> None:
    for role, name in names.items():
        if not isinstance(name, str):
            raise TypeError(f"{role} must be the name of a dataset of the model (a string, as given "
                            f"to scferry.integrate); got {type(name).__name__}.")


def _check_k(k) -> None:
    if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or k < 1:
        raise ValueError(f"k must be a positive integer; got {k!r}.")


def _labelled_pair(model: Model, source: tuple[str, str], target: tuple[str, str], label_key: str,
                   k) -> tuple[Dataset, Dataset, pd.Series]:
    """The checks transfer_labels and deconvolve share, before anything is computed: two
    different datasets of the model, still as trained, and the source's labels (strings; NaN
    for cells without one, which the tools leave out; at least one cell labelled).
    ``source``/``target`` are (role, name) pairs; the role names the argument in errors."""
    (s_role, s_name), (t_role, t_name) = source, target
    _check_names(**{s_role: s_name, t_role: t_name})
    if s_name == t_name:
        raise ValueError(f"{s_role} and {t_role} must be different datasets of the model.")
    _check_k(k)
    src, tgt = model.dataset(s_name, s_role), model.dataset(t_name, t_role)
    model.check_attached(src), model.check_attached(tgt)
    return src, tgt, check_obs_column(src, label_key, missing_ok=True)



# ---------------------------------------------------------------------------- checks of the downstream tools
def _check_adata(adata, role: str) -> None:
    if not isinstance(adata, AnnData):
        raise TypeError(f"{role} must be an AnnData; got {type(adata).__name__}.")
    if adata.n_obs == 0 or adata.n_vars == 0:
        raise ValueError(f"{role} is empty ({adata.n_obs} x {adata.n_vars}).")


def _check_int(value, name: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}; got {value!r}.")
    return int(value)


def _basis(adata: AnnData, basis, role: str) -> np.ndarray:
    """The cells x d embedding: ``obsm[basis]`` (default the one integrate writes) or an array."""
    if isinstance(basis, str):
        if basis not in adata.obsm:
            fix = ("run scferry.integrate (or scferry.project) on it first, or pass basis= the key "
                   "of another embedding" if basis == EMBEDDING_KEY else "pass basis= an existing key")
            raise KeyError(f"{role} has no obsm[{basis!r}]: {fix}; obsm keys: {list(adata.obsm.keys())}.")
        X, what = adata.obsm[basis], f"{role}.obsm[{basis!r}]"
    else:
        X, what = basis, f"basis given for {role}"
    X = np.asarray(X.toarray() if sp.issparse(X) else X, dtype=np.float64)
    if X.ndim != 2 or X.shape[0] != adata.n_obs:
        raise ValueError(f"{what} must be {adata.n_obs} cells x dimensions; got shape {X.shape}.")
    if not np.isfinite(X).all():
        raise ValueError(f"{what} contains NaN or infinite values; recompute the embedding.")
    return X


def _matrix(adata: AnnData, layer: str | None, role: str) -> sp.csr_matrix:
    """``X`` or ``layers[layer]`` as CSR float32 (a copy only where the type differs), checked finite
    and non-negative (counts or normalised values)."""
    if layer is not None:
        if layer not in adata.layers:
            raise KeyError(f"{role} has no layers[{layer!r}]; layers: {list(adata.layers.keys())}.")
        X, what = adata.layers[layer], f"{role}.layers[{layer!r}]"
    else:
        X, what = adata.X, f"{role}.X"
    if X is None:
        raise ValueError(f"{what} is empty (None); pass layer= the matrix to use.")
    X = sp.csr_matrix(X, dtype=np.float32)
    if not np.isfinite(X.data).all():
        raise ValueError(f"{what} contains NaN or infinite values.")
    if (X.data < 0).any():
        raise ValueError(f"{what} has negative values; pass counts or normalised (non-negative) "
                         "values, e.g. layer='counts'.")
    return X


def _labels(adata: AnnData, key: str, role: str) -> pd.Series:
    if key not in adata.obs.columns:
        raise KeyError(f"label_key {key!r} is not a column of {role}.obs; columns: {list(adata.obs.columns)}. "
                       "For a modality without labels, transfer them first (scferry.transfer_labels "
                       "writes obs['scferry_label']).")
    col = adata.obs[key]
    if col.isna().any():
        raise ValueError(f"label_key {key!r} has {int(col.isna().sum())} missing values in {role}; "
                         "fill them (e.g. 'unknown') or drop those cells.")
    return normalise_labels(col, key, role).astype(str)

