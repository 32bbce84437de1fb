"""The displacement field of one iteration: sparsity-weighted k-means prototypes, unbalanced OT
between prototypes and their barycentric projection (Eqs. 1-5), cluster sharpening (Eqs. 10-11)
and the edge-stretch guard (Eq. 15); the final centring within clusters (not in the paper)."""
from __future__ import annotations

import math

import numpy as np
import torch

from ..neighbors import nearest_torch
from ..ot import unbalanced_sinkhorn
from ._checks import _MIN_BATCH_PROTOTYPES, _MIN_REF_PROTOTYPES
from ._geometry import _chunks, _edge_ratio, _sparsity


def _kmeans(X: np.ndarray, n_clusters: int, seed: int, weights: np.ndarray | None,
            minibatch: bool = True):
    """Weighted MiniBatch k-means (the authors' settings), or Lloyd's k-means with 3 starts
    (``minibatch=False``): centres (float32)."""
    from sklearn.cluster import KMeans, MiniBatchKMeans

    km = MiniBatchKMeans(n_clusters=n_clusters, random_state=seed, n_init=1, max_iter=25,
                         batch_size=min(4096, max(4 * n_clusters, 256))) if minibatch else \
        KMeans(n_clusters=n_clusters, random_state=seed, n_init=3)
    km.fit(X, sample_weight=weights)
    return km.cluster_centers_.astype(np.float32)


def _fit_centres(X: torch.Tensor, n_clusters: int, p: dict, seed: int, weighted: bool = True,
                 minibatch: bool = True):
    """k-means centres of the rows of X, sparsity-weighted (Eq. 1) unless ``weighted=False``.
    Above ``kmeans_subsample`` rows the centres (and the weights, from neighbours within the
    subsample) come from a random subsample: MiniBatch k-means samples anyway, and this keeps
    the per-iteration kNN off the full data."""
    fit = X
    if X.shape[0] > p["kmeans_subsample"]:
        sub = np.random.default_rng(seed).choice(X.shape[0], p["kmeans_subsample"], replace=False)
        fit = X[torch.from_numpy(np.sort(sub)).to(X.device)]
    w = _sparsity(fit, p["k_local"], seed).cpu().numpy() if weighted else None
    C = torch.from_numpy(_kmeans(fit.cpu().numpy(), min(n_clusters, fit.shape[0]), seed, w,
                                 minibatch))
    return C.to(X.device)


def _prototypes(X: torch.Tensor, members: list[torch.Tensor], ref_idx: int, p: dict, seed: int):
    """Reference prototypes R and, per batch to move, (cell indices, prototypes, nearest
    prototype of each cell)."""
    def n_protos(n, cap, floor):
        return int(min(cap, max(floor, 2 * math.sqrt(n))))

    packs = []
    for b, rows in enumerate(members):
        if b == ref_idx:
            continue
        B = _fit_centres(X[rows], n_protos(len(rows), p["k_batch"], _MIN_BATCH_PROTOTYPES), p,
                         seed + 7)
        packs.append((rows, B, nearest_torch(X[rows], B)[1][:, 0]))
    if ref_idx >= 0:
        rows = members[ref_idx]
        R = _fit_centres(X[rows], n_protos(len(rows), p["k_ref"], 16), p, seed)
    else:
        stack = torch.cat([B for _, B, _ in packs])
        # "cells": the batches' rule on the union of their cells; "prototypes" (the authors'):
        # on the number of stacked prototypes, never more than there are
        n_union = sum(len(rows) for rows in members) if p["union_size"] == "cells" else len(stack)
        R = _fit_centres(stack, min(len(stack), n_protos(n_union, p["k_ref"],
                                                         _MIN_REF_PROTOTYPES)), p, seed)
    return R, packs


def _barycentric(B: torch.Tensor, R: torch.Tensor, p: dict, clip_q: float):
    """Eqs. 2-5: unbalanced entropic OT from prototypes B to R, then each B's barycentre.
    Also returns each prototype's transported fraction (row mass of the plan over its marginal
    1/len(B), at most 1): the share of it the unbalanced plan found a partner for."""
    B64, R64 = B.double(), R.double()
    C = torch.cdist(B64, R64).pow(2)
    C = C / C.std().clamp_min(1e-12)
    C = torch.minimum(C, torch.quantile(C, clip_q, dim=1, keepdim=True))  # tame the tails
    plan = unbalanced_sinkhorn(C, eps=p["reg"], rho=p["reg_m"], reg_type="entropy",
                               max_iter=1000, tol=1e-6).plan
    mass = plan.sum(1, keepdim=True)
    proj = (plan @ R64) / mass.clamp_min(1e-300)
    # a prototype the plan left with no mass at all stays where it is
    proj = torch.where(mass > 0, proj, B64)
    frac = (mass[:, 0] * B.shape[0]).clamp_max(1.0)
    return proj.to(B.dtype), frac.to(B.dtype)


def _cell_shift(Xb: torch.Tensor, B: torch.Tensor, nearest: torch.Tensor, disp: torch.Tensor,
                s: torch.Tensor, frac: torch.Tensor, p: dict) -> torch.Tensor:
    """Each cell's share of its batch's prototype displacements ``disp`` (weights ``s``, Eq. 6).
    ``assign="nearest"`` (the paper): the nearest prototype's. ``"soft"``: a Gaussian-kernel
    average over the prototypes, ``exp(-d^2 / (2 sigma^2))`` with ``sigma^2`` = ``soft_bandwidth``
    times the median squared distance of the batch's cells to their nearest prototype (the
    median heuristic; the kernel extension of a barycentric map to new points, Perrot et al.
    2016), so a batch deforms smoothly instead of piecewise. ``mass_weight``: each
    displacement is scaled by its prototype's transported fraction ``frac``."""
    w = s * frac if p["mass_weight"] else s
    if p["assign"] == "nearest":
        return w[nearest, None] * disp[nearest]
    h2 = 2.0 * p["soft_bandwidth"] * (Xb - B[nearest]).pow(2).sum(1).median().clamp_min(1e-12)
    wd = w[:, None] * disp
    out = torch.empty_like(Xb)
    for rows in _chunks(Xb.shape[0], B.shape[0] * 2):
        out[rows] = torch.softmax(-torch.cdist(Xb[rows], B).pow(2) / h2, dim=1) @ wd
    return out


def _sharpen_field(X: torch.Tensor, p: dict, seed: int) -> torch.Tensor:
    """Eqs. 10-11: pull towards the nearest pseudo-centre, push from the second nearest, the
    push gated by the margin between them."""
    k = max(_MIN_BATCH_PROTOTYPES, min(p["k_pseudo"], X.shape[0]))
    C = _fit_centres(X, k, p, seed, weighted=False)
    d, c = nearest_torch(X, C, 2)
    margin = (d[:, 1] - d[:, 0]) / (d[:, 1].median() + 1e-8)
    g = 1.0 / (1.0 + torch.exp((margin - 1.0) / 0.8))
    return p["pull"] * (C[c[:, 0]] - X) + (p["push"] * g)[:, None] * (X - C[c[:, 1]])


def _guard(X, move, idx0, d0, smin, smax, rounds: int = 2) -> torch.Tensor:
    """Eq. 15: scale each cell's move so its input-graph edges stay within
    [smin_i, smax_i] times their input length (two rounds, as the authors' code)."""
    for _ in range(rounds):
        f = torch.empty_like(smin)
        for rows in _chunks(X.shape[0], idx0.shape[1] * X.shape[1]):
            r = _edge_ratio(X, idx0, d0, rows, move)
            hi = (smax[rows] / (r.amax(1) + 1e-8)).clamp_max(1.0)
            lo = ((r.amin(1) + 1e-8) / smin[rows]).clamp_max(1.0)
            f[rows] = torch.minimum(hi, lo)
        if bool((f >= 0.999).all()):
            break
        move = move * f[:, None]
    return move


def _centre_within_groups(X: torch.Tensor, groups: torch.Tensor, codes: torch.Tensor,
                          n_groups: int, n_batches: int, strength: float) -> torch.Tensor:
    """Move each batch's rows of each group ``strength`` of the way from their mean to the
    group's mean (``groups``, ``codes``: integer labels in ``0..n_groups-1`` and
    ``0..n_batches-1``)."""
    ones = torch.ones(X.shape[0], dtype=X.dtype, device=X.device)

    def means(index, size):
        s = torch.zeros(size, X.shape[1], dtype=X.dtype, device=X.device).index_add_(0, index, X)
        c = torch.zeros(size, dtype=X.dtype, device=X.device).index_add_(0, index, ones)
        return s / c.clamp_min(1.0)[:, None]

    g = groups * n_batches + codes
    return X - strength * (means(g, n_groups * n_batches)[g] - means(groups, n_groups)[groups])


def _centre_within_clusters(X: torch.Tensor, codes: torch.Tensor, n_batches: int, p: dict,
                            seed: int) -> tuple[torch.Tensor, int]:
    """Move each batch's cells of a k-means cluster ``centring`` of the way from their mean to
    the cluster's mean: a hard-cluster form of Harmony's cluster-specific batch correction
    (Korsunsky et al., Nat Methods 2019), applied once to the selected iterate. Lloyd's k-means
    (3 starts; MiniBatch k-means' noisier clusters gave less), at least 10 cells per cluster on
    average. Returns the moved embedding, each cell's cluster and the number of clusters."""
    k = int(min(p["centring_clusters"], max(2, X.shape[0] // 10)))
    C = _fit_centres(X, k, p, seed, weighted=False, minibatch=False)
    lab = nearest_torch(X, C)[1][:, 0]
    return _centre_within_groups(X, lab, codes.long(), C.shape[0], n_batches, p["centring"]), \
        lab, int(C.shape[0])
