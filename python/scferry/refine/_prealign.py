"""Gaussian OT pre-alignment (the authors' implementation, scbiot 1.2; not in the paper): each
batch moves part of the way along the Gaussian OT (Bures) map to the batches' barycentre."""
from __future__ import annotations

import numpy as np
import torch

from ._geometry import _knn


def _sqrtm(C: np.ndarray, power: float = 0.5) -> np.ndarray:
    w, V = np.linalg.eigh((C + C.T) / 2)
    return (V * np.clip(w, 1e-12, None) ** power) @ V.T


def _gaussian(X: np.ndarray, rng: np.random.Generator, max_points: int = 20000,
              ridge: float = 1e-2, shrinkage: float = 0.05):
    """Mean and covariance (ridge, shrunk towards its mean variance) of up to max_points rows."""
    if len(X) > max_points:
        X = X[rng.choice(len(X), max_points, replace=False)]
    X = X.astype(np.float64)
    C = np.cov(X, rowvar=False).reshape(X.shape[1], X.shape[1]) + ridge * np.eye(X.shape[1])
    C = (1 - shrinkage) * C + shrinkage * np.trace(C) / len(C) * np.eye(len(C))
    return X.mean(0), C


def _bures_barycentre(covs: list[np.ndarray], w: np.ndarray, iters: int = 6) -> np.ndarray:
    """Fixed-point iteration of Alvarez-Esteban et al. (2016) for the Wasserstein barycentre."""
    S = sum(wi * C for wi, C in zip(w, covs))
    for _ in range(iters):
        h, hi = _sqrtm(S), _sqrtm(S, -0.5)
        T = sum(wi * _sqrtm(h @ C @ h) for wi, C in zip(w, covs))
        S = hi @ T @ T @ hi
    return S


# An input whose cells have, on average, at least this fraction of the other-batch neighbours
# that perfect mixing would give them (1 - p_b for a cell of batch b with share p_b) counts as
# integrated and is not pre-aligned.
MIXED_ENOUGH = 0.5


def _auto_prealign(X0: torch.Tensor, codes: np.ndarray, seed: int) -> tuple[float, float]:
    """scbiot's rule: strength grows as the fraction of other-batch neighbours (30 neighbours,
    on at most 5,000 cells) falls below 0.45; at most 0.8.

    Changed here: 0 also when the input's relative mixing, the mean over cells of the cell's
    share of other-batch neighbours over ``1 - p_b`` (its value under perfect mixing, batch
    shares ``p_b``), is at least ``MIXED_ENOUGH``. scbiot's fixed 0.45 assumes batches of
    similar size: with one batch of 18 % of the cells (PDAC's spots) perfect mixing gives a
    share of 0.30, so an integrated input was pre-aligned and could not compete as the start.
    The mean of per-cell ratios, not the ratio of the means, so that a large batch whose cells
    have no other-batch neighbours weighs as its size says even when a small batch's cells,
    fewer than the 30 neighbours, must have some. Returns (strength, relative mixing)."""
    rng = np.random.default_rng(seed + 991)
    sub = np.sort(rng.choice(len(codes), min(len(codes), 5000), replace=False))
    _, idx = _knn(X0[torch.from_numpy(sub).to(X0.device)], 30, seed)
    c = codes[sub]
    other = 1.0 - (c[idx.cpu().numpy()] == c[:, None]).mean(axis=1)
    mixed = float(other.mean())
    shares = np.bincount(codes) / len(codes)
    relative = float((other / np.maximum(1.0 - shares[c], 1e-12)).mean())
    if mixed >= 0.45 or relative >= MIXED_ENOUGH:
        return 0.0, relative
    return float(np.clip((0.45 - mixed) / 0.45 * 0.8 * 1.8, 0.0, 0.8)), relative


def _prealign(X0: np.ndarray, codes: np.ndarray, ref_idx: int, strength: float, rare: np.ndarray,
              seed: int, linear: float = 1.0) -> np.ndarray:
    """Move each batch by ``strength`` of the Gaussian OT map (affine) from its Gaussian to the
    reference batch's (or, for the union, to the Bures barycentre of all batches); rare cells
    move a quarter as far. ``linear`` scales the map's linear part (the change of covariance)
    against its translation: 1 = the full map (scbiot 1.2), 0 = the translation of the means
    alone, which leaves each batch's own neighbourhoods as they are."""
    rng = np.random.default_rng(seed + 991)
    stats = [_gaussian(X0[codes == b], rng) for b in range(codes.max() + 1)]
    if ref_idx >= 0:
        mu_t, C_t = stats[ref_idx]
    else:
        w = np.bincount(codes) / len(codes)
        mu_t = sum(wi * m for wi, (m, _) in zip(w, stats))
        C_t = _bures_barycentre([C for _, C in stats], w)
    out = X0.copy()
    for b, (mu, C) in enumerate(stats):
        if b == ref_idx:
            continue
        h, hi = _sqrtm(C), _sqrtm(C, -0.5)
        A = hi @ _sqrtm(h @ C_t @ h) @ hi
        rows = codes == b
        centred = X0[rows] - mu
        disp = (mu_t - mu) + linear * (centred @ A - centred)
        disp *= np.where(rare[rows], 0.25, 1.0)[:, None] * strength
        out[rows] = X0[rows] + disp.astype(np.float32)
    return out
