"""Paired cells and label transfer across datasets: :func:`foscttm`, :func:`transfer_accuracy`,
:func:`knn_label_transfer`."""
from __future__ import annotations

from collections.abc import Hashable, Iterable

import numpy as np
import pandas as pd
from scipy.spatial.distance import cdist

from ..neighbors import knn_between
from ._inputs import _category_counts, _check_int, _check_n, _codes, _embedding, _label_array, _missing

__all__ = ["foscttm", "transfer_accuracy", "knn_label_transfer"]

# Distance blocks (FOSCTTM) hold at most this many float64 entries (~128 MiB).
_BLOCK_ENTRIES = 2 ** 24


def _fraction_closer(A: np.ndarray, B: np.ndarray, block: int) -> np.ndarray:
    """For each i: #{j : d(A_i, B_j) < d(A_i, B_i)}, computed block of rows by block."""
    n = A.shape[0]
    out = np.empty(n, dtype=np.int64)
    for s in range(0, n, block):
        e = min(s + block, n)
        D = cdist(A[s:e], B)
        true = D[np.arange(e - s), np.arange(s, e)]
        out[s:e] = (D < true[:, None]).sum(axis=1)
    return out


def foscttm(X, Y, *, block_size: int | None = None) -> float:
    """Fraction Of Samples Closer Than the True Match (SCOT, Demetci et al. 2022; Pamona;
    uniPort, Cao et al. 2022).

    Rows are paired: ``X[i]`` and ``Y[i]`` are the same cell measured in two modalities and
    embedded in one space. With euclidean ``d``,
    ``f_XY(i) = #{j : d(X_i, Y_j) < d(X_i, Y_i)} / (n - 1)`` (strictly closer; ties with the true
    match do not count) and ``f_YX(i)`` likewise from ``Y_i``; returns
    ``mean_i (f_XY(i) + f_YX(i)) / 2``. 0 = every cell's true match is its nearest cell; about
    0.5 = random.

    Parameters
    ----------
    block_size
        Rows of the distance matrix held at once (memory O(block_size * n)); default keeps each
        block under about 128 MiB.
    """
    X = _embedding(X, "X")
    Y = _embedding(Y, "Y")
    if X.shape != Y.shape:
        raise ValueError(f"X {X.shape} and Y {Y.shape} must have the same shape (paired cells "
                         "in a shared space).")
    n = _check_n(X, 2, "foscttm")
    if block_size is None:
        block_size = max(1, _BLOCK_ENTRIES // n)
    block = _check_int(block_size, "block_size")
    xy = _fraction_closer(X, Y, block)
    yx = _fraction_closer(Y, X, block)
    return float(((xy + yx) / (2.0 * (n - 1))).mean())


def transfer_accuracy(labels_true, labels_pred, *, ignore: Iterable[Hashable] | None = None
                      ) -> float:
    """Fraction of cells whose predicted label equals the true label.

    Parameters
    ----------
    labels_true, labels_pred
        Per-cell labels, same length. Predictions may contain classes absent from the truth
        (e.g. ``"unknown"``), which count as wrong.
    ignore
        True labels to leave out of the score, e.g. ``{"unknown"}`` for cells whose type the
        reference does not have. Missing true labels (NaN/None) are an error unless ``ignore``
        contains ``None`` or NaN, in which case those cells are left out too.

    Returns
    -------
    ``sum_i [true_i == pred_i] / #cells``, over the cells not ignored.
    """
    t = _label_array(labels_true, "labels_true")
    p = _label_array(labels_pred, "labels_pred")
    if t.shape[0] != p.shape[0]:
        raise ValueError(f"labels_true ({t.shape[0]}) and labels_pred ({p.shape[0]}) differ "
                         "in length.")
    keep = np.ones(t.shape[0], dtype=bool)
    miss = _missing(t)
    if ignore is not None:
        if isinstance(ignore, (str, bytes)) or not isinstance(ignore, Iterable):
            ignore = [ignore]
        ignore = list(ignore)
        ignore_missing = any(pd.isna(v) for v in ignore if np.ndim(v) == 0)
        present = [v for v in ignore if not (np.ndim(v) == 0 and pd.isna(v))]
        if present:
            keep &= ~pd.Index(t).isin(present)
        if ignore_missing:
            keep &= ~miss
    if (miss & keep).any():
        raise ValueError("labels_true contains missing (NaN/None) labels; pass ignore={None} "
                         "to leave them out.")
    if _missing(p[keep]).any():
        raise ValueError("labels_pred contains missing (NaN/None) labels.")
    if not keep.any():
        raise ValueError("no cells left to score after applying ignore.")
    return float(np.mean(t[keep] == p[keep]))


def _class_order(labels, codes: np.ndarray, uniques: np.ndarray):
    """Classes in categorical order when labels are categorical, else sorted when sortable."""
    cats = None
    if isinstance(labels, pd.Categorical):
        cats = labels.categories
    elif isinstance(labels, pd.Series) and isinstance(labels.dtype, pd.CategoricalDtype):
        cats = labels.cat.categories
    if cats is not None:
        present = pd.Index(uniques)
        order = [c for c in cats if c in present]
    else:
        try:
            order = sorted(uniques)
        except TypeError:  # mixed types: keep first appearance
            order = list(uniques)
    pos = pd.Index(uniques).get_indexer(order)
    remap = np.empty(len(uniques), dtype=np.int64)
    remap[pos] = np.arange(len(order))
    return remap[codes], order


def knn_label_transfer(X_source, labels_source, X_target, *, k: int = 30
                       ) -> tuple[np.ndarray, pd.DataFrame]:
    """Distance-weighted kNN vote of source labels onto target cells.

    Each target cell ``t`` takes its ``k`` nearest source cells (euclidean) at distances
    ``d_tj`` and weights them ``w_tj = exp(-d_tj / m_t)``, where ``m_t`` is the median of its ``k``
    distances: scale-free (the same in any embedding scale), finite at ``d = 0`` unlike ``1/d``,
    and nearer neighbours count more (the median neighbour counts ``e^-1`` of an exact match).
    When ``m_t = 0`` (more than half the neighbours coincide with ``t``) only the coinciding
    neighbours vote. ``prob_tc = sum_{j in c} w_tj / sum_j w_tj``.

    Parameters
    ----------
    X_source, labels_source
        Labelled cells (no missing labels) in the shared embedding.
    X_target
        Cells to label, same number of dimensions.
    k
        Neighbours per target cell, capped at the number of source cells.

    Returns
    -------
    predicted
        Array (n_target,) with the most probable class (first in column order on ties).
    probabilities
        DataFrame n_target x classes, rows sum to 1. Columns are the classes present in
        ``labels_source`` (category order for categoricals, else sorted); the index is
        ``X_target``'s index when it is a DataFrame, else 0..n_target-1.
    """
    index = X_target.index if isinstance(X_target, pd.DataFrame) else None
    Xs = _embedding(X_source, "X_source")
    Xt = _embedding(X_target, "X_target")
    if Xs.shape[1] != Xt.shape[1]:
        raise ValueError(f"X_source has {Xs.shape[1]} dimensions but X_target has "
                         f"{Xt.shape[1]}.")
    arr = _label_array(labels_source, "labels_source")
    codes, uniques = _codes(None, "labels_source", Xs.shape[0], arr=arr)
    codes, classes = _class_order(labels_source, codes, uniques)
    k = min(_check_int(k, "k"), Xs.shape[0])

    dist, idx = knn_between(Xs, Xt, k, seed=0)
    dist = np.asarray(dist, np.float64)
    scale = np.median(dist, axis=1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        w = np.where(scale > 0, np.exp(-dist / np.where(scale > 0, scale, 1.0)),
                     (dist == 0).astype(np.float64))
    mass = _category_counts(codes[idx], len(classes), w)
    probs = mass / mass.sum(axis=1, keepdims=True)
    class_arr = np.empty(len(classes), dtype=object)
    class_arr[:] = classes
    predicted = class_arr[probs.argmax(axis=1)]
    if all(isinstance(c, str) for c in classes):
        predicted = predicted.astype(str)
    frame = pd.DataFrame(probs, columns=pd.Index(classes), index=index)
    return predicted, frame
