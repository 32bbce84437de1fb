"""Tools on a fitted model: label transfer (and, in later versions, deconvolution, projection
and imputation)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp

from .data import check_obs_column
from .model import EMBEDDING_KEY, Model

LABEL_KEY = "scferry_label"
SCORE_KEY = "scferry_label_score"
PROBS_KEY = "scferry_label_probs"


def _label_matrix(labels: pd.Series) -> tuple[sp.csr_matrix, list[str]]:
    classes = sorted(pd.unique(labels.astype(str)))
    codes = pd.Categorical(labels.astype(str), categories=classes).codes
    onehot = sp.csr_matrix((np.ones(len(codes), np.float32), (np.arange(len(codes)), codes)),
                           shape=(len(codes), len(classes)))
    return onehot, classes


def _plan_probabilities(model: Model, source: str, target: str, onehot: sp.csr_matrix):
    """Class mass per target cell from the kept global OT plan; rows with no mass are NaN."""
    plan = getattr(model.module, "plan", lambda s, t: None)(model.index(source), model.index(target))
    if plan is None:
        return None
    mass = (plan.to_csr() @ onehot).toarray()
    total = mass.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, mass / total, np.nan)


def _knn_probabilities(X_source, labels, X_target, classes: list[str], k: int) -> np.ndarray:
    from .metrics import knn_label_transfer
    _, probs = knn_label_transfer(X_source, labels.astype(str).to_numpy(), X_target, k=k)
    return probs.reindex(columns=classes, fill_value=0.0).to_numpy(dtype=np.float64)


def transfer_labels(model: Model, source: str, target: str, label_key: str, *,
                    method: str = "auto", k: int = 30) -> pd.DataFrame:
    """Transfer cell labels from dataset ``source`` to dataset ``target`` of a fitted model.

    Parameters
    ----------
    method
        ``"plan"``: class mass of the global OT plan kept during training (uniPort);
        ``"knn"``: distance-weighted kNN vote on the joint embedding (``obsm["X_scferry"]``);
        ``"auto"``: the plan when the model kept one, else kNN. Target cells the plan never
        reached get kNN probabilities.
    k
        Neighbours for the kNN vote.

    Returns
    -------
    DataFrame, target cells x labels (sorted), rows sum to 1. Also writes on the target AnnData:
    ``obs["scferry_label"]`` (categorical, most probable label), ``obs["scferry_label_score"]``
    (its probability), ``obsm["scferry_label_probs"]`` (the probabilities; column order in
    ``uns["scferry_label_probs_columns"]``). With one AnnData + ``batch_key``, rows of other
    datasets get NaN.
    """
    if method not in ("auto", "plan", "knn"):
        raise ValueError(f"method must be 'auto', 'plan' or 'knn'; got {method!r}.")
    if source == target:
        raise ValueError("source and target must be different datasets.")
    if not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive integer; got {k!r}.")
    src, tgt = model.dataset(source, "source"), model.dataset(target, "target")
    labels = check_obs_column(src, label_key)
    onehot, classes = _label_matrix(labels)

    probs = None
    if method in ("auto", "plan"):
        probs = _plan_probabilities(model, source, target, onehot)
        if probs is None and method == "plan":
            raise ValueError(
                f"this {model.method!r} model kept no OT plan between {source!r} and {target!r}; "
                "use method='knn', or retrain with keep_plan=True.")
    if probs is None or np.isnan(probs).any():
        X_s, X_t = _embedding(src), _embedding(tgt)
        knn = _knn_probabilities(X_s, labels, X_t, classes, k)
        probs = knn if probs is None else np.where(np.isnan(probs), knn, probs)

    df = pd.DataFrame(probs, index=tgt.obs_names.copy(), columns=classes)
    _write_predictions(tgt, df)
    return df


def _embedding(d) -> np.ndarray:
    if EMBEDDING_KEY not in d.adata.obsm:
        raise ValueError(f"dataset {d.name!r} has no obsm[{EMBEDDING_KEY!r}]; run scferry.integrate first.")
    X = np.asarray(d.adata.obsm[EMBEDDING_KEY])
    return X if d.rows is None else X[d.rows]


def _write_predictions(d, df: pd.DataFrame) -> None:
    best = df.to_numpy().argmax(axis=1)
    label = pd.Categorical(np.asarray(df.columns)[best], categories=list(df.columns))
    score = df.to_numpy().max(axis=1)
    adata = d.adata
    if d.rows is None:
        adata.obs[LABEL_KEY] = label
        adata.obs[SCORE_KEY] = score
        adata.obsm[PROBS_KEY] = df.to_numpy(np.float32)
    else:
        full_label = pd.Series(pd.Categorical([None] * adata.n_obs, categories=list(df.columns)),
                               index=adata.obs_names)
        full_label.iloc[d.rows] = label
        full_score = np.full(adata.n_obs, np.nan)
        full_score[d.rows] = score
        full_probs = np.full((adata.n_obs, df.shape[1]), np.nan, np.float32)
        full_probs[d.rows] = df.to_numpy(np.float32)
        adata.obs[LABEL_KEY] = full_label.values
        adata.obs[SCORE_KEY] = full_score
        adata.obsm[PROBS_KEY] = full_probs
    adata.uns[PROBS_KEY + "_columns"] = list(df.columns)
