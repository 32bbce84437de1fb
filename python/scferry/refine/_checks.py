"""Parameters of ``sf.refine`` (the paper's defaults) and the checks of every input, all done
before anything is computed or written."""
from __future__ import annotations

import math
from numbers import Integral, Real
from typing import Any

import numpy as np
import pandas as pd
from anndata import AnnData

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
    prealign="auto",            # pre-alignment: "auto", "none" or a strength in [0, 1]
    prealign_shift="gaussian",  # its shift: "gaussian" (scbiot 1.2) or "ot" (unbalanced OT)
    prealign_linear=0.25,       # share of the Gaussian map's linear part (1 = scbiot 1.2)
    assign="soft",              # cells take prototype displacements: "soft" or "nearest" (paper)
    soft_bandwidth=1.0,         # "soft": kernel sigma^2 over the median cell-prototype distance^2
    union_size="cells",         # union reference: 2 sqrt(n) prototypes of n cells or n prototypes
    mass_weight=True,           # scale displacements by the transported fraction (False: paper)
    sharpen_within=True,        # sharpening centres per batch (False: over all cells, the paper)
    keep_input="auto",          # the start competes as iterate 0: "auto", True, False (the paper)
    centring=0.5,               # last step (not the paper): each batch's cells of a k-means
    centring_clusters=100,      # cluster move this share towards the cluster's mean (0 = off)
)
_INT_PARAMS = ("k_ref", "k_batch", "k_pseudo", "k_local", "k_eval", "eval_subsample",
               "trust_subsample", "kmeans_subsample", "patience", "centring_clusters")
_UNIT_PARAMS = ("prealign_linear", "centring", "smooth_start", "smooth_end", "clip_q_start",
                "clip_q_end", "floor_start", "floor_end", "bridge_damp", "rare_quantile")
_MIN_BATCH_PROTOTYPES = 8   # the authors' floor on prototypes per batch
_MIN_REF_PROTOTYPES = 32    # ... and on union reference prototypes
_GRAPH_K_EXTRA = 5          # guard graph: k_local + 5 neighbours (20 by default)


# Largest absolute coordinate refine accepts (squared distances summed over dimensions stay far
# below float32's 3.4e38) and the smallest (all cells at one point, or far below float32's
# normal range once squared).
_MAX_SCALE, _MIN_SCALE = 1e15, 1e-15


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
        if name in _INT_PARAMS or name in ("reference", "postscale", "prealign", "keep_input",
                                           "assign", "mass_weight", "sharpen_within",
                                           "union_size", "prealign_shift"):
            continue
        if isinstance(v, bool) or not isinstance(v, Real) or not math.isfinite(v) or v < 0:
            raise ValueError(f"{name} must be a finite number >= 0; got {v!r}.")
        p[name] = float(v)
    for name in _UNIT_PARAMS:
        if p[name] > 1:
            raise ValueError(f"{name} must lie in [0, 1]; got {p[name]}.")
    for name in ("reg", "reg_m", "max_step_local", "smin_bulk", "smin_bridge", "soft_bandwidth"):
        if p[name] <= 0:
            raise ValueError(f"{name} must be > 0; got {p[name]}.")
    if p["smax_bulk"] < p["smin_bulk"] or p["smax_bridge"] < p["smin_bridge"]:
        raise ValueError("edge-stretch limits need smax_bulk >= smin_bulk and smax_bridge >= "
                         f"smin_bridge; got {p['smin_bulk']}..{p['smax_bulk']} and "
                         f"{p['smin_bridge']}..{p['smax_bridge']}.")
    for name in ("postscale", "mass_weight", "sharpen_within"):
        if not isinstance(p[name], bool):
            raise ValueError(f"{name} must be True or False; got {p[name]!r}.")
    if p["assign"] not in ("soft", "nearest"):
        raise ValueError(f"assign must be 'soft' or 'nearest'; got {p['assign']!r}.")
    if p["union_size"] not in ("cells", "prototypes"):
        raise ValueError(f"union_size must be 'cells' or 'prototypes'; got {p['union_size']!r}.")
    if p["prealign_shift"] not in ("ot", "gaussian"):
        raise ValueError(f"prealign_shift must be 'gaussian' (scbiot 1.2's Gaussian map) or 'ot' "
                         f"(its translation by unbalanced OT); got {p['prealign_shift']!r}.")
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
    top = float(np.abs(X).max()) if X.size else 0.0
    if not _MIN_SCALE <= top <= _MAX_SCALE:
        raise ValueError(
            f"adata.obsm[{basis!r}] holds values up to {top:.3g}: squared distances between cells "
            f"{'overflow' if top > _MAX_SCALE else 'underflow'} in float32, where refine computes. "
            f"rescale it first, e.g. adata.obsm[{basis!r}] = X / X.std().")
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
