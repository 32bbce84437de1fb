"""Label conservation: how well the embedding keeps cell labels apart and together
(:func:`ari`, :func:`nmi`, :func:`f1_macro`, :func:`silhouette`, :func:`clisi`,
:func:`graph_connectivity`, :func:`isolated_labels`, :func:`leiden_ari_nmi`)."""
from __future__ import annotations

import inspect
import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components

from ..neighbors import knn, umap_connectivities
from ._inputs import _check_int, _check_n, _codes, _embedding, _label_array, _pair_codes
from ._lisi import _lisi

__all__ = ["ari", "nmi", "f1_macro", "silhouette", "clisi", "graph_connectivity",
           "isolated_labels", "leiden_ari_nmi", "DEFAULT_RESOLUTIONS"]

DEFAULT_RESOLUTIONS = (0.2, 0.4, 0.6, 0.8, 1.0, 1.2, 1.4, 1.6, 1.8, 2.0)


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
    _, idx = knn(X, k, seed=seed)
    rows = np.repeat(np.arange(n), k)
    A = sp.csr_matrix((np.ones(n * k, dtype=np.int8), (rows, idx.ravel())), shape=(n, n))
    # directed=False below reads every edge both ways: the symmetric graph, no A + A.T needed
    scores = []
    for c in range(len(uniques)):
        members = np.flatnonzero(codes == c)
        _, comp = connected_components(A[members][:, members], directed=False)
        scores.append(np.bincount(comp).max() / members.size)
    return float(np.mean(scores))


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


def leiden_ari_nmi(X, labels, *, resolutions: Sequence[float] = DEFAULT_RESOLUTIONS,
                   n_neighbors: int = 15, seed: int = 0) -> dict[str, float]:
    """Best ARI and best NMI of Leiden clusterings against ``labels`` over a resolution sweep.

    The MinNet benchmark protocol: scanpy's UMAP neighbour graph on the embedding
    (``pp.neighbors`` defaults; ``n_neighbors`` counts the cell itself, as in scanpy), then
    scanpy ``tl.leiden`` at each resolution -- ``flavor="igraph"`` (2 iterations, undirected)
    where the installed scanpy has it (>= 1.10), else the leidenalg flavor -- and the maximum of
    :func:`ari` and of :func:`nmi` over the resolutions, taken separately.

    The graph is computed here (:func:`scferry.neighbors.umap_connectivities`, same formulas as
    ``umap.fuzzy_simplicial_set``) on :func:`scferry.neighbors.knn` neighbours, instead of through
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

    graph = umap_connectivities(X, k, seed=seed)
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
