"""Batch mixing: how well batches share neighbourhoods (:func:`batch_entropy`, :func:`ilisi`,
:func:`kbet`)."""
from __future__ import annotations

import numpy as np
from scipy.stats import chi2

from ..neighbors import knn
from ._inputs import _category_counts, _check_int, _check_n, _codes, _embedding
from ._lisi import _lisi

__all__ = ["batch_entropy", "ilisi", "kbet"]


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
    _, idx = knn(X, k, cells, seed=seed)
    q = _category_counts(codes[idx], n_batches) / k / global_frac
    q /= q.sum(axis=1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        ent = -np.where(q > 0, q * np.log(q), 0.0).sum(axis=1)
    # the mean of pool means equals the mean over all draws: pools have equal size
    score = ent[inverse.reshape(draws.shape)].mean()
    return float(score / np.log(n_batches))


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
    _, idx = knn(X, k, cells, seed=seed)
    env = np.concatenate([idx, cells[:, None]], axis=1)
    observed = _category_counts(codes[env], n_batches)
    expected = (k + 1) * np.bincount(codes, minlength=n_batches) / n
    stat = ((observed - expected) ** 2 / expected).sum(axis=1)
    rejected = chi2.sf(stat, df=n_batches - 1) < alpha
    rejection_rate = rejected[inverse.reshape(draws.shape)].mean(axis=1)
    return float(1.0 - rejection_rate.mean())
