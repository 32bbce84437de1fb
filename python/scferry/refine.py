"""``sf.refine``: scBIOT's batch-aware optimal-transport refinement of any embedding.

The algorithm of the scBIOT Extended Methods ("Batch-aware OT integration with rare-type
protection"), with the paper's defaults and annealing schedules. Each iteration ``t``:

1. prototypes: MiniBatch k-means per batch, cells weighted by their sparsity ``w_i`` (Eq. 1,
   mean distance to 15 within-batch neighbours in the current embedding); reference prototypes
   from the union of all batch prototypes (default) or from one reference batch;
2. unbalanced entropic OT between each batch's prototypes and the reference prototypes
   (squared-euclidean cost over its std, clipped at an annealed row quantile; log-domain
   Sinkhorn, :func:`scferry.ot.unbalanced_sinkhorn`, ``eps=reg``, ``rho=reg_m``) and the
   barycentric projection of each prototype (Eqs. 2-5);
3. every cell inherits its nearest prototype's displacement, weighted by
   ``s_p (1 - 0.35 beta_i)`` with the bridge score ``beta_i`` (neighbour batch entropy +
   local sparsity, Eqs. 6-9), plus the cluster-sharpening field (pull to the nearest of
   ``k_pseudo`` pseudo-centres, gated push from the second, Eqs. 10-12);
4. rare-aware smoothing of the shifts over the fixed kNN graph of the input (the 15% sparsest
   cells are not smoothed, Eq. 13), the annealed global step, per-cell step capping at
   ``max_step_local`` times the cell's input neighbour distance (Eq. 14), edge-stretch guards on
   the input kNN graph with limits interpolated by the bridge score (Eq. 15), PostScale to the
   input's per-dimension mean and std (Eq. 16);
5. batch mixing (mean neighbour batch entropy), neighbourhood overlap with the input and graph
   strain are scored (Eqs. 17-19); the iterate with the best objective ``J`` (Eqs. 20-21) is
   kept, with patience-based early stopping. Trustworthiness (Eq. 22) of the selected iterate is
   reported.

Where the paper is silent, this follows the authors' code that implements it (scbiot, the
``integrate_ot`` of the paper's time): bridge scores and the guard graph come from the input
embedding (20 neighbours), prototype counts are ``min(k_batch, max(8, 2 sqrt(n_batch)))`` per
batch and ``min(k_ref, max(32, 2 sqrt(n_prototypes)))`` for the union, a step is accepted when
it raises ``J`` by more than ``tol`` (the first always is), overlap is measured on a fixed
subsample of ``eval_subsample`` cells and trustworthiness on ``trust_subsample`` cells.

Added from the authors' current package (scbiot 1.2), not in the paper: with ``prealign="auto"``
(the default) each batch first moves part of the way along the Gaussian OT (Bures) map from its
mean and covariance to the batches' barycentre (to the reference batch's with a reference batch),
rare cells a quarter as far; the strength grows as the share of other-batch neighbours falls
below 0.45 (at most 0.8; 0 = skipped). ``prealign="none"`` runs the paper's algorithm alone.

Added here, not in the paper: ``keep_input``. The paper's selection starts at ``J = -inf``, so
its first iterate always replaces the input, and an embedding that is already integrated
(Harmony, scVI, DAVAE) can only lose. With ``keep_input`` the start competes as iterate 0 with
its own ``J = w_overlap`` (no mixing gain, full overlap, no strain); ``"auto"`` (default) does
so only when the start was not pre-aligned, i.e. when at least 45% of neighbours already come
from other batches. Measured (bench/bench_refine.py, scIB total, ARI/NMI over 5 Leiden seeds):
on DAVAE's symphony embedding 0.746 kept vs 0.730 refined (scbiot 1.2.1: 0.744); on PCA, where
the start is pre-aligned, the iterations add 0.008 (symphony) and 0.034 (PDAC) over the
pre-aligned start.

Scale: k-means fits use at most ``kmeans_subsample`` cells per batch (prototypes are then
assigned to all cells), and above ``eval_subsample`` cells the mixing score of Eq. 17 is taken
within the fixed evaluation subsample; the guard graph, smoothing, capping, guards and strain
always use every cell. kNN: on CUDA, blocked exact search in torch; on the CPU, scikit-learn's
exact search up to 10,000 cells and pynndescent above. No n x n matrix is formed.
"""
from __future__ import annotations

import math
from numbers import Integral, Real
from typing import Any

import numpy as np
import pandas as pd
import torch
from anndata import AnnData
from tqdm.auto import tqdm

from .metrics import _drop_self, _knn as _exact_knn
from .ot import unbalanced_sinkhorn
from .train import resolve_device

__all__ = ["refine", "DEFAULTS"]

# The paper's "typical hyperparameters" (Extended Methods, last paragraph) and, where it gives
# none, the defaults of the authors' code.
DEFAULTS: dict[str, Any] = dict(
    reference="union",          # "union", "largest" or the name of a batch
    k_ref=1024, k_batch=448,    # prototype caps
    reg=0.028, reg_m=0.40,      # OT entropy eps and marginal relaxation lambda
    sharpen=0.22, k_pseudo=28, pull=0.78, push=0.34,
    smooth_start=0.52, smooth_end=0.38,      # graph smoothing lambda, annealed
    step_start=0.78, step_end=0.96,          # global step eta, annealed
    clip_q_start=0.80, clip_q_end=0.90,      # cost clipping quantile, annealed
    floor_start=0.60, floor_end=0.68,        # overlap floor, annealed
    w_overlap=0.18, w_strain=1.0, penalty_gamma=1.4,
    smin_bulk=0.72, smax_bulk=1.65, smin_bridge=0.88, smax_bridge=1.24,
    max_step_local=1.05, bridge_damp=0.35, rare_quantile=0.85,
    k_local=15, k_eval=30, eval_subsample=5000, trust_subsample=2500, kmeans_subsample=20000,
    patience=3, tol=1e-3, postscale=True,
    prealign="auto",            # Gaussian OT pre-alignment: "auto", "none" or a strength in [0, 1]
    keep_input="auto",          # the start competes as iterate 0: "auto", True, False (the paper)
)
_INT_PARAMS = ("k_ref", "k_batch", "k_pseudo", "k_local", "k_eval", "eval_subsample",
               "trust_subsample", "kmeans_subsample", "patience")
_UNIT_PARAMS = ("smooth_start", "smooth_end", "clip_q_start", "clip_q_end", "floor_start",
                "floor_end", "bridge_damp", "rare_quantile")
_MIN_BATCH_PROTOTYPES = 8   # the authors' floor on prototypes per batch
_MIN_REF_PROTOTYPES = 32    # ... and on union reference prototypes
_GRAPH_K_EXTRA = 5          # guard graph: k_local + 5 neighbours (20 by default)
_EXACT_CPU_MAX = 10_000     # CPU kNN: exact (scikit-learn) up to here, pynndescent above
_BLOCK = 2 ** 24            # entries per chunk of any (rows x neighbours x dims) temporary
_GPU_BLOCK = 2 ** 28        # entries per block of query x cell distances in the CUDA kNN (1 GiB)


# --------------------------------------------------------------------------------------------
# input checks (all before anything is computed or written)
# --------------------------------------------------------------------------------------------

def _check_params(params: dict, max_iter, seed) -> dict:
    unknown = sorted(set(params) - set(DEFAULTS))
    if unknown:
        raise ValueError(f"unknown refine parameter(s) {unknown}; known: {sorted(DEFAULTS)}.")
    p = {**DEFAULTS, **params}
    for name in _INT_PARAMS:
        v = p[name]
        if isinstance(v, bool) or not isinstance(v, Integral) or v < 1:
            raise ValueError(f"{name} must be an integer >= 1; got {v!r}.")
        p[name] = int(v)
    for name, v in p.items():
        if name in _INT_PARAMS or name in ("reference", "postscale", "prealign", "keep_input"):
            continue
        if isinstance(v, bool) or not isinstance(v, Real) or not math.isfinite(v) or v < 0:
            raise ValueError(f"{name} must be a finite number >= 0; got {v!r}.")
        p[name] = float(v)
    for name in _UNIT_PARAMS:
        if p[name] > 1:
            raise ValueError(f"{name} must lie in [0, 1]; got {p[name]}.")
    for name in ("reg", "reg_m", "max_step_local", "smin_bulk", "smin_bridge"):
        if p[name] <= 0:
            raise ValueError(f"{name} must be > 0; got {p[name]}.")
    if p["smax_bulk"] < p["smin_bulk"] or p["smax_bridge"] < p["smin_bridge"]:
        raise ValueError("edge-stretch limits need smax_bulk >= smin_bulk and smax_bridge >= "
                         f"smin_bridge; got {p['smin_bulk']}..{p['smax_bulk']} and "
                         f"{p['smin_bridge']}..{p['smax_bridge']}.")
    if not isinstance(p["postscale"], bool):
        raise ValueError(f"postscale must be True or False; got {p['postscale']!r}.")
    if not (isinstance(p["keep_input"], bool) or p["keep_input"] == "auto"):
        raise ValueError(f"keep_input must be 'auto', True or False; got {p['keep_input']!r}.")
    pre = p["prealign"]
    if isinstance(pre, str):
        if pre not in ("auto", "none"):
            raise ValueError(f"prealign must be 'auto', 'none' or a number in [0, 1]; got {pre!r}.")
    elif isinstance(pre, bool) or not isinstance(pre, Real) or not 0 <= pre <= 1:
        raise ValueError(f"prealign must be 'auto', 'none' or a number in [0, 1]; got {pre!r}.")
    else:
        p["prealign"] = float(pre)
    if not isinstance(p["reference"], str):
        raise ValueError(f"reference must be 'union', 'largest' or a batch name; got {p['reference']!r}.")
    if isinstance(max_iter, bool) or not isinstance(max_iter, Integral) or max_iter < 1:
        raise ValueError(f"max_iter must be an integer >= 1; got {max_iter!r}.")
    if isinstance(seed, bool) or not isinstance(seed, Integral) or seed < 0:
        raise ValueError(f"seed must be an integer >= 0; got {seed!r}.")
    return p


def _check_inputs(adata, basis, batch_key, key_added, p):
    """Returns (a float32 copy of the embedding, batch codes, batch names, reference index)."""
    if not isinstance(adata, AnnData):
        raise TypeError(
            f"refine takes one AnnData with the embedding in obsm; got {type(adata).__name__}. "
            "Several AnnData: join them first, e.g. anndata.concat({...}, label='batch').")
    for name, v in (("basis", basis), ("batch_key", batch_key), ("key_added", key_added)):
        if not isinstance(v, str) or not v:
            raise ValueError(f"{name} must be a non-empty string; got {v!r}.")
    if basis not in adata.obsm:
        raise KeyError(
            f"basis {basis!r} is not in adata.obsm; available: {list(adata.obsm.keys())}. Compute "
            "it first, e.g. sc.pp.pca(adata) for 'X_pca' or sf.integrate(...) for 'X_scferry'.")
    if key_added == basis:
        raise ValueError(f"key_added must differ from basis ({basis!r}): refine never overwrites "
                         "its input; pick another key, e.g. key_added='X_refined'.")
    raw = adata.obsm[basis]
    raw = raw.to_numpy() if isinstance(raw, pd.DataFrame) else raw
    if hasattr(raw, "toarray"):
        raw = raw.toarray()
    X = np.asarray(raw)
    if X.ndim != 2 or X.shape[1] < 1:
        raise ValueError(f"adata.obsm[{basis!r}] must be a cells x dimensions matrix; got shape "
                         f"{X.shape}.")
    if not np.issubdtype(X.dtype, np.number) or np.iscomplexobj(X):
        raise ValueError(f"adata.obsm[{basis!r}] must be real numbers; got dtype {X.dtype}.")
    X = np.array(X, dtype=np.float32, copy=True)
    bad = ~np.isfinite(X)
    if bad.any():
        cells = adata.obs_names[bad.any(axis=1)]
        raise ValueError(
            f"adata.obsm[{basis!r}] has {int(bad.sum())} non-finite values (NaN or inf) in "
            f"{len(cells)} cells (e.g. {list(cells[:3])}); recompute the embedding or drop those "
            "cells first.")
    if batch_key not in adata.obs.columns:
        raise KeyError(f"batch_key {batch_key!r} is not a column of adata.obs; available columns: "
                       f"{list(adata.obs.columns)}.")
    col = adata.obs[batch_key]
    if col.isna().any():
        raise ValueError(f"batch_key {batch_key!r} has {int(col.isna().sum())} missing values; "
                         "fill them or drop those cells first.")
    codes, names = pd.factorize(col.astype(str), sort=True)
    names = list(names)
    if len(names) < 2:
        raise ValueError(
            f"batch_key {batch_key!r} has only one batch ({names[0]!r}); refine aligns batches "
            "to each other and needs at least two. Check the column or pick another batch_key.")
    counts = np.bincount(codes, minlength=len(names))
    small = [(names[i], int(c)) for i, c in enumerate(counts) if c < _MIN_BATCH_PROTOTYPES]
    if small:
        raise ValueError(
            f"batch(es) {small} (name, cells) have fewer cells than the {_MIN_BATCH_PROTOTYPES} "
            "prototypes refine fits per batch; drop those cells or merge them into another batch.")
    n = X.shape[0]
    need = max(p["k_pseudo"], p["k_eval"] + 1, p["k_local"] + _GRAPH_K_EXTRA + 1)
    if n < need:
        raise ValueError(
            f"adata has {n} cells, fewer than refine needs ({need}: k_pseudo={p['k_pseudo']} "
            f"pseudo-centres, k_eval={p['k_eval']} and k_local={p['k_local']} neighbours); use "
            "more cells or smaller k_pseudo / k_eval / k_local.")
    ref = p["reference"]
    if ref == "union":
        ref_idx = -1
    elif ref == "largest":
        ref_idx = int(np.argmax(counts))
    elif ref in names:
        ref_idx = names.index(ref)
    else:
        raise ValueError(f"reference must be 'union', 'largest' or one of the batches {names}; "
                         f"got {ref!r}.")
    return X, codes.astype(np.int64), names, ref_idx


# --------------------------------------------------------------------------------------------
# neighbours and chunked graph arithmetic (torch, on the working device)
# --------------------------------------------------------------------------------------------

def _knn(X: torch.Tensor, k: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """k nearest neighbours of every row of X among the rows of X, itself excluded:
    (distances, indices), each (n, k), ascending."""
    n = X.shape[0]
    k = min(k, n - 1)
    if X.device.type == "cpu":
        if n <= _EXACT_CPU_MAX:
            dist, idx = _exact_knn(X.numpy(), k, seed=seed)
        else:
            from pynndescent import NNDescent

            idx, dist = NNDescent(X.numpy(), n_neighbors=k + 1, random_state=seed).neighbor_graph
            dist, idx = _drop_self(dist, idx.astype(np.int64), np.arange(n), k)
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


def _chunks(n: int, per_row: int):
    step = max(1, _BLOCK // max(per_row, 1))
    return (slice(s, min(s + step, n)) for s in range(0, n, step))


def _edge_ratio(X: torch.Tensor, idx: torch.Tensor, d0: torch.Tensor, rows: slice,
                move: torch.Tensor | None = None) -> torch.Tensor:
    """Edge lengths of the fixed graph (rows' edges) in X (+ move), over their input lengths."""
    xi, xj = X[rows], X[idx[rows]]
    if move is not None:
        xi, xj = xi + move[rows], xj + move[idx[rows]]
    return torch.linalg.vector_norm(xi[:, None, :] - xj, dim=2) / (d0[rows] + 1e-8)


def _graph_strain(X, idx0, d0, clip: float = 1.0) -> float:
    """Eq. 19: mean squared relative change of the input graph's edge lengths, clipped."""
    total = 0.0
    for rows in _chunks(X.shape[0], idx0.shape[1] * X.shape[1]):
        dev = (_edge_ratio(X, idx0, d0, rows) - 1.0).clamp_(-clip, clip)
        total += float((dev * dev).sum())
    return total / idx0.numel()


def _neighbour_mean(F: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    out = torch.empty_like(F)
    for rows in _chunks(F.shape[0], idx.shape[1] * F.shape[1]):
        out[rows] = F[idx[rows]].mean(1)
    return out


def _batch_entropy(idx: torch.Tensor, codes: torch.Tensor, n_batches: int) -> torch.Tensor:
    """Eq. 8: per-cell entropy (natural log) of the batch fractions among its neighbours."""
    counts = torch.zeros(idx.shape[0], n_batches, device=idx.device)
    counts.scatter_add_(1, codes[idx], torch.ones(idx.shape, device=idx.device))
    p = counts / idx.shape[1]
    return -(p * torch.log(p + 1e-12)).sum(1)


def _overlap(idx_a: torch.Tensor, idx_b: torch.Tensor) -> float:
    """Eq. 18: mean fraction of shared neighbours."""
    k = idx_a.shape[1]
    shared = 0.0
    for rows in _chunks(idx_a.shape[0], k * k):
        shared += float((idx_a[rows, :, None] == idx_b[rows, None, :]).sum())
    return shared / idx_a.numel()


def _trustworthiness(X0: torch.Tensor, X: torch.Tensor, k: int, seed: int) -> float:
    """Eq. 22 (scikit-learn's definition) from kNN lists and row blocks of distances."""
    n = X0.shape[0]
    k = min(k, max(1, n // 2 - 1))
    _, idx = _knn(X, k, seed)
    penalty = 0.0
    for rows in _chunks(n, n):
        r = torch.arange(rows.start, rows.stop, device=X0.device)
        d = torch.cdist(X0[rows], X0)
        d[r - rows.start, r] = -1.0  # the cell itself: first in every sorted row
        dj = d.gather(1, idx[rows])
        # #cells closer than j, the cell itself included = j's one-based rank among the others
        rank = torch.searchsorted(torch.sort(d, dim=1).values, dj.contiguous())
        penalty += float((rank - k).clamp_min(0).sum())
    return 1.0 - 2.0 / (n * k * (2.0 * n - 3.0 * k - 1.0)) * penalty


# --------------------------------------------------------------------------------------------
# prototypes, OT and the displacement field
# --------------------------------------------------------------------------------------------

def _kmeans(X: np.ndarray, n_clusters: int, seed: int, weights: np.ndarray | None):
    """Weighted MiniBatch k-means (the authors' settings): centres (float32)."""
    from sklearn.cluster import MiniBatchKMeans

    km = MiniBatchKMeans(n_clusters=n_clusters, random_state=seed, n_init=1, max_iter=25,
                         batch_size=min(4096, max(4 * n_clusters, 256)))
    km.fit(X, sample_weight=weights)
    return km.cluster_centers_.astype(np.float32)


def _nearest(X: torch.Tensor, C: torch.Tensor, k: int = 1):
    """Distances and indices of the k nearest centres of every row (chunked)."""
    d = torch.empty(X.shape[0], k, device=X.device)
    i = torch.empty(X.shape[0], k, dtype=torch.long, device=X.device)
    for rows in _chunks(X.shape[0], C.shape[0]):
        d[rows], i[rows] = torch.topk(torch.cdist(X[rows], C), k, dim=1, largest=False, sorted=True)
    return d, i


def _sparsity(X: torch.Tensor, k: int, seed: int) -> torch.Tensor:
    """Eq. 1: mean distance to the k nearest neighbours over its mean (1 = typical density)."""
    d, _ = _knn(X, min(k, X.shape[0] - 1), seed)
    dbar = d.mean(1)
    return dbar / (dbar.mean() + 1e-8) + 1e-8


def _fit_centres(X: torch.Tensor, n_clusters: int, p: dict, seed: int, weighted: bool = True):
    """k-means centres of the rows of X, sparsity-weighted (Eq. 1), and each row's nearest centre.
    Above ``kmeans_subsample`` rows the centres (and the weights, from neighbours within the
    subsample) come from a random subsample: MiniBatch k-means samples anyway, and this keeps
    the per-iteration kNN off the full data."""
    fit = X
    if X.shape[0] > p["kmeans_subsample"]:
        sub = np.random.default_rng(seed).choice(X.shape[0], p["kmeans_subsample"], replace=False)
        fit = X[torch.from_numpy(np.sort(sub)).to(X.device)]
    w = _sparsity(fit, p["k_local"], seed).cpu().numpy() if weighted else None
    C = torch.from_numpy(_kmeans(fit.cpu().numpy(), min(n_clusters, fit.shape[0]), seed, w))
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
        packs.append((rows, B, _nearest(X[rows], B)[1][:, 0]))
    if ref_idx >= 0:
        rows = members[ref_idx]
        R = _fit_centres(X[rows], n_protos(len(rows), p["k_ref"], 16), p, seed)
    else:
        stack = torch.cat([B for _, B, _ in packs])
        R = _fit_centres(stack, n_protos(len(stack), p["k_ref"], _MIN_REF_PROTOTYPES), p, seed)
    return R, packs


def _barycentric(B: torch.Tensor, R: torch.Tensor, p: dict, clip_q: float) -> torch.Tensor:
    """Eqs. 2-5: unbalanced entropic OT from prototypes B to R, then each B's barycentre."""
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
    return proj.to(B.dtype)


def _sharpen_field(X: torch.Tensor, p: dict, seed: int) -> torch.Tensor:
    """Eqs. 10-11: pull towards the nearest pseudo-centre, push from the second nearest, the
    push gated by the margin between them."""
    k = max(_MIN_BATCH_PROTOTYPES, min(p["k_pseudo"], X.shape[0]))
    C = _fit_centres(X, k, p, seed, weighted=False)
    d, c = _nearest(X, C, 2)
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


# --------------------------------------------------------------------------------------------
# Gaussian OT pre-alignment (the authors' implementation, scbiot 1.2; not in the paper)
# --------------------------------------------------------------------------------------------

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


def _auto_prealign(X0: torch.Tensor, codes: np.ndarray, seed: int) -> float:
    """scbiot's rule: strength grows as the fraction of other-batch neighbours (30 neighbours,
    on at most 5,000 cells) falls below 0.45; at most 0.8."""
    rng = np.random.default_rng(seed + 991)
    sub = np.sort(rng.choice(len(codes), min(len(codes), 5000), replace=False))
    _, idx = _knn(X0[torch.from_numpy(sub).to(X0.device)], 30, seed)
    c = codes[sub]
    mixed = 1.0 - float((c[idx.cpu().numpy()] == c[:, None]).mean())
    if mixed >= 0.45:
        return 0.0
    return float(np.clip((0.45 - mixed) / 0.45 * 0.8 * 1.8, 0.0, 0.8))


def _prealign(X0: np.ndarray, codes: np.ndarray, ref_idx: int, strength: float, rare: np.ndarray,
              seed: int) -> np.ndarray:
    """Move each batch by ``strength`` of the Gaussian OT map (affine) from its Gaussian to the
    reference batch's (or, for the union, to the Bures barycentre of all batches); rare cells
    move a quarter as far."""
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
        disp = (X0[rows] - mu) @ A + mu_t - X0[rows]
        disp *= np.where(rare[rows], 0.25, 1.0)[:, None] * strength
        out[rows] = X0[rows] + disp.astype(np.float32)
    return out


# --------------------------------------------------------------------------------------------
# the loop
# --------------------------------------------------------------------------------------------

def _lerp(a: float, b: float, t):
    return (1.0 - t) * a + t * b


def _run(X0_np: np.ndarray, codes_np: np.ndarray, n_batches: int, ref_idx: int, p: dict,
         max_iter: int, seed: int, dev: torch.device, progress: bool):
    rng = np.random.default_rng(seed)
    X_in = torch.from_numpy(X0_np).to(dev)
    codes = torch.from_numpy(codes_np).to(dev)
    n = X_in.shape[0]
    members = [torch.from_numpy(np.flatnonzero(codes_np == b)).to(dev) for b in range(n_batches)]

    d0, idx0 = _knn(X_in, p["k_local"] + _GRAPH_K_EXTRA, seed)
    strength = _auto_prealign(X_in, codes_np, seed) if p["prealign"] == "auto" else \
        (0.0 if p["prealign"] == "none" else p["prealign"])
    X0 = X_in
    if strength > 0:
        dbar = d0.mean(1).cpu().numpy()
        rare = np.zeros(n, dtype=bool)
        for b in range(n_batches):
            rows = codes_np == b
            # tiny batches are all protected (the authors' rule)
            rare[rows] = True if rows.sum() < 32 else \
                dbar[rows] >= np.quantile(dbar[rows], p["rare_quantile"])
        X0 = torch.from_numpy(_prealign(X0_np, codes_np, ref_idx, strength, rare, seed)).to(dev)
        d0, idx0 = _knn(X0, p["k_local"] + _GRAPH_K_EXTRA, seed)

    # fixed geometry of the (pre-aligned) start: guard graph, local scale, bridge score, rare cells
    idx0 = idx0.to(dev)
    d0 = d0.to(dev)
    dbar0 = d0.mean(1)
    rho = (dbar0 - dbar0.min()) / (dbar0.max() - dbar0.min() + 1e-12)
    k_h = min(15, p["k_eval"])
    idx_h = idx0[:, :k_h] if idx0.shape[1] >= k_h else _knn(X0, k_h, seed)[1].to(dev)
    H0 = _batch_entropy(idx_h, codes, n_batches) / math.log(n_batches)
    beta = 0.5 * H0.clamp(0, 1) + 0.5 * rho
    smin = _lerp(p["smin_bulk"], p["smin_bridge"], beta)
    smax = _lerp(p["smax_bulk"], p["smax_bridge"], beta)
    rare = rho >= float(np.quantile(rho.cpu().numpy(), p["rare_quantile"]))
    mu0, sd0 = X0.mean(0), X0.std(0, unbiased=False) + 1e-8

    sub = np.sort(rng.choice(n, size=min(n, p["eval_subsample"]), replace=False))
    sub_t = torch.from_numpy(sub).to(dev)
    k_ovl = min(p["k_eval"], len(sub) - 1)
    _, idx_sub0 = _knn(X0[sub_t], k_ovl, seed)
    idx_sub0 = idx_sub0.to(dev)

    def mix_of(X, idx_sub):
        # Eq. 17 over all cells; above eval_subsample cells, within the fixed subsample
        if n > len(sub):
            return float(_batch_entropy(idx_sub, codes[sub_t], n_batches).mean())
        _, idx = _knn(X, p["k_eval"], seed)
        return float(_batch_entropy(idx.to(dev), codes, n_batches).mean())

    mix0 = mix_of(X0, idx_sub0)
    strain0 = _graph_strain(X0, idx0, d0)
    # The start itself scores J = w_overlap (no mixing gain, full overlap, no strain). When it
    # competes, an iterate must beat it or the start is returned; "auto" lets it compete only
    # when it was not pre-aligned, i.e. when the input is already mixed (an integrated embedding).
    keep = strength == 0 if p["keep_input"] == "auto" else p["keep_input"]
    best = dict(J=p["w_overlap"] if keep else -math.inf, X=X0, mix=mix0, overlap=1.0,
                strain=strain0, iter=0)
    hist = {k: [] for k in ("iter", "mix", "overlap", "strain", "J", "accepted", "step", "smooth",
                            "clip_q", "overlap_floor")}
    X = X0
    no_imp = 0
    bar = tqdm(range(1, max_iter + 1), desc="refine", disable=not progress)
    for it in bar:
        t = (it - 1) / max(1, max_iter - 1)
        lam = _lerp(p["smooth_start"], p["smooth_end"], t)
        step = _lerp(p["step_start"], p["step_end"], t)
        clip_q = _lerp(p["clip_q_start"], p["clip_q_end"], t)
        floor = _lerp(p["floor_start"], p["floor_end"], t)

        R, packs = _prototypes(X, members, ref_idx, p, seed + it)
        shift = torch.zeros_like(X)
        for rows, B, nearest in packs:
            disp = _barycentric(B, R, p, clip_q) - B
            norm = torch.linalg.vector_norm(disp, dim=1)
            s = 1.0 / (1.0 + norm / (norm.std(unbiased=False) + 1e-8))
            alpha = s[nearest] * (1.0 - p["bridge_damp"] * beta[rows])
            shift[rows] = alpha[:, None] * disp[nearest]
        if p["sharpen"] > 0:
            shift += p["sharpen"] * _sharpen_field(X, p, seed + 31)
        if lam > 0:
            smooth = (1.0 - lam) * shift + lam * _neighbour_mean(shift, idx0)
            shift = torch.where(rare[:, None], shift, smooth)
        move = step * shift
        norm = torch.linalg.vector_norm(move, dim=1) + 1e-12
        move = move * (p["max_step_local"] * dbar0 / norm).clamp_max(1.0)[:, None]
        move = _guard(X, move, idx0, d0, smin, smax)
        Xc = X + move
        if p["postscale"]:
            Xc = (Xc - Xc.mean(0)) * (sd0 / (Xc.std(0, unbiased=False) + 1e-8)) + mu0

        idx_sub = _knn(Xc[sub_t], k_ovl, seed)[1].to(dev)
        mix = mix_of(Xc, idx_sub)
        ovl = _overlap(idx_sub0, idx_sub)
        strain = _graph_strain(Xc, idx0, d0)
        gamma = (p["penalty_gamma"] * max(0.0, floor - ovl) ** 2
                 + 0.45 * max(0.0, best["overlap"] - ovl))
        J = (mix - mix0) + p["w_overlap"] * ovl - p["w_strain"] * (strain - strain0) - gamma
        accepted = J > best["J"] + p["tol"]
        for key, v in (("iter", it), ("mix", mix), ("overlap", ovl), ("strain", strain), ("J", J),
                       ("accepted", accepted), ("step", step), ("smooth", lam),
                       ("clip_q", clip_q), ("overlap_floor", floor)):
            hist[key].append(v)
        bar.set_postfix(mix=f"{mix:.3f}", overlap=f"{ovl:.3f}", J=f"{J:.3f}")
        if accepted:
            X = Xc
            best = dict(J=J, X=Xc, mix=mix, overlap=ovl, strain=strain, iter=it)
            no_imp = 0
        else:
            no_imp += 1
            if no_imp >= p["patience"]:
                break
    bar.close()

    tsub = np.sort(rng.choice(n, size=min(n, p["trust_subsample"]), replace=False))
    tsub_t = torch.from_numpy(tsub).to(dev)
    tw = _trustworthiness(X_in[tsub_t], best["X"][tsub_t], p["k_eval"], seed)
    record = dict(best_iter=int(best["iter"]), n_iter=len(hist["iter"]), mix=best["mix"],
                  overlap=best["overlap"], strain=best["strain"], J=best["J"], mix_start=mix0,
                  prealign_strength=float(strength), start_competed=bool(keep), trustworthiness=tw,
                  history={k: np.asarray(v) for k, v in hist.items()})
    return best["X"].cpu().numpy().astype(np.float32), record


def refine(adata: AnnData, basis: str = "X_pca", batch_key: str = "batch", *,
           key_added: str = "X_scferry_refined", max_iter: int = 15, seed: int = 0,
           device: str = "auto", progress: bool = True, **params: Any) -> dict:
    """Refine any embedding by scBIOT's batch-aware OT iterations (module docstring).

    Parameters
    ----------
    adata
        One AnnData holding the embedding in ``obsm[basis]`` and batches in ``obs[batch_key]``.
    basis
        ``obsm`` key of the embedding to refine (cells x d; PCA, LSI, ``"X_scferry"`` from
        :func:`scferry.integrate`, any other method's latent space). Must be finite.
    batch_key
        ``obs`` column of batch labels: at least two batches, each of at least 8 cells.
    key_added
        ``obsm`` key to write; must differ from ``basis``.
    max_iter
        At most this many iterations (the paper's ``T``, default 15); schedules anneal over it.
    seed
        The same seed gives the same result on CPU.
    device
        ``"auto"`` (CUDA when present), ``"cpu"`` or ``"cuda"``.
    progress
        Show a tqdm progress bar.
    **params
        Hyper-parameters by name, :data:`scferry.refine.DEFAULTS` (the paper's): ``reference``
        (``"union"``, ``"largest"`` or a batch name), ``reg`` (eps, 0.028), ``reg_m`` (lambda,
        0.40), ``k_ref``/``k_batch`` (prototype caps 1024/448), ``sharpen`` (0.22),
        ``k_pseudo`` (28), ``pull``/``push`` (0.78/0.34), the annealed ranges
        ``smooth_start/_end`` (0.52 -> 0.38), ``step_start/_end`` (0.78 -> 0.96),
        ``clip_q_start/_end`` (0.80 -> 0.90), ``floor_start/_end`` (0.60 -> 0.68), guards
        ``smin_/smax_bulk`` (0.72/1.65) and ``smin_/smax_bridge`` (0.88/1.24),
        ``max_step_local`` (1.05), ``w_overlap`` (0.18), ``w_strain`` (1.0),
        ``penalty_gamma`` (1.4), ``k_local`` (15), ``k_eval`` (30), ``eval_subsample`` (5000),
        ``trust_subsample`` (2500), ``kmeans_subsample`` (20000), ``patience`` (3), ``tol``
        (1e-3), ``postscale`` (True), ``prealign``: ``"auto"`` (default; strength from the
        share of other-batch neighbours, as scbiot 1.2), ``"none"`` (the paper's algorithm
        alone) or a strength in [0, 1] for the Gaussian OT pre-alignment, and ``keep_input``:
        ``"auto"`` (default; the start competes with the iterates when it was not
        pre-aligned), ``True`` (always competes) or ``False`` (the paper: the best iterate
        replaces the input even when it scores below it).

    Returns
    -------
    The record written to ``adata.uns[key_added]`` (a dict): ``best_iter`` (the selected
    iteration; 0 = no iterate beat the start, which is returned: the input, pre-aligned when
    ``prealign_strength`` > 0), ``start_competed`` (whether the start competed, ``keep_input``),
    ``n_iter`` (iterations run), ``mix`` (Eq. 17, mean neighbour batch
    entropy, natural log), ``overlap``, ``strain``, ``J`` of the selected iterate, ``mix_start``
    (mixing where the iterations started: the input after pre-alignment), ``prealign_strength``
    (0 = none), ``trustworthiness`` (selected iterate vs the input as given, on
    ``trust_subsample`` cells, ``k_eval`` neighbours), ``history`` (per
    iteration arrays: iter, mix, overlap, strain, J, accepted, step, smooth, clip_q,
    overlap_floor), and ``basis``, ``batch_key``, ``batches``, ``reference``, ``params``.

    Writes ``adata.obsm[key_added]`` (cells x d, float32) and ``adata.uns[key_added]`` (the
    record); nothing else on ``adata`` is touched. Inputs are checked before any computation
    and errors leave ``adata`` unchanged.
    """
    p = _check_params(params, max_iter, seed)
    X0, codes, names, ref_idx = _check_inputs(adata, basis, batch_key, key_added, p)
    dev = resolve_device(device)
    with torch.no_grad():
        X, record = _run(X0, codes, len(names), ref_idx, p, int(max_iter), int(seed), dev,
                         progress)
    record.update(basis=basis, batch_key=batch_key, batches=np.asarray(names, dtype=object),
                  reference=p["reference"] if ref_idx < 0 else names[ref_idx],
                  params={k: v for k, v in p.items()})
    adata.obsm[key_added] = X
    adata.uns[key_added] = record
    return record
