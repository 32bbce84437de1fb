"""Integration metrics: label conservation, batch mixing, paired-cell alignment and label transfer.

All functions take an embedding ``X`` (cells x dimensions, any array-like or scipy sparse
matrix) and per-cell annotations (any hashable labels: strings, ints, pandas Categorical).
Inputs are validated: lengths must match, embeddings must be finite, and missing labels
(NaN / None) are errors unless a function documents otherwise. Neighbour searches are exact
(scikit-learn) up to 50,000 cells and approximate (pynndescent, seeded by the function's
``seed``) above; no function builds an n x n dense matrix.

Overview
--------
Label conservation: :func:`ari`, :func:`nmi`, :func:`f1_macro`, :func:`silhouette`,
:func:`clisi`, :func:`graph_connectivity`, :func:`leiden_ari_nmi`.
Batch mixing: :func:`batch_entropy`, :func:`ilisi`, :func:`kbet`.
Paired cells: :func:`foscttm`.
Label transfer: :func:`transfer_accuracy`, :func:`knn_label_transfer`.
All at once: :func:`evaluate`.
"""
from __future__ import annotations

import inspect
import warnings
from collections.abc import Hashable, Iterable, Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components
from scipy.spatial.distance import cdist
from scipy.stats import chi2

__all__ = [
    "ari", "nmi", "f1_macro", "silhouette", "batch_entropy", "foscttm", "transfer_accuracy",
    "ilisi", "clisi", "graph_connectivity", "kbet", "knn_label_transfer", "leiden_ari_nmi",
    "evaluate",
]

# Above this many indexed cells the kNN search switches from exact to pynndescent.
_EXACT_KNN_MAX = 50_000
# Distance blocks (FOSCTTM) hold at most this many float64 entries (~128 MiB).
_BLOCK_ENTRIES = 2 ** 24

DEFAULT_RESOLUTIONS = (0.2, 0.4, 0.6, 0.8, 1.0, 1.2, 1.4, 1.6, 1.8, 2.0)


# --------------------------------------------------------------------------------------------
# validation helpers
# --------------------------------------------------------------------------------------------

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


# --------------------------------------------------------------------------------------------
# neighbours
# --------------------------------------------------------------------------------------------

def _drop_self(dist: np.ndarray, idx: np.ndarray, self_idx: np.ndarray, k: int):
    """Remove each query's own index from a (m, k+1) result; if absent (duplicates), the last."""
    mask = idx == self_idx[:, None]
    no_self = ~mask.any(axis=1)
    mask[no_self, -1] = True
    # a cell listed twice is impossible, so exactly one entry per row is dropped
    keep = ~mask
    return dist[keep].reshape(len(self_idx), k), idx[keep].reshape(len(self_idx), k)


def _knn(X: np.ndarray, k: int, query: np.ndarray | None = None, *, seed: int = 0):
    """Euclidean k nearest neighbours of X[query] (default: all cells) among all cells of X,
    each query cell itself excluded. Returns (distances, indices), both (m, k), ascending."""
    n = X.shape[0]
    if not 1 <= k <= n - 1:
        raise ValueError(f"k must be between 1 and n - 1 = {n - 1}; got {k}.")
    q = np.arange(n) if query is None else np.asarray(query, dtype=np.int64)
    if n > _EXACT_KNN_MAX:
        from pynndescent import NNDescent

        nnd = NNDescent(X, n_neighbors=k + 1, random_state=seed)
        if query is None:
            idx, dist = nnd.neighbor_graph
        else:
            idx, dist = nnd.query(X[q], k=k + 1)
    else:
        from sklearn.neighbors import NearestNeighbors

        nn = NearestNeighbors(n_neighbors=k + 1).fit(X)
        dist, idx = nn.kneighbors(X[q], n_neighbors=k + 1)
    return _drop_self(np.asarray(dist, np.float64), np.asarray(idx, np.int64), q, k)


def _category_counts(nb_codes: np.ndarray, n_cat: int, weights: np.ndarray | None = None):
    """Per-row (weighted) counts of each category among neighbour codes (m, k) -> (m, n_cat)."""
    m, k = nb_codes.shape
    flat = (np.arange(m)[:, None] * n_cat + nb_codes).ravel()
    w = None if weights is None else weights.ravel()
    return np.bincount(flat, weights=w, minlength=m * n_cat).reshape(m, n_cat)


# --------------------------------------------------------------------------------------------
# clustering agreement
# --------------------------------------------------------------------------------------------

def ari(labels_true, labels_pred) -> float:
    """Adjusted Rand index between two labelings (Hubert & Arabie 1985).

    ``ARI = (sum_ij C(n_ij, 2) - E) / (0.5 (sum_i C(a_i, 2) + sum_j C(b_j, 2)) - E)`` with
    ``E = sum_i C(a_i, 2) sum_j C(b_j, 2) / C(n, 2)``, where ``n_ij`` is the contingency table
    and ``a_i``, ``b_j`` its row and column sums. 1 = identical partitions, ~0 = chance.
    """
    from sklearn.metrics import adjusted_rand_score

    t, p, _ = _pair_codes(labels_true, labels_pred)
    return float(adjusted_rand_score(t, p))


def nmi(labels_true, labels_pred) -> float:
    """Normalised mutual information with arithmetic normalisation.

    ``NMI = I(T; P) / ((H(T) + H(P)) / 2)`` (natural logs; scikit-learn
    ``average_method="arithmetic"``, as in scIB). In [0, 1].
    """
    from sklearn.metrics import normalized_mutual_info_score

    t, p, _ = _pair_codes(labels_true, labels_pred)
    return float(normalized_mutual_info_score(t, p, average_method="arithmetic"))


def f1_macro(labels_true, labels_pred) -> float:
    """Macro F1 over the classes present in ``labels_true``.

    ``F1_c = 2 TP_c / (2 TP_c + FP_c + FN_c)`` averaged with equal weight over the true
    classes; predicted classes that never occur in ``labels_true`` only count as false
    positives/negatives, never as classes of their own. A class with no true positives scores 0.
    """
    from sklearn.metrics import f1_score

    t, p, _ = _pair_codes(labels_true, labels_pred)
    return float(f1_score(t, p, labels=np.unique(t), average="macro", zero_division=0))


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


# --------------------------------------------------------------------------------------------
# silhouette
# --------------------------------------------------------------------------------------------

def _stratified_subsample(codes: np.ndarray, max_cells: int, rng: np.random.Generator):
    """Indices of about max_cells cells, each class kept in proportion (>= min(size, 2))."""
    n = codes.shape[0]
    counts = np.bincount(codes)
    quota = counts * (max_cells / n)
    take = np.floor(quota).astype(np.int64)
    rest = max_cells - int(take.sum())
    if rest > 0:  # largest remainders first
        order = np.argsort(-(quota - take), kind="stable")
        take[order[:rest]] += 1
    # a class needs two cells for a defined silhouette; may exceed max_cells slightly
    take = np.maximum(take, np.minimum(counts, 2))
    chosen = [rng.choice(np.flatnonzero(codes == c), size=int(take[c]), replace=False)
              for c in range(len(counts)) if take[c] > 0]
    return np.sort(np.concatenate(chosen))


def silhouette(X, labels, *, max_cells: int = 20000, seed: int = 0) -> float:
    """Label silhouette width scaled to [0, 1] (scIB "ASW label").

    For cell i with mean intra-label distance ``a_i`` and mean distance ``b_i`` to the nearest
    other label, ``s_i = (b_i - a_i) / max(a_i, b_i)`` (Rousseeuw 1987; euclidean,
    scikit-learn ``silhouette_score``; a cell alone in its label gets 0). Returns
    ``(mean_i s_i + 1) / 2``: 1 = compact, well-separated labels.

    Parameters
    ----------
    max_cells
        Above this many cells a stratified subsample of about ``max_cells`` cells (each label in
        proportion, at least 2 cells per label when it has them) is scored, since the exact
        computation is O(n^2). Deterministic given ``seed``.
    """
    from sklearn.metrics import silhouette_score

    X = _embedding(X)
    n = _check_n(X, 3, "silhouette")
    codes, uniques = _codes(labels, "labels", n, min_classes=2)
    max_cells = _check_int(max_cells, "max_cells", 3)
    if len(uniques) > n - 1:
        raise ValueError(f"silhouette needs fewer distinct labels ({len(uniques)}) than cells "
                         f"({n}).")
    if n > max_cells:
        sub = _stratified_subsample(codes, max_cells, np.random.default_rng(seed))
        X, codes = X[sub], codes[sub]
    s = silhouette_score(X, codes, metric="euclidean")
    return float((s + 1.0) / 2.0)


# --------------------------------------------------------------------------------------------
# batch mixing
# --------------------------------------------------------------------------------------------

def batch_entropy(X, batches, *, n_neighbors: int = 100, n_pools: int = 100,
                  n_samples_per_pool: int = 100, seed: int = 0) -> float:
    """Batch entropy mixing score (SCALEX; Xiong et al. 2022), normalised to [0, 1].

    In each of ``n_pools`` pools, ``n_samples_per_pool`` cells are drawn uniformly with
    replacement. For a drawn cell with ``n_neighbors`` nearest neighbours (itself excluded),
    ``p_b`` is the fraction of neighbours from batch ``b`` and ``P_b`` the global fraction of
    batch ``b``; the re-weighted frequencies are ``q_b = (p_b / P_b) / sum_c (p_c / P_c)`` and the
    cell's entropy is ``H = -sum_b q_b ln q_b`` (``0 ln 0 = 0``). The score is the mean of H over
    all drawn cells divided by ``ln(n_batches)``.

    Normalisation differs from SCALEX on purpose: SCALEX divides the natural-log entropy by
    ``log2(n_batches)``, which caps a two-batch score at ln 2 = 0.693. Dividing by
    ``ln(n_batches)`` makes perfect mixing score 1 for any number of batches; multiply by
    ``ln(n_batches) / log2(n_batches)`` (= ln 2 = 0.693) to compare with SCALEX's numbers.
    0 = every neighbourhood holds a single batch.

    Parameters
    ----------
    n_neighbors
        Neighbourhood size, capped at ``n_cells - 1``.
    n_pools, n_samples_per_pool
        Sampling design (SCALEX defaults). Deterministic given ``seed``.
    """
    X = _embedding(X)
    n = _check_n(X, 2, "batch_entropy")
    codes, uniques = _codes(batches, "batches", n, min_classes=2)
    k = min(_check_int(n_neighbors, "n_neighbors"), n - 1)
    n_pools = _check_int(n_pools, "n_pools")
    n_samples_per_pool = _check_int(n_samples_per_pool, "n_samples_per_pool")
    n_batches = len(uniques)
    global_frac = np.bincount(codes, minlength=n_batches) / n

    rng = np.random.default_rng(seed)
    draws = rng.integers(0, n, size=(n_pools, n_samples_per_pool))
    cells, inverse = np.unique(draws, return_inverse=True)
    _, idx = _knn(X, k, cells, seed=seed)
    q = _category_counts(codes[idx], n_batches) / k / global_frac
    q /= q.sum(axis=1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        ent = -np.where(q > 0, q * np.log(q), 0.0).sum(axis=1)
    # the mean of pool means equals the mean over all draws: pools have equal size
    score = ent[inverse.reshape(draws.shape)].mean()
    return float(score / np.log(n_batches))


def _perplexity_weights(dist: np.ndarray, perplexity: float, tol: float = 1e-5,
                        max_iter: int = 50) -> np.ndarray:
    """Gaussian-kernel neighbour weights with per-cell entropy ln(perplexity) (t-SNE / LISI).

    Binary search on the precision beta_i of ``w_ij ~ exp(-beta_i d_ij)`` as in Harmony's
    ``compute_simpson_index``: start at 1, double/halve until bracketed, then bisect; at most
    ``max_iter`` steps or until ``|H_i - ln(perplexity)| < tol``. Distances are shifted by each
    row's minimum (leaves the weights unchanged) so exp never underflows to all zeros.
    """
    D = dist - dist.min(axis=1, keepdims=True)
    n = D.shape[0]
    log_u = np.log(perplexity)
    beta = np.ones(n)
    lo = np.full(n, -np.inf)
    hi = np.full(n, np.inf)

    def h_beta(Dr, b):
        P = np.exp(-Dr * b[:, None])
        s = P.sum(axis=1)
        H = np.log(s) + b * (Dr * P).sum(axis=1) / s
        return H, P / s[:, None]

    H, P = h_beta(D, beta)
    for _ in range(max_iter):
        diff = H - log_u
        active = np.abs(diff) > tol
        if not active.any():
            break
        up = active & (diff > 0)  # entropy too high -> sharpen the kernel
        lo[up] = beta[up]
        beta[up] = np.where(np.isinf(hi[up]), beta[up] * 2.0, (beta[up] + hi[up]) / 2.0)
        down = active & (diff <= 0)
        hi[down] = beta[down]
        beta[down] = np.where(np.isinf(lo[down]), beta[down] / 2.0, (beta[down] + lo[down]) / 2.0)
        H[active], P[active] = h_beta(D[active], beta[active])
    return P


def _lisi_from_knn(dist: np.ndarray, nb_codes: np.ndarray, n_cat: int,
                   perplexity: float) -> np.ndarray:
    """Per-cell inverse Simpson index 1 / sum_c (sum_{j in c} w_ij)^2 over calibrated weights."""
    P = _perplexity_weights(dist, perplexity)
    mass = _category_counts(nb_codes, n_cat, P)
    return 1.0 / (mass ** 2).sum(axis=1)


def _lisi(X, cats, name: str, n_neighbors: int, perplexity: float | None, seed: int):
    X = _embedding(X)
    n = _check_n(X, 2, "LISI")
    codes, uniques = _codes(cats, name, n, min_classes=2)
    k = min(_check_int(n_neighbors, "n_neighbors"), n - 1)
    if perplexity is None:
        perplexity = max(1.0, float(np.floor(k / 3)))  # LISI default: k = 3 * perplexity
    elif not np.isfinite(perplexity) or not 0 < perplexity <= k:
        raise ValueError(f"perplexity must be in (0, n_neighbors = {k}]; got {perplexity!r}.")
    dist, idx = _knn(X, k, seed=seed)
    return _lisi_from_knn(dist, codes[idx], len(uniques), float(perplexity)), len(uniques)


def ilisi(X, batches, *, n_neighbors: int = 30, perplexity: float | None = None,
          scaled: bool = False, seed: int = 0) -> float:
    """Integration LISI: effective number of batches in each cell's neighbourhood.

    LISI (Korsunsky et al. 2019, Harmony; scIB, Luecken et al. 2022): for each cell, weights
    ``w_ij ~ exp(-beta_i d_ij)`` over its ``n_neighbors`` nearest neighbours (itself excluded;
    euclidean distances ``d_ij``), with ``beta_i`` found by binary search so that the weights'
    entropy equals ``ln(perplexity)``; then ``LISI_i = 1 / sum_b (sum_{j in b} w_ij)^2``, the
    inverse Simpson index. Returns the mean over cells (scIB reports the median).

    Parameters
    ----------
    n_neighbors
        Neighbourhood size, capped at ``n_cells - 1``.
    perplexity
        Default ``max(1, floor(n_neighbors / 3))`` (LISI uses ``k = 3 * perplexity``); must not
        exceed ``n_neighbors``.
    scaled
        Return scIB's ``(iLISI - 1) / (n_batches - 1)``: 0 = separated, 1 = fully mixed.

    Returns
    -------
    Mean iLISI in [1, n_batches], or the scaled value in [0, 1].
    """
    per_cell, n_batches = _lisi(X, batches, "batches", n_neighbors, perplexity, seed)
    value = float(per_cell.mean())
    return (value - 1.0) / (n_batches - 1) if scaled else value


def clisi(X, labels, *, n_neighbors: int = 30, perplexity: float | None = None,
          scaled: bool = False, seed: int = 0) -> float:
    """Cell-type LISI: effective number of labels in each cell's neighbourhood.

    Same computation as :func:`ilisi` with cell labels in place of batches (Korsunsky et al.
    2019; scIB). Low is good: 1 = every neighbourhood is pure.

    Parameters
    ----------
    scaled
        Return scIB's ``(n_labels - cLISI) / (n_labels - 1)``: 1 = pure neighbourhoods.
    """
    per_cell, n_labels = _lisi(X, labels, "labels", n_neighbors, perplexity, seed)
    value = float(per_cell.mean())
    return (n_labels - value) / (n_labels - 1) if scaled else value


def graph_connectivity(X, labels, *, n_neighbors: int = 15, seed: int = 0) -> float:
    """scIB graph connectivity (Luecken et al. 2022).

    Build the symmetric kNN graph of all cells (``n_neighbors`` neighbours each, itself
    excluded; an edge when either cell lists the other). For each label ``c``, restrict the graph
    to the cells of ``c`` and take ``LCC_c / N_c``, the size of its largest connected component
    over the number of cells with label ``c``. Returns ``mean_c LCC_c / N_c`` in (0, 1]; 1 = every
    label forms one connected piece. (scIB uses scanpy's UMAP graph, whose ``n_neighbors``
    counts the cell itself.)
    """
    X = _embedding(X)
    n = _check_n(X, 2, "graph_connectivity")
    codes, uniques = _codes(labels, "labels", n)
    k = min(_check_int(n_neighbors, "n_neighbors"), n - 1)
    _, idx = _knn(X, k, seed=seed)
    rows = np.repeat(np.arange(n), k)
    A = sp.csr_matrix((np.ones(n * k, dtype=np.int8), (rows, idx.ravel())), shape=(n, n))
    # directed=False below reads every edge both ways: the symmetric graph, no A + A.T needed
    scores = []
    for c in range(len(uniques)):
        members = np.flatnonzero(codes == c)
        _, comp = connected_components(A[members][:, members], directed=False)
        scores.append(np.bincount(comp).max() / members.size)
    return float(np.mean(scores))


def kbet(X, batches, *, n_neighbors: int | None = None, alpha: float = 0.05,
         n_tests: int = 100, test_size: int | None = None, seed: int = 0) -> float:
    """kBET acceptance rate (Büttner et al. 2019, Nat. Methods 16:43).

    For a tested cell, its neighbourhood is the cell itself plus its ``n_neighbors`` nearest
    neighbours (``k0 = n_neighbors + 1`` cells, as kBET's ``cbind(knn[, 1:(k0-1)], cell)``). With
    ``o_b`` the neighbourhood's count of batch ``b`` and ``e_b = k0 * P_b`` its expectation from the
    global batch fractions ``P_b``, the statistic ``sum_b (o_b - e_b)^2 / e_b`` is compared to a
    chi-square with ``n_batches - 1`` degrees of freedom; the neighbourhood is rejected when the
    p-value is below ``alpha``. Each of ``n_tests`` repeats tests ``test_size`` cells drawn
    without replacement; returns ``1 - mean rejection rate``: 1 = well mixed, 0 = every
    neighbourhood deviates.

    Defaults follow the kBET R package with ``heuristic=FALSE``:

    - ``k0 = floor(mean batch size / 4)``, raised to at least 10 and capped at ``n_cells``
      (so ``n_neighbors = k0 - 1``);
    - ``test_size = max(ceil(0.1 * n_cells), 25)``, capped at ``n_cells``;
    - ``n_tests = 100`` (kBET's ``n_repeat``), ``alpha = 0.05``.

    kBET's bisection search for the neighbourhood size (``heuristic=TRUE``) is not done.
    Deterministic given ``seed``.
    """
    X = _embedding(X)
    n = _check_n(X, 2, "kbet")
    codes, uniques = _codes(batches, "batches", n, min_classes=2)
    n_batches = len(uniques)
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float, np.number)) \
            or not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1); got {alpha!r}.")
    n_tests = _check_int(n_tests, "n_tests")
    if n_neighbors is None:
        k0 = min(max(int(np.floor(n / n_batches / 4)), 10), n)
        k = k0 - 1
    else:
        k = min(_check_int(n_neighbors, "n_neighbors"), n - 1)
    if test_size is None:
        test_size = max(int(np.ceil(0.1 * n)), 25)
    test_size = min(_check_int(test_size, "test_size"), n)

    rng = np.random.default_rng(seed)
    draws = np.stack([rng.choice(n, size=test_size, replace=False) for _ in range(n_tests)])
    cells, inverse = np.unique(draws, return_inverse=True)
    _, idx = _knn(X, k, cells, seed=seed)
    env = np.concatenate([idx, cells[:, None]], axis=1)
    observed = _category_counts(codes[env], n_batches)
    expected = (k + 1) * np.bincount(codes, minlength=n_batches) / n
    stat = ((observed - expected) ** 2 / expected).sum(axis=1)
    rejected = chi2.sf(stat, df=n_batches - 1) < alpha
    rejection_rate = rejected[inverse.reshape(draws.shape)].mean(axis=1)
    return float(1.0 - rejection_rate.mean())


# --------------------------------------------------------------------------------------------
# paired cells
# --------------------------------------------------------------------------------------------

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


# --------------------------------------------------------------------------------------------
# label transfer
# --------------------------------------------------------------------------------------------

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
    from sklearn.neighbors import NearestNeighbors

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

    if Xs.shape[0] > _EXACT_KNN_MAX:
        from pynndescent import NNDescent

        nnd = NNDescent(Xs, n_neighbors=min(max(k, 30), Xs.shape[0] - 1), random_state=0)
        idx, dist = nnd.query(Xt, k=k)
    else:
        dist, idx = NearestNeighbors(n_neighbors=k).fit(Xs).kneighbors(Xt)
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


# --------------------------------------------------------------------------------------------
# Leiden clustering
# --------------------------------------------------------------------------------------------

def _umap_connectivities(X: np.ndarray, n_neighbors: int, seed: int = 0) -> sp.csr_matrix:
    """UMAP fuzzy-simplicial-set graph, as scanpy ``pp.neighbors(method="umap")`` builds it.

    A numpy transcription of ``umap.umap_.fuzzy_simplicial_set`` with scanpy's defaults
    (``local_connectivity=1``, ``set_op_mix_ratio=1``): ``n_neighbors`` counts the cell itself;
    ``rho_i`` = distance to the nearest other cell, ``sigma_i`` by binary search so that
    ``sum_j exp(-max(d_ij - rho_i, 0) / sigma_i) = log2(n_neighbors)``,
    ``w_ij = exp(-max(d_ij - rho_i, 0) / sigma_i)``, and the fuzzy union ``W + W^T - W o W^T``.
    Written out so that clustering needs no numba compilation (10-30 s per process); on the same
    neighbours it agrees with scanpy's ``obsp["connectivities"]`` to float32 precision (checked
    on random data without duplicate cells; tie order among coinciding cells may differ).
    """
    n = X.shape[0]
    dist, idx = _knn(X, n_neighbors - 1, seed=seed)
    # prepend each cell itself at distance 0, like the kNN result umap receives
    dist = np.concatenate([np.zeros((n, 1)), dist], axis=1)
    idx = np.concatenate([np.arange(n)[:, None], idx], axis=1)
    k = n_neighbors

    # rho: first non-zero distance (0 when all neighbours coincide with the cell)
    nonzero = dist > 0
    has = nonzero.any(axis=1)
    rho = np.where(has, dist[np.arange(n), np.argmax(nonzero, axis=1)], 0.0)
    target = np.log2(k)
    d = dist[:, 1:] - rho[:, None]
    lo, hi, mid = np.zeros(n), np.full(n, np.inf), np.ones(n)
    active = np.ones(n, dtype=bool)
    for _ in range(64):
        with np.errstate(over="ignore"):
            psum = np.where(d > 0, np.exp(-d / mid[:, None]), 1.0).sum(axis=1)
        active &= np.abs(psum - target) >= 1e-5
        if not active.any():
            break
        over = active & (psum > target)
        hi[over] = mid[over]
        mid[over] = (lo[over] + hi[over]) / 2.0
        under = active & ~(psum > target)
        lo[under] = mid[under]
        mid[under] = np.where(np.isinf(hi[under]), mid[under] * 2.0,
                              (lo[under] + hi[under]) / 2.0)
    floor = 1e-3 * np.where(rho > 0, dist.mean(axis=1), dist.mean())
    sigma = np.maximum(mid, floor)

    with np.errstate(over="ignore", invalid="ignore"):
        w = np.where((dist - rho[:, None] <= 0) | (sigma[:, None] == 0), 1.0,
                     np.exp(-(dist - rho[:, None]) / sigma[:, None]))
    w[idx == np.arange(n)[:, None]] = 0.0
    W = sp.csr_matrix((w.ravel(), (np.repeat(np.arange(n), k), idx.ravel())), shape=(n, n))
    W.eliminate_zeros()
    Wt = W.T.tocsr()
    G = (W + Wt - W.multiply(Wt)).tocsr()
    G.eliminate_zeros()
    return G


def leiden_ari_nmi(X, labels, *, resolutions: Sequence[float] = DEFAULT_RESOLUTIONS,
                   n_neighbors: int = 15, seed: int = 0) -> dict[str, float]:
    """Best ARI and best NMI of Leiden clusterings against ``labels`` over a resolution sweep.

    The MinNet benchmark protocol: scanpy's UMAP neighbour graph on the embedding
    (``pp.neighbors`` defaults; ``n_neighbors`` counts the cell itself, as in scanpy), then
    scanpy ``tl.leiden`` at each resolution -- ``flavor="igraph"`` (2 iterations, undirected)
    where the installed scanpy has it (>= 1.10), else the leidenalg flavor -- and the maximum of
    :func:`ari` and of :func:`nmi` over the resolutions, taken separately.

    The graph is computed here (:func:`_umap_connectivities`, same formulas as
    ``umap.fuzzy_simplicial_set``) on exact neighbours up to 50,000 cells, instead of through
    ``pp.neighbors``, which would compile umap's numba kernels on every new process.

    Returns
    -------
    dict with ``ari``, ``nmi`` (floats) and ``ari_resolution``, ``nmi_resolution`` (where each
    maximum was reached; the first on ties).
    """
    import anndata as ad
    import scanpy as sc

    X = _embedding(X)
    n = _check_n(X, 3, "leiden_ari_nmi")
    arr = _label_array(labels, "labels")
    _codes(None, "labels", n, arr=arr)
    try:
        res = [float(r) for r in np.atleast_1d(np.asarray(resolutions, dtype=float))]
    except (TypeError, ValueError):
        res = []
    if not res or not all(np.isfinite(r) and r > 0 for r in res):
        raise ValueError(f"resolutions must be a non-empty sequence of positive numbers; got "
                         f"{resolutions!r}.")
    k = min(_check_int(n_neighbors, "n_neighbors", 2), n)

    graph = _umap_connectivities(X, k, seed=seed)
    adata = ad.AnnData(obs=pd.DataFrame(index=[str(i) for i in range(n)]))
    leiden_kwargs: dict = {}
    if "flavor" in inspect.signature(sc.tl.leiden).parameters:
        leiden_kwargs = {"flavor": "igraph", "n_iterations": 2, "directed": False}
    best = {"ari": -np.inf, "nmi": -np.inf, "ari_resolution": np.nan, "nmi_resolution": np.nan}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for r in res:
            sc.tl.leiden(adata, resolution=r, adjacency=graph, random_state=seed,
                         key_added="_leiden", **leiden_kwargs)
            clusters = adata.obs["_leiden"].to_numpy()
            for name, fn in (("ari", ari), ("nmi", nmi)):
                value = fn(arr, clusters)
                if value > best[name]:
                    best[name], best[f"{name}_resolution"] = value, r
    return {key: float(value) for key, value in best.items()}


# --------------------------------------------------------------------------------------------
# everything at once
# --------------------------------------------------------------------------------------------

def evaluate(X, *, labels=None, batches=None, label_mask=None, seed: int = 0
             ) -> dict[str, float]:
    """Standard integration metrics on an embedding; metrics whose inputs are missing are skipped.

    With ``labels``: ``silhouette`` (:func:`silhouette`), ``clisi`` (:func:`clisi`, scaled: 1 =
    pure neighbourhoods), ``graph_connectivity``, and ``ari`` / ``nmi`` (best over the Leiden
    resolution sweep of :func:`leiden_ari_nmi`).
    With ``batches``: ``batch_entropy`` (:func:`batch_entropy`) and ``ilisi`` (:func:`ilisi`,
    scaled: 1 = fully mixed).

    Parameters
    ----------
    X
        Embedding, cells x dimensions.
    labels, batches
        Per-cell annotations (length n_cells).
    label_mask
        Boolean array (n_cells,): label-based metrics use only these cells (and the embedding
        restricted to them), e.g. the cells of the annotated dataset. ``labels`` may be
        missing (NaN) outside the mask. Batch metrics always use all cells.
    seed
        Seed for every sampled or randomised metric.

    Returns
    -------
    dict of plain floats, keys in the order listed above.
    """
    X = _embedding(X)
    n = X.shape[0]
    out: dict[str, float] = {}
    if labels is None and batches is None:
        raise ValueError("evaluate needs labels and/or batches.")
    if label_mask is not None and labels is None:
        raise ValueError("label_mask was given without labels.")
    if labels is not None:
        lab = _label_array(labels, "labels")
        if lab.shape[0] != n:
            raise ValueError(f"labels has {lab.shape[0]} entries but X has {n} cells.")
        Xl = X
        if label_mask is not None:
            mask = np.asarray(label_mask)
            if mask.dtype != bool or mask.shape != (n,):
                raise ValueError(f"label_mask must be a boolean array of length {n}; got "
                                 f"dtype {mask.dtype}, shape {mask.shape}.")
            if not mask.any():
                raise ValueError("label_mask selects no cells.")
            lab, Xl = lab[mask], X[mask]
        out["silhouette"] = silhouette(Xl, lab, seed=seed)
        out["clisi"] = clisi(Xl, lab, scaled=True, seed=seed)
        out["graph_connectivity"] = graph_connectivity(Xl, lab, seed=seed)
        clus = leiden_ari_nmi(Xl, lab, seed=seed)
        out["ari"], out["nmi"] = clus["ari"], clus["nmi"]
    if batches is not None:
        out["batch_entropy"] = batch_entropy(X, batches, seed=seed)
        out["ilisi"] = ilisi(X, batches, scaled=True, seed=seed)
    return {key: float(value) for key, value in out.items()}


# --------------------------------------------------------------------------------------------
# isolated labels (appended; listed in __all__ below)
# --------------------------------------------------------------------------------------------

def isolated_labels(X, labels, batches, *, iso_threshold: int | None = None,
                    return_all: bool = False, max_cells: int = 20000, seed: int = 0):
    """scIB isolated-label ASW (Luecken et al. 2022, ``scib.me.isolated_labels_asw``).

    Isolated labels are those present in at most ``iso_threshold`` batches (default: the
    smallest number of batches any label is present in, as scIB). For each isolated label ``c``,
    the cells are split into ``c`` versus all other labels and the scaled silhouette of that
    two-group split over all cells is taken (:func:`silhouette`, ``(s + 1) / 2``). Returns the
    mean over isolated labels: 1 = the rare labels form compact groups of their own.

    When every label is in every batch, every label counts as isolated (scIB's rule); with a
    single batch the score is defined but says nothing about integration.

    Parameters
    ----------
    iso_threshold
        Maximum number of batches a label may be present in to count as isolated.
    return_all
        Return ``{label: score}`` for each isolated label instead of the mean.
    max_cells, seed
        Passed to :func:`silhouette` (stratified subsample above ``max_cells`` cells).
    """
    X = _embedding(X)
    n = _check_n(X, 3, "isolated_labels")
    codes, uniques = _codes(labels, "labels", n, min_classes=2)
    bcodes, _ = _codes(batches, "batches", n)
    n_batches_per_label = np.array([np.unique(bcodes[codes == c]).size
                                    for c in range(len(uniques))])
    if iso_threshold is None:
        iso_threshold = int(n_batches_per_label.min())
    iso_threshold = _check_int(iso_threshold, "iso_threshold")
    isolated = np.flatnonzero(n_batches_per_label <= iso_threshold)
    if isolated.size == 0:
        raise ValueError(f"no label is present in {iso_threshold} batches or fewer.")
    scores = {uniques[c]: silhouette(X, codes == c, max_cells=max_cells, seed=seed)
              for c in isolated}
    if return_all:
        return scores
    return float(np.mean(list(scores.values())))


__all__.append("isolated_labels")
