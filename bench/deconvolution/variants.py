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
- ``s1``: ``prior_shape=1``;
- ``ebspot``: the posterior mean with each spot's Gamma(shape, rate) re-estimated in every step by
  type-II maximum likelihood from its types' posteriors (empirical Bayes per spot);
- ``pres``: the default times each type's posterior probability of presence (``presence``: a
  spike-and-slab reading of the per-type likelihood ratio, BIC's penalty, the prior probability of
  presence estimated per spot); ``pres05``: the default refitted on the types with probability
  >= 0.5 (the others exactly 0);
- ``gw``: the default with the likelihood's genes weighted by their specificity
  (``specificity_weights``);
- ``plat_off`` / ``plat_b1`` / ``plat_b10``: the whole default path with the gene factors off, or
  under a Gamma(1, 1) / Gamma(10, 10) prior (the previous default) instead of Gamma(100, 100);
- ``nb``: the default with a negative-binomial variance of the spot's cells, gene-wise
  overdispersion from the reference cells (``reference_overdispersion``; RCTD and cell2location
  fit an overdispersed likelihood), the dispersion ``phi`` re-estimated under it (at least 1);
- ``ard1``: the default with automatic relevance determination of each spot x type's prior rate
  (a Gamma(1, 1 / rate) hyperprior: the sparsity learned per spot and type from its counts);
- ``allgenes``: the whole default path on every shared gene (``select_genes=False``, the previous
  default) instead of the genes that mark a type.
Writes ``OUT/<--table>`` (default variants.tsv; rewritten after every run; one row per dataset x
seed x design x variant, spots.metrics) and prints the means over runs, per dataset and per design.
``--variants`` picks some of them (default: all).
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
from scipy.special import digamma, polygamma

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE)]
from spots import DATASETS, DESIGNS, metrics  # noqa: E402

dec = importlib.import_module("scferry.tl.deconvolve")  # the module (sf.tl.deconvolve is the function)


def load(d: Path, select: bool = True, moments: bool = False, cells: bool = False):
    """Signatures (types x genes), spots on those genes, truth (spots x types): the genes the
    reference expresses, of them those that mark a type (``dec.informative_genes``, sf.deconvolve's
    ``select_genes=True``) unless ``select`` is False (or fewer than 10 pass). ``moments``: also
    the cells' per-gene overdispersion (``reference_overdispersion``) on those genes; ``cells``:
    also the reference cells' counts on those genes and their labels."""
    obs = pd.read_csv(d / "ref_obs.tsv", sep="\t")
    labels = obs["cell_type"].astype(str).to_numpy()
    types = sorted(set(labels))
    X = sp.load_npz(d / "ref.npz").tocsr()
    S = dec.type_signatures(X, labels, types)
    keep = S.sum(axis=0) > 0
    if select:
        marks = dec.informative_genes(S[:, keep])
        if marks.sum() >= 10:
            keep[np.flatnonzero(keep)[~marks]] = False
    Y = sp.load_npz(d / "spots.npz").tocsr().astype(np.float32)[:, np.flatnonzero(keep)].tocsr()
    truth = pd.read_csv(d / "truth.tsv", sep="\t", index_col=0)[types].to_numpy()
    if moments:
        return S[:, keep], Y, truth, reference_overdispersion(X[:, np.flatnonzero(keep)], labels, types)
    if cells:
        return S[:, keep], Y, truth, X[:, np.flatnonzero(keep)], labels
    return S[:, keep], Y, truth


def reference_overdispersion(X, labels, types) -> np.ndarray:
    """Per-gene ``1 / theta_g`` of a negative binomial ``var = m + m^2 / theta_g`` of single cells
    around their type's mean ``m``, pooled over types by moments from the reference cells:
    ``sum_k n_k (v_kg - m_kg) / sum_k n_k m_kg^2`` (``v`` the within-type variance), at least 0."""
    X = X.astype(np.float64)
    m = dec.type_signatures(X, labels, types)
    m2 = dec.type_signatures(X.multiply(X).tocsr(), labels, types)
    n = pd.Series(labels).value_counts().reindex(types).to_numpy(np.float64)
    v = (m2 - m ** 2) * (n / np.maximum(n - 1, 1))[:, None]
    excess = (n[:, None] * (v - m)).sum(axis=0) / np.maximum((n[:, None] * m ** 2).sum(axis=0), 1e-300)
    return np.maximum(excess, 0.0)


def loglik(Y, S, scale, a):
    """Poisson log-likelihood of each spot (up to the log y! constant) at abundances ``a``."""
    rows = np.repeat(np.arange(Y.shape[0]), np.diff(Y.indptr))
    W = S * scale[None, :]
    mu = np.einsum("ij,ij->i", a[rows], W.T[Y.indices])
    return np.bincount(rows, Y.data * np.log(np.maximum(mu, 1e-300)), minlength=Y.shape[0]) - a @ W.sum(axis=1)


def gamma_shape(s: np.ndarray) -> np.ndarray:
    """Maximum-likelihood Gamma shape from ``s = log(mean x) - mean(log x)`` (> 0): Minka's (2002)
    closed-form start, then Newton steps on ``log a - digamma(a) = s``."""
    s = np.maximum(s, 1e-8)
    a = (3 - s + np.sqrt((s - 3) ** 2 + 24 * s)) / (12 * s)
    for _ in range(5):
        a = np.maximum(a - (np.log(a) - digamma(a) - s) / (1 / a - polygamma(1, a)), 1e-6)
    return a


def fit(Y, S, scale, prior=None, mask=None, estimate="mean", n_iter=500, tol=dec.TOL, init=None,
        eb_spot=False, weights=None, overdispersion=None, ard=None):
    """EM / VB of the abundances as _poisson_abundance (sparse path, every spot until the slowest
    stops), with a spots x types 0/1 ``mask`` of allowed types and ``estimate="map"`` (the mode).
    ``eb_spot``: each spot's Gamma(shape, rate) prior re-estimated in every step by type-II maximum
    likelihood from its types' posteriors (empirical Bayes per spot: a spot whose counts sit on few
    types gets a sparser prior, an evenly mixed one a flatter one). ``weights``: per-gene weights
    of the (quasi-)log-likelihood (``sum_g w_g (y log mu - mu)``). ``overdispersion``: per-gene
    ``1 / theta_g`` of the cells (``reference_overdispersion``): a negative-binomial variance
    ``mu (1 + m / theta_g)``, ``m = mu / N_s`` the spot's mean counts per cell (``N_s`` its cells),
    entered as the quasi-likelihood weights ``1 / (1 + m / theta_g)`` re-computed in every step
    (iteratively reweighted EM). ``ard = a0``: automatic relevance determination, a Gamma(a0,
    a0 / rate) hyperprior on each spot x type's prior rate (mean ``rate``), its posterior mean
    ``(a0 + shape) / (a0 / rate + E a)`` updated in every step: a type the spot's counts support
    little gets a larger rate (a sparser prior), one they support a smaller one."""
    rows = np.repeat(np.arange(Y.shape[0]), np.diff(Y.indptr))
    ST, y = S.T[Y.indices], Y.data.astype(np.float64)
    w = np.ones(S.shape[1]) if weights is None else weights
    if weights is not None:
        y = y * w[Y.indices]
    c = (S * (scale * w)[None, :]).sum(axis=1)
    lib = np.asarray(Y.sum(axis=1), dtype=np.float64).ravel()
    a = np.tile(lib[:, None] / c.sum(), (1, S.shape[0])) if init is None else init.copy()
    a = a if mask is None else a * mask
    mean = a
    if prior is not None:
        shape, rate, phi = prior
        rate = np.full(a.shape, rate) if ard is not None else rate
    W = S * scale[None, :]
    for _ in range(n_iter):
        mu = np.einsum("ij,ij->i", a[rows], ST)
        yw = y
        if overdispersion is not None:  # NB weights at the current mean (dense: spots x genes)
            per_cell = (mean @ W) / np.maximum(mean.sum(axis=1, keepdims=True), 1e-12)
            wsg = w[None, :] / (1 + per_cell * overdispersion[None, :])
            yw = y * wsg[rows, Y.indices] / w[Y.indices]
            c = wsg @ W.T                      # spots x types
        ratio = sp.csr_matrix((yw / np.maximum(mu, 1e-300), Y.indices, Y.indptr), shape=Y.shape)
        att = a * (ratio @ S.T)
        cc = c if c.ndim == 2 else c[None, :]
        if prior is None:
            new = a = att / cc
        else:
            post_shape, post_rate = shape + att / phi, rate + cc / phi
            if estimate == "map":
                new = a = np.maximum(post_shape - 1, 0) / post_rate
            else:
                new, a = post_shape / post_rate, np.exp(digamma(post_shape)) / post_rate
            if eb_spot:
                Ea = new if mask is None else np.where(mask > 0, new, np.nan)
                Elog = np.log(a) if mask is None else np.where(mask > 0, np.log(np.maximum(a, 1e-300)), np.nan)
                m = np.nanmean(Ea, axis=1)
                shape = gamma_shape(np.log(m) - np.nanmean(Elog, axis=1))[:, None]
                rate = shape / m[:, None]
            if ard is not None:
                rate = (ard + shape) / (ard / prior[1] + new)
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


def presence(Y, S, scale, a_ml, phi):
    """Spots x types posterior probability that a type is present: a spike-and-slab reading of the
    per-type likelihood ratio. ``log BF_k = (LL - LL_{-k}) / phi - log(n_s) / 2``: the quasi-
    log-likelihood gain of type ``k`` (the others refitted without it, 30 EM steps from the ML fit)
    less BIC's penalty for one parameter (``n_s`` the spot's counts over ``phi``); the prior
    probability of presence ``pi_s`` is estimated per spot (empirical Bayes, EM: the mean of its
    types' posterior probabilities)."""
    from scipy.special import expit, logit
    full = loglik(Y, S, scale, a_ml)
    n = np.maximum(np.asarray(Y.sum(axis=1), dtype=np.float64).ravel() / phi, 2.0)
    logbf = np.zeros_like(a_ml)
    for k in range(S.shape[0]):
        m = np.ones_like(a_ml)
        m[:, k] = 0
        logbf[:, k] = (full - loglik(Y, S, scale, fit(Y, S, scale, mask=m, n_iter=30, init=a_ml))) / phi \
            - 0.5 * np.log(n)
    K = S.shape[0]
    pi = np.full(len(n), 0.5)
    for _ in range(100):
        p = expit(logbf + logit(pi)[:, None])
        pi = np.clip(p.mean(axis=1), 1 / K, 1 - 1 / K)
    return p


def specificity_weights(Y, S):
    """Per-gene weights ``1 - H(q_g) / log K`` (``q_g`` the gene's signature over types, normalised:
    0 for a gene every type expresses equally, 1 for a gene of one type), rescaled to a count-weighted
    mean of 1 (the likelihood keeps its total weight)."""
    q = S / np.maximum(S.sum(axis=0, keepdims=True), 1e-300)
    H = -(q * np.log(np.maximum(q, 1e-300))).sum(axis=0)
    spec = 1 - H / np.log(S.shape[0])
    T = np.asarray(Y.sum(axis=0), dtype=np.float64).ravel()
    return spec / ((spec * T).sum() / max(T.sum(), 1e-300))


VARIANTS = ("ml", "default", "map", "phi2", "s1", "lr3.84", "lr10", "ebspot", "pres", "pres05", "gw",
            "plat_off", "plat_b1", "plat_b10", "allgenes", "nb", "ard1")


def run(d: Path, which=VARIANTS) -> dict:
    S, Y, truth, theta_inv = load(d, moments=True)
    scale = dec._platform_scale(Y, S, 100, dec.TOL, 0.0, dec.PRIOR_COUNTS)
    a_ml = dec._abundance_chunks(Y, S, scale, 500, dec.TOL, 0.0)
    prior = dec._abundance_prior(Y, S, scale, a_ml, dec.PRIOR_SHAPE)
    shape, rate, phi = prior
    default = fit(Y, S, scale, prior)
    est = {"ml": lambda: a_ml, "default": lambda: default,
           "map": lambda: fit(Y, S, scale, prior, estimate="map"),
           "phi2": lambda: fit(Y, S, scale, (shape, rate, 2 * phi)),
           "s1": lambda: fit(Y, S, scale, dec._abundance_prior(Y, S, scale, a_ml, 1.0)),
           "ebspot": lambda: fit(Y, S, scale, prior, eb_spot=True),
           "gw": lambda: fit(Y, S, scale, prior, weights=specificity_weights(Y, S))}
    for t in (3.84, 10.0):
        est[f"lr{t:g}"] = lambda t=t: fit(Y, S, scale, prior, mask=selected(Y, S, scale, a_ml, phi, t))
    pres = {}

    def p_present():
        if "p" not in pres:
            pres["p"] = presence(Y, S, scale, a_ml, phi)
        return pres["p"]

    def hard():
        keep = (p_present() >= 0.5).astype(float)
        none = keep.sum(axis=1) == 0
        keep[none, p_present()[none].argmax(axis=1)] = 1
        return fit(Y, S, scale, prior, mask=keep)
    est["pres"] = lambda: default * p_present()

    def platform(b):
        """the default path with the gene factors off (``b=None``) or under a Gamma(b, b) prior"""
        sc = np.ones(S.shape[1]) if b is None else dec._platform_scale(Y, S, 100, dec.TOL, 0.0, b)
        ml = dec._abundance_chunks(Y, S, sc, 500, dec.TOL, 0.0)
        return fit(Y, S, sc, dec._abundance_prior(Y, S, sc, ml, dec.PRIOR_SHAPE))
    est["plat_off"], est["plat_b1"], est["plat_b10"] = (lambda: platform(None), lambda: platform(1.0),
                                                        lambda: platform(10.0))
    est["pres05"] = hard

    def every_gene():
        S0, Y0, _ = load(d, select=False)
        sc = dec._platform_scale(Y0, S0, 100, dec.TOL, 0.0, dec.PRIOR_COUNTS)
        ml = dec._abundance_chunks(Y0, S0, sc, 500, dec.TOL, 0.0)
        return fit(Y0, S0, sc, dec._abundance_prior(Y0, S0, sc, ml, dec.PRIOR_SHAPE))
    est["allgenes"] = every_gene

    def negbin():
        ml = fit(Y, S, scale, overdispersion=theta_inv, init=a_ml)
        mu = ml @ (S * scale[None, :])
        var = mu * (1 + mu / ml.sum(axis=1, keepdims=True) * theta_inv[None, :])
        ph = max(float(((Y.toarray() - mu) ** 2 / np.maximum(var, 1e-300)).sum()) / (Y.shape[0] * (Y.shape[1] - S.shape[0])), 1.0)
        return fit(Y, S, scale, (shape, rate, ph), overdispersion=theta_inv, init=ml)
    est["nb"] = negbin
    est["ard1"] = lambda: fit(Y, S, scale, prior, ard=1.0)
    out = {}
    for k in which:
        v = est[k]()
        out[k] = metrics(v / v.sum(axis=1, keepdims=True), truth)
    return out


def run_parser(doc: str) -> argparse.ArgumentParser:
    """The options of a script over the study's saved runs (datasets, designs, seeds, --out)."""
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    p.add_argument("--designs", nargs="+", default=list(DESIGNS), choices=DESIGNS)
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--out", type=Path, default=HERE.parent / "out" / "deconvolution")
    return p


def run_all(args, run_one) -> pd.DataFrame:
    """``run_one(dir, args.variants)`` (variant -> metrics) on every dataset x seed x design of
    ``args``; the table (one row per run x variant) rewritten to ``OUT/<args.table>`` after every run."""
    rows = []
    for ds in args.datasets:
        for seed in args.seeds:
            for design in args.designs:
                c0 = time.process_time()
                for v, m in run_one(args.out / ds / f"seed{seed}" / design, args.variants).items():
                    rows.append({"dataset": ds, "seed": seed, "design": design, "variant": v, **m})
                print(f"{ds} seed{seed} {design}: {time.process_time() - c0:.1f} CPU s", flush=True)
                df = pd.DataFrame(rows)
                df.to_csv(args.out / args.table, sep="\t", index=False)
    return df


def main() -> int:
    p = run_parser(__doc__)
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    p.add_argument("--table", default="variants.tsv", help="file name of the table under --out")
    args = p.parse_args()
    df = run_all(args, run)
    cols = ["RMSE", "JSD", "AUPR", "r", "absent", "absent_med", "absent_gt05"]
    pd.set_option("display.width", 200)
    for by in (["variant"], ["dataset", "variant"], ["design", "variant"]):
        print(df.groupby(by)[cols].mean().round(4).to_string(), "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
