"""The pre-alignment (not in the paper): each batch moves part of the way towards the others,
along the Gaussian OT (Bures) map to the batches' barycentre (default; the authors'
implementation, scbiot 1.2) or by a translation estimated with unbalanced OT
(``prealign_shift="ot"``)."""
from __future__ import annotations

import numpy as np
import torch

from ..ot import unbalanced_sinkhorn
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


# ``shift="ot"``: the unbalanced OT's marginal relaxation (in units of the cost's standard
# deviation; small: mass without a near partner is dropped rather than carried across types),
# the ICP iterations, and the prototypes' caps (bench/batch_integration/RESULTS.md, session 37:
# rho 0.4 / 0.1 / 0.03 / 0.01 measured)
SHIFT_RHO, SHIFT_ITERS, SHIFT_PROTOTYPES = 0.03, 20, (64, 128)


def _prototypes_np(X: np.ndarray, k: int, seed: int, max_points: int):
    """k-means centres of (up to ``max_points`` of) the rows and their shares of the rows."""
    from sklearn.cluster import KMeans
    if len(X) > max_points:
        X = X[np.random.default_rng(seed).choice(len(X), max_points, replace=False)]
    km = KMeans(int(min(k, len(X))), n_init=1, random_state=seed).fit(X)
    mass = np.bincount(km.labels_, minlength=km.n_clusters).astype(np.float64)
    return km.cluster_centers_.astype(np.float64), mass / mass.sum()


def _ot_shift(Xb: np.ndarray, Xo: np.ndarray, eps: float, seed: int,
              max_points: int = 20000) -> np.ndarray:
    """The translation that carries the rows ``Xb`` (one batch) onto ``Xo`` (the others), robust
    to the batches holding different cell types in different proportions.

    Between k-means prototypes of each (``2 sqrt(n)`` of them, capped at ``SHIFT_PROTOTYPES``,
    weighted by their shares of cells), iterate as ICP (Besl & McKay, 1992) with an unbalanced
    entropic OT plan in place of nearest neighbours: solve the plan ``P`` of the shifted
    prototypes ``B + t`` (squared euclidean cost over its standard deviation, ``eps``,
    marginal relaxation ``SHIFT_RHO``: Chizat et al., 2018; unbalanced OT under label shift,
    Fatras et al., ICML 2021) and move ``t`` by the transported mass's mean displacement,
    ``sum_ij P_ij (R_j - B_i - t) / sum_ij P_ij``, until the step is under 0.1 % of ``t``. With
    a small relaxation, prototypes without a near partner lose their mass instead of being
    carried onto other types, so a batch that holds one type of the others' is moved onto that
    type, where matching the means (the Gaussian map) moves it to the others' centre. Run from
    two starts, no shift and the difference of the means (batches far apart, e.g. spots and
    cells, need the second), keeping the one whose prototypes end nearer to the others' (the
    mass-weighted mean squared distance to the nearest prototype: ICP's residual)."""
    kb = int(min(SHIFT_PROTOTYPES[0], max(8, 2 * np.sqrt(len(Xb)))))
    ko = int(min(SHIFT_PROTOTYPES[1], max(16, 2 * np.sqrt(len(Xo)))))
    B, a = _prototypes_np(Xb, kb, seed, max_points)
    R, b = _prototypes_np(Xo, ko, seed + 1, max_points)
    Rt, at, bt = (torch.from_numpy(v) for v in (R, a, b))
    best = None
    for t in (np.zeros(Xb.shape[1]), Xo.mean(0).astype(np.float64) - Xb.mean(0)):
        for _ in range(SHIFT_ITERS):
            Bt = torch.from_numpy(B + t)
            C = torch.cdist(Bt, Rt).pow(2)
            C = C / C.std().clamp_min(1e-12)
            plan = unbalanced_sinkhorn(C, at, bt, eps=eps, rho=SHIFT_RHO, max_iter=1000,
                                       tol=1e-6).plan
            mass = plan.sum(1, keepdim=True)
            proj = (plan @ Rt) / mass.clamp_min(1e-300)
            step = ((mass * (proj - Bt)).sum(0) / mass.sum().clamp_min(1e-300)).numpy()
            t = t + step
            if np.linalg.norm(step) <= 1e-3 * np.linalg.norm(t):
                break
        residual = float((a * (((B + t)[:, None, :] - R[None]) ** 2).sum(-1).min(1)).sum())
        if best is None or residual < best[0]:
            best = (residual, t)
    return best[1]


def _prealign(X0: np.ndarray, codes: np.ndarray, ref_idx: int, strength: float, rare: np.ndarray,
              seed: int, linear: float = 1.0, shift: str = "gaussian",
              eps: float = 0.028) -> np.ndarray:
    """Move each batch by ``strength`` of a map towards the reference batch (or, for the union,
    towards the others); rare cells move a quarter as far.

    ``shift="gaussian"`` (scbiot 1.2): the Gaussian OT map (affine) from the batch's Gaussian to
    the reference batch's (union: to the Bures barycentre of all batches); ``linear`` scales its
    linear part (the change of covariance) against its translation: 1 = the full map, 0 = the
    translation of the means alone, which leaves each batch's own neighbourhoods as they are.
    ``"ot"``: the translation is :func:`_ot_shift` onto the reference batch's cells (union: onto
    all other batches' cells, scaled by ``1 - w_b`` for a batch with share ``w_b`` of the cells,
    as the translation of the means to their weighted mean would be) instead of the difference
    of the means; ``linear`` of the Gaussian map's linear part is added as with "gaussian"."""
    rng = np.random.default_rng(seed + 991)
    stats = [_gaussian(X0[codes == b], rng) for b in range(codes.max() + 1)]
    w = np.bincount(codes) / len(codes)
    if ref_idx >= 0:
        mu_t, C_t = stats[ref_idx]
    else:
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
        if shift == "ot":
            others = codes == ref_idx if ref_idx >= 0 else ~rows
            share = 1.0 if ref_idx >= 0 else 1 - w[b]
            move = _ot_shift(X0[rows], X0[others], eps, seed + 991) * share
        else:
            move = mu_t - mu
        disp = move + linear * (centred @ A - centred)
        disp *= np.where(rare[rows], 0.25, 1.0)[:, None] * strength
        out[rows] = X0[rows] + disp.astype(np.float32)
    return out
