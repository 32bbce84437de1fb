"""Nearest neighbours for the whole package: one implementation, numpy and torch entry points.

Every kNN search of scferry goes through here (metrics, ``sf.refine``, MinNet's path graph,
``knn_smooth``, kNN label transfer, scMODAL's mutual nearest neighbours):

- :func:`knn`: the ``k`` nearest cells of every cell (or of some query cells) among the cells of
  one embedding, each query cell itself excluded (numpy);
- :func:`knn_between`: the ``k`` nearest index cells of every query cell of another set (numpy);
- :func:`knn_torch`: :func:`knn` for a torch tensor on its device (blocked exact search on CUDA);
- :func:`nearest_torch`: the ``k`` nearest of a few centres (prototypes) of every row (torch);
- :func:`mutual_knn_mask`: mutual nearest neighbours by cosine similarity of two small sets;
- :func:`mutual_pairs`: mutual nearest neighbour pairs (euclidean) of two sets of any size;
- :func:`umap_connectivities`: UMAP's fuzzy neighbour graph (as scanpy builds it) from :func:`knn`.

Exact versus approximate: on the CPU the search is exact (scikit-learn ``NearestNeighbors``,
euclidean) up to :data:`EXACT_MAX` indexed cells and approximate above (pynndescent, Dong et al.,
WWW 2011, seeded by the caller's ``seed``), so that no n x n matrix is ever formed and large
data stay fast. A caller that needs another limit passes ``exact_max`` explicitly (``sf.refine``
does: it searches neighbours in every iteration, see :mod:`scferry.refine`). On CUDA,
:func:`knn_torch` is exact at any size (blocks of query rows x all cells).
"""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F

__all__ = ["EXACT_MAX", "knn", "knn_between", "knn_torch", "nearest_torch", "mutual_knn_mask",
           "mutual_pairs", "umap_connectivities", "drop_self"]

#: Above this many indexed cells, CPU searches switch from exact (scikit-learn) to approximate
#: (pynndescent). The one default of the package; callers may pass ``exact_max=`` instead.
EXACT_MAX = 50_000
# Entries per chunk of any (rows x centres) temporary in nearest_torch.
_BLOCK = 2 ** 24
# Entries per block of query x cell distances in the CUDA search (1 GiB of float32).
_GPU_BLOCK = 2 ** 28


def drop_self(dist: np.ndarray, idx: np.ndarray, self_idx: np.ndarray, k: int):
    """Remove each query's own index from a (m, k+1) result; if absent (duplicates), the last."""
    mask = idx == self_idx[:, None]
    no_self = ~mask.any(axis=1)
    mask[no_self, -1] = True
    # a cell listed twice is impossible, so exactly one entry per row is dropped
    keep = ~mask
    return dist[keep].reshape(len(self_idx), k), idx[keep].reshape(len(self_idx), k)


def knn(X: np.ndarray, k: int, query: np.ndarray | None = None, *, seed: int = 0,
        exact_max: int = EXACT_MAX):
    """Euclidean k nearest neighbours of X[query] (default: all cells) among all cells of X,
    each query cell itself excluded. Returns (distances float64, indices int64), both (m, k),
    ascending. Exact up to ``exact_max`` cells, pynndescent (seeded by ``seed``) above."""
    n = X.shape[0]
    if not 1 <= k <= n - 1:
        raise ValueError(f"k must be between 1 and n - 1 = {n - 1}; got {k}.")
    q = np.arange(n) if query is None else np.asarray(query, dtype=np.int64)
    if n > exact_max:
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
    return drop_self(np.asarray(dist, np.float64), np.asarray(idx, np.int64), q, k)


def knn_between(X_index: np.ndarray, X_query: np.ndarray, k: int, *, seed: int = 0,
                exact_max: int = EXACT_MAX):
    """Euclidean k nearest rows of ``X_index`` for every row of ``X_query`` (another set: nothing
    is excluded). Returns (distances, indices), both (m, k), ascending. Above ``exact_max`` index
    rows, pynndescent is built with at least 30 neighbours for a good index."""
    if X_index.shape[0] > exact_max:
        from pynndescent import NNDescent

        nnd = NNDescent(X_index, n_neighbors=min(max(k, 30), X_index.shape[0] - 1),
                        random_state=seed)
        idx, dist = nnd.query(X_query, k=k)
    else:
        from sklearn.neighbors import NearestNeighbors

        dist, idx = NearestNeighbors(n_neighbors=k).fit(X_index).kneighbors(X_query)
    return dist, idx


def knn_torch(X: torch.Tensor, k: int, seed: int = 0, *, exact_max: int = EXACT_MAX
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """k nearest neighbours of every row of X among the rows of X, itself excluded:
    (distances float32, indices int64), each (n, k), ascending, on X's device. ``k`` is capped
    at n - 1. CPU: :func:`knn`; CUDA: exact, in blocks of rows."""
    n = X.shape[0]
    k = min(k, n - 1)
    if X.device.type == "cpu":
        dist, idx = knn(X.numpy(), k, seed=seed, exact_max=exact_max)
        return torch.from_numpy(np.asarray(dist, np.float32)), torch.from_numpy(idx)
    sq = (X * X).sum(1)
    rows = max(1, _GPU_BLOCK // max(n, 1))
    out_d, out_i = [], []
    for s in range(0, n, rows):
        q = X[s:s + rows]
        d2 = sq[s:s + rows, None] - 2.0 * (q @ X.T) + sq[None, :]
        r = torch.arange(q.shape[0], device=X.device)
        d2[r, s + r] = float("inf")
        v, i = torch.topk(d2, k, dim=1, largest=False, sorted=True)
        out_d.append(v.clamp_min_(0).sqrt_())
        out_i.append(i)
    return torch.cat(out_d), torch.cat(out_i)


def nearest_torch(X: torch.Tensor, C: torch.Tensor, k: int = 1):
    """Distances and indices of the k nearest rows of C (centres) for every row of X, exact,
    in chunks of rows."""
    d = torch.empty(X.shape[0], k, device=X.device)
    i = torch.empty(X.shape[0], k, dtype=torch.long, device=X.device)
    step = max(1, _BLOCK // max(C.shape[0], 1))
    for s in range(0, X.shape[0], step):
        rows = slice(s, min(s + step, X.shape[0]))
        d[rows], i[rows] = torch.topk(torch.cdist(X[rows], C), k, dim=1, largest=False, sorted=True)
    return d, i


def mutual_knn_mask(a: torch.Tensor, b: torch.Tensor, k: int) -> torch.Tensor:
    """Boolean len(a) x len(b) matrix of mutual k nearest neighbours by cosine similarity (for
    the few hundred cells of a minibatch: the similarity matrix is dense)."""
    sim = F.normalize(a, dim=1) @ F.normalize(b, dim=1).T
    ka, kb = min(k, sim.shape[1]), min(k, sim.shape[0])
    ab = torch.zeros_like(sim, dtype=torch.bool).scatter_(1, sim.topk(ka, dim=1).indices, True)
    ba = torch.zeros_like(sim, dtype=torch.bool).scatter_(0, sim.topk(kb, dim=0).indices, True)
    return ab & ba


def mutual_pairs(A: np.ndarray, B: np.ndarray, k: int, *, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Mutual nearest neighbours (Haghverdi et al., Nat Biotechnol 2018) of two sets: the pairs
    (i, j) where B[j] is among the ``k`` euclidean nearest rows of B to A[i] and A[i] among the
    ``k`` nearest rows of A to B[j] (``k`` capped at each set's size). Returns (rows of A, rows
    of B), sorted by the row of A."""
    ka, kb = min(k, B.shape[0]), min(k, A.shape[0])
    _, ab = knn_between(B, A, ka, seed=seed)  # for each row of A, its nearest rows of B
    _, ba = knn_between(A, B, kb, seed=seed)
    i = np.repeat(np.arange(A.shape[0]), ka)
    j = ab.ravel()
    keep = (ba[j] == i[:, None]).any(axis=1)
    return i[keep].astype(np.int64), j[keep].astype(np.int64)


def umap_connectivities(X: np.ndarray, n_neighbors: int, seed: int = 0) -> sp.csr_matrix:
    """UMAP fuzzy-simplicial-set graph, as scanpy ``pp.neighbors(method="umap")`` builds it.

    A numpy transcription of ``umap.umap_.fuzzy_simplicial_set`` (McInnes et al. 2018) with
    scanpy's defaults (``local_connectivity=1``, ``set_op_mix_ratio=1``): ``n_neighbors`` counts
    the cell itself; ``rho_i`` = distance to the nearest other cell, ``sigma_i`` by binary search
    so that ``sum_j exp(-max(d_ij - rho_i, 0) / sigma_i) = log2(n_neighbors)``,
    ``w_ij = exp(-max(d_ij - rho_i, 0) / sigma_i)``, and the fuzzy union ``W + W^T - W o W^T``.
    Written out so that clustering needs no numba compilation (10-30 s per process); on the same
    neighbours it agrees with scanpy's ``obsp["connectivities"]`` to float32 precision (checked
    on random data without duplicate cells; tie order among coinciding cells may differ).
    """
    n = X.shape[0]
    dist, idx = knn(X, n_neighbors - 1, seed=seed)
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
