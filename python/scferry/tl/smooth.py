"""kNN smoothing and mini-bulks in a joint embedding (MinNet, Genome Biology 2023, Methods "Data
smoothing, mini-bulk synthesis"). The neighbour graph holds n x (k + 1) entries and mini-bulks are a
sparse indicator product, so no cells x cells matrix is ever formed.

Deliberate difference from the paper: mini-bulks come from k-means on the joint embedding within each
cell type instead of cutting a hierarchical clustering (scipy ``pdist``), which needs an n x n
distance matrix."""
from __future__ import annotations

import warnings
from collections.abc import Mapping

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData

from ..errors import ScferryWarning
from ..model import EMBEDDING_KEY
from ._common import _basis, _check_adata, _check_int, _labels, _matrix

SMOOTH_KEY = "scferry_smoothed"
BULK_KEY = "scferry_bulk"


def knn_smooth(adata: AnnData, *, k: int = 5, basis: str | np.ndarray = EMBEDDING_KEY,
               layer: str | None = None, quantile: float = 0.95,
               key_added: str = SMOOTH_KEY) -> sp.csr_matrix:
    """Complement each cell's values with those of its ``k`` nearest neighbours in the joint space.

    As in MinNet: the binarised kNN graph (each cell plus its ``k`` nearest cells of the same
    AnnData in ``obsm[basis]``, euclidean; neighbours farther than the ``quantile`` of all kNN
    distances dropped) times the count matrix, so each cell becomes the sum of itself and its
    retained neighbours. Sparse throughout (n x (k + 1) graph entries).

    Writes ``adata.layers[key_added]`` (CSR float32, cells x features); returns that matrix.
    """
    _check_adata(adata, "adata")
    n = adata.n_obs
    if n < 2:
        raise ValueError("adata needs at least 2 cells to smooth over neighbours.")
    k = _check_int(k, "k")
    if k > n - 1:
        raise ValueError(f"k = {k} neighbours but adata has only {n} cells; use k <= {n - 1}.")
    if isinstance(quantile, bool) or not isinstance(quantile, (int, float)) or not 0 < quantile <= 1:
        raise ValueError(f"quantile must be in (0, 1] (1 keeps every neighbour); got {quantile!r}.")
    if not isinstance(key_added, str) or not key_added:
        raise ValueError(f"key_added must be a non-empty string; got {key_added!r}.")
    Z = _basis(adata, basis, "adata")
    X = _matrix(adata, layer, "adata")

    from ..neighbors import knn
    dist, idx = knn(Z, k)
    keep = dist <= np.quantile(dist, quantile)
    rows = np.concatenate([np.arange(n), np.repeat(np.arange(n), k)[keep.ravel()]])
    cols = np.concatenate([np.arange(n), idx.ravel()[keep.ravel()]])
    graph = sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=(n, n))
    out = (graph @ X).tocsr().astype(np.float32)
    out.sort_indices()
    adata.layers[key_added] = out
    return out


# ---------------------------------------------------------------------------- mini-bulks
def _split_counts(sizes: np.ndarray, total: int) -> np.ndarray:
    """``total`` bulks over groups in proportion to their sizes (largest remainder), each group at
    least 1 and at most its size."""
    share = sizes / sizes.sum() * total
    out = np.clip(np.floor(share).astype(int), 1, sizes)
    order = np.argsort(-(share - np.floor(share)), kind="stable")
    i = 0
    while out.sum() < total and (out < sizes).any():
        g = order[i % len(order)]
        if out[g] < sizes[g]:
            out[g] += 1
        i += 1
    return out


def mini_bulk(datasets: Mapping[str, AnnData] | AnnData, *, n_bulks: int = 100,
              label_key: str | None = None, basis: str = EMBEDDING_KEY,
              layer: str | Mapping[str, str | None] | None = None, seed: int = 0
              ) -> dict[str, AnnData]:
    """Aggregate cells into mini-bulks that are neighbourhoods of the joint space.

    All cells of all datasets (e.g. RNA and ATAC, paired or not) are pooled in ``obsm[basis]`` and
    cut into ``n_bulks`` groups by k-means, within each cell type when ``label_key`` is given
    (bulks split over types in proportion to their cells, at least one each), so a bulk never mixes
    types. Each dataset's profile of a bulk is the sum of its own cells' rows (``X``, or ``layer``,
    e.g. ``"scferry_smoothed"`` from :func:`knn_smooth`). Bulks that hold no cell of some dataset
    are dropped (with a warning): they cannot be correlated across modalities.

    Writes ``obs["scferry_bulk"]`` (categorical bulk id, missing for cells of dropped bulks) on each
    input. Returns ``{name: AnnData}`` with the same bulks (rows, in the same order) for every
    dataset: ``X`` = summed values (CSR float32), ``obs`` = ``label`` (when ``label_key``) and
    ``n_cells`` (this dataset's cells in the bulk), ``var`` copied from the input.
    """
    if isinstance(datasets, AnnData):
        datasets = {"data": datasets}
    if not isinstance(datasets, Mapping) or not datasets:
        raise TypeError("datasets must be a non-empty dict name -> AnnData (or one AnnData).")
    names = list(datasets)
    for name in names:
        if not isinstance(name, str):
            raise TypeError(f"dataset names must be strings; got {name!r}.")
        _check_adata(datasets[name], f"dataset {name!r}")
    n_bulks = _check_int(n_bulks, "n_bulks", 2)
    seed = _check_int(seed, "seed", 0)
    layers = layer if isinstance(layer, Mapping) else {n: layer for n in names}
    unknown = set(layers) - set(names)
    if unknown:
        raise KeyError(f"layer names datasets {sorted(unknown)} that are not in datasets {names}.")
    Z = [_basis(datasets[n], basis, f"dataset {n!r}") for n in names]
    dims = {z.shape[1] for z in Z}
    if len(dims) > 1:
        raise ValueError(f"obsm[{basis!r}] has different widths across datasets ({sorted(dims)}): "
                         "the datasets must share one joint embedding (integrate them together).")
    mats = [_matrix(datasets[n], layers.get(n), f"dataset {n!r}") for n in names]
    labels = (np.concatenate([_labels(datasets[n], label_key, f"dataset {n!r}").to_numpy() for n in names])
              if label_key is not None else np.full(sum(len(z) for z in Z), "all", dtype=object))
    total = len(labels)
    if n_bulks > total:
        raise ValueError(f"n_bulks = {n_bulks} but there are only {total} cells in all; use fewer bulks.")

    from sklearn.cluster import KMeans
    Zall = np.vstack(Z)
    owner = np.repeat(np.arange(len(names)), [len(z) for z in Z])
    types, codes = np.unique(labels.astype(str), return_inverse=True)
    per_type = _split_counts(np.bincount(codes, minlength=len(types)), n_bulks)
    bulk = np.empty(total, np.int64)
    bulk_label, start = [], 0
    for t, m in enumerate(per_type):
        members = np.flatnonzero(codes == t)
        if m == 1:
            assign = np.zeros(len(members), np.int64)
        else:
            km = KMeans(n_clusters=int(m), n_init=3, random_state=seed).fit(Zall[members])
            assign = km.labels_.astype(np.int64)
        # renumber clusters by first appearance: stable ids, no empty ones
        _, assign = np.unique(assign, return_inverse=True)
        bulk[members] = start + assign
        bulk_label += [types[t]] * (assign.max() + 1)
        start += assign.max() + 1
    n_found = start
    counts = np.zeros((len(names), n_found), np.int64)
    for d in range(len(names)):
        counts[d] = np.bincount(bulk[owner == d], minlength=n_found)
    kept = np.flatnonzero((counts > 0).all(axis=0))
    if len(kept) < n_found:
        warnings.warn(f"{n_found - len(kept)} of {n_found} mini-bulks held no cell of some dataset "
                      "and were dropped (the modalities do not overlap there in the joint space).",
                      ScferryWarning, stacklevel=2)
    if len(kept) == 0:
        raise ValueError("no mini-bulk holds cells of every dataset: the datasets do not overlap in "
                         f"obsm[{basis!r}]; check the integration.")
    new_id = np.full(n_found, -1, np.int64)
    new_id[kept] = np.arange(len(kept))
    bulk_names = [f"bulk{i}" for i in range(len(kept))]
    out = {}
    for d, name in enumerate(names):
        adata = datasets[name]
        ids = new_id[bulk[owner == d]]
        cells = np.flatnonzero(ids >= 0)
        ind = sp.csr_matrix((np.ones(len(cells), np.float32), (ids[cells], cells)),
                            shape=(len(kept), adata.n_obs))
        obs = pd.DataFrame({"n_cells": counts[d, kept]}, index=pd.Index(bulk_names))
        if label_key is not None:
            obs.insert(0, "label", pd.Categorical(np.asarray(bulk_label, dtype=object)[kept]))
        res = AnnData((ind @ mats[d]).tocsr().astype(np.float32), obs=obs, var=adata.var.copy())
        res.uns["scferry_mini_bulk"] = {"n_bulks": n_bulks, "label_key": label_key, "basis": basis,
                                        "layer": layers.get(name), "seed": seed}
        out[name] = res
    for d, name in enumerate(names):  # written only once everything has succeeded
        ids = new_id[bulk[owner == d]]
        col = pd.Categorical.from_codes(ids, categories=bulk_names)
        datasets[name].obs[BULK_KEY] = col
    return out

