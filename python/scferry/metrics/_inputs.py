"""Input coercion and checks shared by the metrics (embeddings, label arrays, integers)."""
from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd
import scipy.sparse as sp


def _embedding(X, name: str = "X") -> np.ndarray:
    """2-D finite float array (float32 kept to save memory, everything else -> float64)."""
    if X is None:
        raise ValueError(f"{name} is None; expected a cells x dimensions array.")
    if sp.issparse(X):
        X = X.toarray()
    try:
        arr = np.asarray(X)
        if arr.dtype != np.float32:
            arr = arr.astype(np.float64, copy=False)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name} must be numeric: {err}") from None
    if arr.ndim != 2:
        raise ValueError(f"{name} must be 2-D (cells x dimensions); got shape {arr.shape}.")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"{name} is empty; got shape {arr.shape}.")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} contains NaN or infinite values.")
    return arr


def _label_array(labels, name: str) -> np.ndarray:
    """1-D object array of labels (pandas Categorical/Series/Index, arrays, lists)."""
    if labels is None:
        raise ValueError(f"{name} is None.")
    if isinstance(labels, (pd.Series, pd.Index, pd.Categorical, pd.api.extensions.ExtensionArray)):
        arr = np.asarray(labels, dtype=object)
    elif isinstance(labels, np.ndarray):
        arr = labels.astype(object, copy=False)
    elif isinstance(labels, (str, bytes)) or not isinstance(labels, Iterable):
        raise ValueError(f"{name} must be a sequence of labels; got {type(labels).__name__}.")
    else:
        items = list(labels)
        # fromiter keeps tuple labels as single objects instead of a 2-D array
        arr = np.fromiter(items, dtype=object, count=len(items))
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D; got shape {arr.shape}.")
    if arr.size == 0:
        raise ValueError(f"{name} is empty.")
    return arr


def _missing(arr: np.ndarray) -> np.ndarray:
    return np.asarray(pd.isna(arr), dtype=bool)


def _codes(labels, name: str, n: int | None = None, *, min_classes: int = 1,
           arr: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Integer codes 0..K-1 and the K unique labels (first-appearance order); validates."""
    if arr is None:
        arr = _label_array(labels, name)
    if n is not None and arr.shape[0] != n:
        raise ValueError(f"{name} has {arr.shape[0]} entries but {n} were expected "
                         "(one per cell).")
    miss = _missing(arr)
    if miss.any():
        raise ValueError(f"{name} contains {int(miss.sum())} missing (NaN/None) labels.")
    codes, uniques = pd.factorize(arr, sort=False)
    if len(uniques) < min_classes:
        raise ValueError(f"{name} must contain at least {min_classes} distinct values; "
                         f"got {len(uniques)}.")
    return codes.astype(np.int64), np.asarray(uniques, dtype=object)


def _pair_codes(labels_true, labels_pred) -> tuple[np.ndarray, np.ndarray, int]:
    """Codes of true and predicted labels in one shared code space."""
    t = _label_array(labels_true, "labels_true")
    p = _label_array(labels_pred, "labels_pred")
    if t.shape[0] != p.shape[0]:
        raise ValueError(f"labels_true ({t.shape[0]}) and labels_pred ({p.shape[0]}) differ "
                         "in length.")
    for arr, name in ((t, "labels_true"), (p, "labels_pred")):
        if _missing(arr).any():
            raise ValueError(f"{name} contains missing (NaN/None) labels.")
    codes, uniques = pd.factorize(np.concatenate([t, p]), sort=False)
    return codes[: t.shape[0]], codes[t.shape[0]:], len(uniques)


def _check_int(value, name: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}; got {value!r}.")
    return int(value)


def _check_n(X: np.ndarray, minimum: int, what: str) -> int:
    n = X.shape[0]
    if n < minimum:
        raise ValueError(f"{what} needs at least {minimum} cells; got {n}.")
    return n


def _category_counts(nb_codes: np.ndarray, n_cat: int, weights: np.ndarray | None = None):
    """Per-row (weighted) counts of each category among neighbour codes (m, k) -> (m, n_cat)."""
    m, k = nb_codes.shape
    flat = (np.arange(m)[:, None] * n_cat + nb_codes).ravel()
    w = None if weights is None else weights.ravel()
    return np.bincount(flat, weights=w, minlength=m * n_cat).reshape(m, n_cat)
