"""Canonical correlation analysis between the cells of two datasets, without an n x m matrix.

- :func:`seurat_cca`: Seurat's CCA (Butler et al. 2018; Stuart et al. 2019, ``RunCCA``): both
  datasets over the same (linked) features, each feature standardised within its dataset, then the
  truncated SVD of ``Xs @ Ys.T`` (cells1 x cells2). The product is applied implicitly (a
  ``LinearOperator`` over the p-dimensional feature space), so memory is O((n + m) p_nnz + (n + m) k)
  and sparse inputs stay sparse. Returns each dataset's canonical vectors, L2-normalised per cell
  (as Seurat's ``FindIntegrationAnchors(l2.norm = TRUE)``), ready for MNN search or as a baseline
  joint embedding.
- :func:`cca_feature_links`: the feature links of the scMODAL CCA extension (Pramod, Kannan &
  Dash, CS690 project report, IIT Kanpur): with cell groups present in both datasets, the cross-covariance of the two
  datasets' per-group mean profiles (p1 x p2, never formed: it is rank <= groups) is decomposed by
  SVD and each canonical component contributes the pair (feature of dataset 1, feature of dataset
  2) with the largest loadings. These pairs stand in for a hand-made gene-protein table.
"""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from scipy.sparse.linalg import LinearOperator, svds

__all__ = ["seurat_cca", "cca_feature_links"]


def _moments(X) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature mean and 1/sd (0 for constant features), float64, without densifying."""
    n = X.shape[0]
    if sp.issparse(X):
        mean = np.asarray(X.mean(axis=0), dtype=np.float64).ravel()
        sq = np.asarray(X.multiply(X).mean(axis=0), dtype=np.float64).ravel()
    else:
        X = np.asarray(X, dtype=np.float64)
        mean, sq = X.mean(axis=0), (X * X).mean(axis=0)
    var = np.maximum(sq - mean ** 2, 0.0) * n / max(n - 1, 1)  # sample variance, as R's sd
    sd = np.sqrt(var)
    inv = np.divide(1.0, sd, out=np.zeros_like(sd), where=sd > 1e-12)
    return mean, inv


def _check_matrix(X, name: str):
    if not (sp.issparse(X) or isinstance(X, np.ndarray)):
        raise TypeError(f"{name} must be a numpy array or scipy sparse matrix (cells x features); "
                        f"got {type(X).__name__}.")
    if X.ndim != 2:
        raise ValueError(f"{name} must be 2-dimensional (cells x features); got shape {X.shape}.")
    data = X.data if sp.issparse(X) else X
    if not np.issubdtype(data.dtype, np.number) or not np.isfinite(data).all():
        raise ValueError(f"{name} must hold finite numbers; remove NaN/inf values first.")
    return sp.csr_matrix(X, dtype=np.float64) if sp.issparse(X) else np.asarray(X, np.float64)


def seurat_cca(X, Y, n_components: int = 20, seed: int = 0, standardize: bool = True,
               l2_norm: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Seurat-style CCA of two datasets over the same features.

    Parameters
    ----------
    X, Y
        cells1 x p and cells2 x p (numpy or scipy sparse; e.g. log-normalised expression of the
        shared or linked features, columns in the same order).
    n_components
        Number of canonical vectors k (< min(cells1, cells2)).
    seed
        Seeds the starting vector of the Lanczos iteration (ARPACK): same seed, same result.
    standardize
        Centre and scale each feature within its dataset (Seurat's ``ScaleData``; here without its
        clipping at 10, which would densify). Applied implicitly: sparse inputs are not densified.
    l2_norm
        L2-normalise each cell's canonical vector (Seurat's default before anchor search).

    Returns
    -------
    ``(U, V)``: float32 arrays cells1 x k and cells2 x k, components by decreasing singular value,
    signs fixed so that each component's first entry of ``U`` is >= 0.
    """
    X, Y = _check_matrix(X, "X"), _check_matrix(Y, "Y")
    if X.shape[1] != Y.shape[1]:
        raise ValueError(f"X and Y must have the same features (columns in the same order); got "
                         f"{X.shape[1]} and {Y.shape[1]} columns.")
    n, m = X.shape[0], Y.shape[0]
    if not isinstance(n_components, (int, np.integer)) or isinstance(n_components, bool) or n_components < 1:
        raise ValueError(f"n_components must be a positive integer; got {n_components!r}.")
    if n_components >= min(n, m):
        raise ValueError(f"n_components ({n_components}) must be below the smaller dataset's cell "
                         f"count ({min(n, m)}); use fewer components.")
    if not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed must be an int; got {seed!r}.")
    p = X.shape[1]
    if standardize:
        mx, sx = _moments(X)
        my, sy = _moments(Y)
        if not (sx > 0).any() or not (sy > 0).any():
            raise ValueError("every feature is constant in X or in Y: nothing to correlate.")
    else:
        mx = my = np.zeros(p)
        sx = sy = np.ones(p)
    w = sx * sy  # Xs @ Ys.T = (X - 1 mx') diag(sx sy) (Y - 1 my')'

    def matmat(V):  # (Xs Ys') V, V: m x r
        V = V.reshape(m, -1)
        t = (Y.T @ V) - np.outer(my, V.sum(axis=0))  # p x r
        t *= w[:, None]
        return X @ t - np.outer(np.ones(n), mx @ t)

    def rmatmat(U):  # (Ys Xs') U, U: n x r
        U = U.reshape(n, -1)
        t = (X.T @ U) - np.outer(mx, U.sum(axis=0))
        t *= w[:, None]
        return Y @ t - np.outer(np.ones(m), my @ t)

    op = LinearOperator((n, m), matvec=lambda v: matmat(v).ravel(), rmatvec=lambda u: rmatmat(u).ravel(),
                        matmat=matmat, rmatmat=rmatmat, dtype=np.float64)
    v0 = np.random.default_rng(int(seed)).standard_normal(min(n, m))
    U, s, Vt = svds(op, k=int(n_components), v0=v0, solver="arpack")
    order = np.argsort(-s)
    U, V = U[:, order], Vt[order].T
    flip = np.where(U[0] < 0, -1.0, 1.0)  # deterministic signs
    U, V = U * flip, V * flip
    if l2_norm:
        U = U / np.maximum(np.linalg.norm(U, axis=1, keepdims=True), 1e-12)
        V = V / np.maximum(np.linalg.norm(V, axis=1, keepdims=True), 1e-12)
    return U.astype(np.float32), V.astype(np.float32)


def _group_means(X, groups: np.ndarray, levels: list) -> np.ndarray:
    """levels x features means of the rows of X in each group, via a sparse indicator product."""
    index = {g: i for i, g in enumerate(levels)}
    rows = np.array([index.get(g, -1) for g in groups])
    keep = np.flatnonzero(rows >= 0)
    ind = sp.csr_matrix((np.ones(len(keep)), (rows[keep], keep)), shape=(len(levels), X.shape[0]))
    counts = np.asarray(ind.sum(axis=1)).ravel()
    M = ind @ X
    return (M.toarray() if sp.issparse(M) else np.asarray(M)) / counts[:, None]


def cca_feature_links(X1, X2, groups1, groups2, n_components: int = 20,
                      min_cells: int = 1) -> list[tuple[int, int]]:
    """Feature pairs (column of X1, column of X2) linked by CCA of per-group mean profiles.

    scMODAL's CCA extension: average each dataset's log-normalised features within the cell
    groups both datasets share (e.g. cell types), centre the mean profiles over groups, and take
    the SVD of their cross-covariance ``M1' M2`` (p1 x p2; computed through the groups x groups
    core, never formed). For each canonical component, the feature of dataset 1 and the feature of
    dataset 2 with the largest absolute loadings form one link; a feature is used at most once
    (first component wins). Components with a zero singular value are skipped.

    Returns a list of ``(i, j)`` column-index pairs, strongest component first (at most
    ``min(n_components, groups - 1)`` pairs).
    """
    X1, X2 = _check_matrix(X1, "X1"), _check_matrix(X2, "X2")
    groups1, groups2 = np.asarray(groups1), np.asarray(groups2)
    if len(groups1) != X1.shape[0] or len(groups2) != X2.shape[0]:
        raise ValueError("groups1/groups2 must have one entry per row of X1/X2.")
    if not isinstance(n_components, (int, np.integer)) or n_components < 1:
        raise ValueError(f"n_components must be a positive integer; got {n_components!r}.")
    g1, c1 = np.unique(groups1, return_counts=True)
    g2, c2 = np.unique(groups2, return_counts=True)
    levels = sorted(set(g1[c1 >= min_cells]) & set(g2[c2 >= min_cells]))
    if len(levels) < 2:
        raise ValueError(f"deriving feature links by CCA needs at least 2 cell groups present in both "
                         f"datasets; found {len(levels)} ({levels}). Pass a linked-feature table instead.")
    M1 = _group_means(X1, groups1, levels)  # inputs are log-normalised already
    M2 = _group_means(X2, groups2, levels)
    M1 -= M1.mean(axis=0)
    M2 -= M2.mean(axis=0)
    # M1' M2 = Q1 R1' R2 Q2' with thin QRs of M1' (p1 x g) and M2' (p2 x g): SVD of the g x g core.
    Q1, R1 = np.linalg.qr(M1.T)
    Q2, R2 = np.linalg.qr(M2.T)
    A, s, Bt = np.linalg.svd(R1 @ R2.T)
    L1, L2 = Q1 @ A, Q2 @ Bt.T  # loadings, p1 x g and p2 x g
    tol = s.max() * 1e-10 if s.size else 0.0
    pairs, used1, used2 = [], set(), set()
    for c in range(min(int(n_components), len(s))):
        if s[c] <= tol:
            break
        a, b = np.abs(L1[:, c]), np.abs(L2[:, c])
        i, j = int(np.argmax(a)), int(np.argmax(b))
        if i in used1 or j in used2:
            continue
        used1.add(i)
        used2.add(j)
        pairs.append((i, j))
    return pairs
