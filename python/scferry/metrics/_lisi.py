"""LISI (Korsunsky et al., Nat. Methods 2019): perplexity-calibrated neighbour weights and the
inverse Simpson index, shared by :func:`~scferry.metrics.ilisi` and :func:`~scferry.metrics.clisi`."""
from __future__ import annotations

import numpy as np

from ..neighbors import knn
from ._inputs import _category_counts, _check_int, _check_n, _codes, _embedding


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
    dist, idx = knn(X, k, seed=seed)
    return _lisi_from_knn(dist, codes[idx], len(uniques), float(perplexity)), len(uniques)
