#!/usr/bin/env python
"""Alternatives to sf.deconvolve's default estimate, on the study's inputs (study.py writes them):
what gets absent types to ~0, and what closes cell2location's RMSE lead on evenly mixed spots.

    OMP_NUM_THREADS=1 nice -n 5 ~/.virtualenvs/r-scferry/bin/python bench/deconvolution/variants.py \\
        --datasets hippocampus merfish_hypothalamus lymph_node pdac --seeds 0 1 2

Every variant uses the default path's signatures, gene factors and prior (rate, dispersion ``phi``
from the maximum-likelihood fit), and differs only in the estimate:
- ``default``: posterior mean under Gamma(0.5, rate) (mean-field VB; sf.deconvolve's default);
- ``ml``: maximum likelihood (``prior_shape=None``);
- ``map``: the posterior mode under the same prior, by EM with the MAP M-step
  ``a = max(shape - 1 + attributed / phi, 0) / (rate + c / phi)``: with shape < 1 a type the
  spot's counts support with fewer than ``(1 - shape) phi`` counts gets exactly 0;
- ``lr<t>``: RCTD-style type selection (Cable et al., Nat Biotechnol 2022): in each spot, each
  type of the ML fit is dropped if removing it (the others refitted, 30 EM steps from the ML
  fit) costs less than ``t`` in quasi-deviance (``2 dLL / phi``; 3.84 = chi^2_1 at 5%), then the
  default posterior mean is refitted on the kept types (the others exactly 0);
- ``phi2``: the default with the likelihood tempered twice as much (a wider posterior);
- ``s1``: ``prior_shape=1``.
Writes ``OUT/variants.tsv`` (rewritten after every run; one row per dataset x seed x design x variant, spots.metrics) and
prints the means over runs, per dataset and per design.
"""
from __future__ import annotations

import argparse
import importlib
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy.special import digamma

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE)]
from spots import DATASETS, DESIGNS, metrics  # noqa: E402

dec = importlib.import_module("scferry.tl.deconvolve")  # the module (sf.tl.deconvolve is the function)


def load(d: Path):
    """Signatures (types x expressed genes), spots on those genes, truth (spots x types)."""
    obs = pd.read_csv(d / "ref_obs.tsv", sep="\t")
    labels = obs["cell_type"].astype(str).to_numpy()
    types = sorted(set(labels))
    S = dec.type_signatures(sp.load_npz(d / "ref.npz").tocsr(), labels, types)
    keep = S.sum(axis=0) > 0
    Y = sp.load_npz(d / "spots.npz").tocsr().astype(np.float32)[:, np.flatnonzero(keep)].tocsr()
    truth = pd.read_csv(d / "truth.tsv", sep="\t", index_col=0)[types].to_numpy()
    return S[:, keep], Y, truth


def loglik(Y, S, scale, a):
    """Poisson log-likelihood of each spot (up to the log y! constant) at abundances ``a``."""
    rows = np.repeat(np.arange(Y.shape[0]), np.diff(Y.indptr))
    W = S * scale[None, :]
    mu = np.einsum("ij,ij->i", a[rows], W.T[Y.indices])
    return np.bincount(rows, Y.data * np.log(np.maximum(mu, 1e-300)), minlength=Y.shape[0]) - a @ W.sum(axis=1)


def fit(Y, S, scale, prior=None, mask=None, estimate="mean", n_iter=500, tol=dec.TOL, init=None):
    """EM / VB of the abundances as _poisson_abundance (sparse path, every spot until the slowest
    stops), with a spots x types 0/1 ``mask`` of allowed types and ``estimate="map"`` (the mode)."""
    rows = np.repeat(np.arange(Y.shape[0]), np.diff(Y.indptr))
    ST, y = S.T[Y.indices], Y.data.astype(np.float64)
    c = (S * scale[None, :]).sum(axis=1)
    lib = np.asarray(Y.sum(axis=1), dtype=np.float64).ravel()
    a = np.tile(lib[:, None] / c.sum(), (1, S.shape[0])) if init is None else init.copy()
    a = a if mask is None else a * mask
    mean = a
    for _ in range(n_iter):
        mu = np.einsum("ij,ij->i", a[rows], ST)
        ratio = sp.csr_matrix((y / np.maximum(mu, 1e-300), Y.indices, Y.indptr), shape=Y.shape)
        att = a * (ratio @ S.T)
        if prior is None:
            new = a = att / c[None, :]
        else:
            shape, rate, phi = prior
            post_shape, post_rate = shape + att / phi, rate + c[None, :] / phi
            if estimate == "map":
                new = a = np.maximum(post_shape - 1, 0) / post_rate
            else:
                new, a = post_shape / post_rate, np.exp(digamma(post_shape)) / post_rate
        if mask is not None:
            new, a = new * mask, a * mask
        step = np.abs(new - mean).sum(axis=1) / np.maximum(mean.sum(axis=1), 1e-300)
        mean = new
        if step.max() < tol:
            break
    return mean


def selected(Y, S, scale, a_ml, phi, threshold):
    """RCTD-like selection: 1 where dropping the type costs >= threshold in quasi-deviance."""
    full = loglik(Y, S, scale, a_ml)
    keep = np.zeros_like(a_ml)
    for k in range(S.shape[0]):
        m = np.ones_like(a_ml)
        m[:, k] = 0
        dev = 2 * (full - loglik(Y, S, scale, fit(Y, S, scale, mask=m, n_iter=30, init=a_ml))) / phi
        keep[:, k] = (a_ml[:, k] > 0) & (dev >= threshold)
    none = keep.sum(axis=1) == 0
    keep[none, a_ml[none].argmax(axis=1)] = 1
    return keep


def run(d: Path) -> dict:
    S, Y, truth = load(d)
    scale = dec._platform_scale(Y, S, 100, dec.TOL, 0.0, dec.PRIOR_COUNTS)
    a_ml = dec._abundance_chunks(Y, S, scale, 500, dec.TOL, 0.0)
    prior = dec._abundance_prior(Y, S, scale, a_ml, dec.PRIOR_SHAPE)
    shape, rate, phi = prior
    est = {"ml": a_ml, "default": fit(Y, S, scale, prior), "map": fit(Y, S, scale, prior, estimate="map"),
           "phi2": fit(Y, S, scale, (shape, rate, 2 * phi)),
           "s1": fit(Y, S, scale, dec._abundance_prior(Y, S, scale, a_ml, 1.0))}
    for t in (3.84, 10.0):
        est[f"lr{t:g}"] = fit(Y, S, scale, prior, mask=selected(Y, S, scale, a_ml, phi, t))
    return {k: metrics(v / v.sum(axis=1, keepdims=True), truth) for k, v in est.items()}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    p.add_argument("--designs", nargs="+", default=list(DESIGNS), choices=DESIGNS)
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--out", type=Path, default=HERE.parent / "out" / "deconvolution")
    args = p.parse_args()
    rows = []
    for ds in args.datasets:
        for seed in args.seeds:
            for design in args.designs:
                c0 = time.process_time()
                for v, m in run(args.out / ds / f"seed{seed}" / design).items():
                    rows.append({"dataset": ds, "seed": seed, "design": design, "variant": v, **m})
                print(f"{ds} seed{seed} {design}: {time.process_time() - c0:.1f} CPU s", flush=True)
                df = pd.DataFrame(rows)
                df.to_csv(args.out / "variants.tsv", sep="\t", index=False)  # after every run
    cols = ["RMSE", "JSD", "AUPR", "r", "absent", "absent_med", "absent_gt05"]
    pd.set_option("display.width", 200)
    for by in (["variant"], ["dataset", "variant"], ["design", "variant"]):
        print(df.groupby(by)[cols].mean().round(4).to_string(), "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
