"""Integration metrics: label conservation, batch mixing, paired-cell alignment and label transfer.

All functions take an embedding ``X`` (cells x dimensions, any array-like or scipy sparse
matrix) and per-cell annotations (any hashable labels: strings, ints, pandas Categorical).
Inputs are validated: lengths must match, embeddings must be finite, and missing labels
(NaN / None) are errors unless a function documents otherwise. Neighbour searches are those of
:mod:`scferry.neighbors` (exact up to :data:`scferry.neighbors.EXACT_MAX` cells, approximate and
seeded by the function's ``seed`` above); no function builds an n x n dense matrix.

Overview (one module per what is judged)
----------------------------------------
Label conservation (:mod:`.conservation`): :func:`ari`, :func:`nmi`, :func:`f1_macro`,
:func:`silhouette`, :func:`clisi`, :func:`graph_connectivity`, :func:`isolated_labels`,
:func:`leiden_ari_nmi`.
Batch mixing (:mod:`.mixing`): :func:`batch_entropy`, :func:`ilisi`, :func:`kbet`.
Paired cells and label transfer (:mod:`.alignment`): :func:`foscttm`, :func:`transfer_accuracy`,
:func:`knn_label_transfer`.
All at once: :func:`evaluate`.
"""
from __future__ import annotations

import numpy as np

from ._inputs import _embedding, _label_array
# private helpers that tests reach as scferry.metrics._name
from ._lisi import _lisi_from_knn, _perplexity_weights  # noqa: F401
from ..neighbors import umap_connectivities as _umap_connectivities  # noqa: F401
from .alignment import foscttm, knn_label_transfer, transfer_accuracy
from .conservation import (DEFAULT_RESOLUTIONS, ari, clisi, f1_macro, graph_connectivity,
                           isolated_labels, leiden_ari_nmi, nmi, silhouette)
from .mixing import batch_entropy, ilisi, kbet

__all__ = [
    "ari", "nmi", "f1_macro", "silhouette", "batch_entropy", "foscttm", "transfer_accuracy",
    "ilisi", "clisi", "graph_connectivity", "kbet", "knn_label_transfer", "leiden_ari_nmi",
    "evaluate", "isolated_labels",
]


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
