#!/usr/bin/env python
"""Per-spot cell-type selection before sf.deconvolve's posterior-mean fit, on the study's inputs
(study.py writes them): can a selection on each spot's own counts give absent types ~0 without
costing RMSE, JSD, AUPR or r?

    OMP_NUM_THREADS=1 nice -n 5 ~/.virtualenvs/r-scferry/bin/python bench/deconvolution/type_selection.py \\
        --datasets hippocampus merfish_hypothalamus lymph_node pdac --seeds 0 1 2

Every selector decides, per spot, a set of types (the others exactly 0) on the tempered Poisson
log-likelihood of the default model (signatures, gene factors and dispersion ``phi`` of the default
path, ``variants.load`` / ``variants.fit``), then the default posterior mean (Gamma(0.5, rate)
prior) is refitted on the kept types only. The criterion is the quasi-deviance ``2 dLL / phi``
against a threshold that is either fixed (``:3.84``, chi^2_1 at 5 %; the deviance of a real type
grows with the spot's depth, so deep spots keep types a shallow spot cannot support) or BIC's
``log(n_s)`` (``:bic``, ``n_s`` the spot's UMIs over ``phi``: a larger bar for deeper spots):
- ``fwd``: forward selection as RCTD's multi mode (Cable et al., Nat Biotechnol 40, 517 (2022)):
  start from the best single type, add the type that raises the likelihood most while the gain
  exceeds the threshold;
- ``back``: backward elimination: drop the type whose removal (the others refitted by ML, 30 EM
  steps) costs least while that cost is under the threshold;
- ``guard<m>``: ``back``, but a type is dropped only if the type that takes over its counts
  would cost at least ``m`` more to drop (the evidence prefers the other of a look-alike pair;
  ambiguous pairs are kept, hedged);
- ``path``: nested supports along the default estimate's ranking (the top-m types, m = 1..K,
  each refitted by ML), the m minimising ``-2 LL / phi + threshold x m`` (2: AIC);
- ``oracle``: the true support (what perfect selection followed by the refit would give).
``--variants`` picks them (default: oracle fwd:3.84 back:bic guard5:3.84 path:2; any
``fwd|back|guard<m>|path`` with ``:<threshold>`` or ``:bic`` runs).
Also per run (``diag``): how well each statistic ranks present above absent types (average
precision over spots x types): the default estimate, the ML estimate, and the single-type drop
deviance (each type's ``2 (LL - LL_{-k}) / phi`` from the ML fit, the others refitted): what every
likelihood-ratio selector above decides on. And on the rare design, the rare type where it is
present: its mean estimate (truth 0.1-0.2) and the share of those spots where it gets < 0.01.
Writes ``OUT/<--table>`` (one row per dataset x seed x design x variant) and prints the means.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE)]
from spots import metrics  # noqa: E402
from variants import dec, fit, load, loglik, run_all, run_parser  # noqa: E402

VARIANTS = ("oracle", "fwd:3.84", "back:bic", "guard5:3.84", "path:2")


def drop_deviance(Y, S, scale, a, mask, phi, n_iter=30):
    """(spots x types deviance of dropping each kept type, types x spots x types refits without it)."""
    n, K = a.shape
    LL = loglik(Y, S, scale, a)
    dev, alt = np.full((n, K), np.inf), np.zeros((K, n, K))
    for k in range(K):
        rows = np.flatnonzero((mask[:, k] > 0) & (mask.sum(axis=1) > 1))
        if not len(rows):
            continue
        m = mask[rows].copy()
        m[:, k] = 0
        alt[k, rows] = fit(Y[rows], S, scale, mask=m, n_iter=n_iter, init=a[rows])
        dev[rows, k] = 2 * (LL[rows] - loglik(Y[rows], S, scale, alt[k, rows])) / phi
    return dev, alt


def backward(Y, S, scale, a_ml, phi, thr, guard=None):
    n, K = a_ml.shape
    mask, a = np.ones((n, K)), a_ml.copy()
    done = np.zeros(n, bool)
    for _ in range(K - 1):
        live = np.flatnonzero(~done)
        dev, alt = drop_deviance(Y[live], S, scale, a[live], mask[live], phi)
        ok = dev < thr[live, None]
        if guard is not None:   # the type that takes over k's counts must be clearly more needed
            for k in range(K):
                j = (alt[k] - a[live]).argmax(axis=1)
                with np.errstate(invalid="ignore"):
                    ok[:, k] &= dev[np.arange(len(live)), j] - dev[:, k] > guard
        dd = np.where(ok, dev, np.inf)
        kmin = dd.argmin(axis=1)
        drop = np.isfinite(dd[np.arange(len(live)), kmin])
        idx = live[drop]
        mask[idx, kmin[drop]] = 0
        a[idx] = alt[kmin[drop], np.flatnonzero(drop)]
        done[live[~drop]] = True
        if done.all():
            break
    return mask


def forward(Y, S, scale, phi, thr, n_iter=50):
    n, K = Y.shape[0], S.shape[0]
    c = (S * scale[None, :]).sum(axis=1)
    lib = np.asarray(Y.sum(axis=1), dtype=np.float64).ravel()
    best, LL = np.zeros(n, int), np.full(n, -np.inf)
    for k in range(K):                  # the best single type
        a = np.zeros((n, K))
        a[:, k] = lib / c[k]
        L = loglik(Y, S, scale, a)
        best[L > LL], LL = k, np.maximum(L, LL)
    mask, a = np.zeros((n, K)), np.zeros((n, K))
    mask[np.arange(n), best] = 1
    a[np.arange(n), best] = lib / c[best]
    done = np.zeros(n, bool)
    for _ in range(K - 1):
        gain, alt = np.full((n, K), -np.inf), np.zeros((K, n, K))
        for k in range(K):
            rows = np.flatnonzero(~done & (mask[:, k] == 0))
            if not len(rows):
                continue
            m = mask[rows].copy()
            m[:, k] = 1
            init = a[rows].copy()
            init[:, k] = 0.1 * init.sum(axis=1) / m.sum(axis=1)
            alt[k, rows] = fit(Y[rows], S, scale, mask=m, n_iter=n_iter, init=init)
            gain[rows, k] = 2 * (loglik(Y[rows], S, scale, alt[k, rows]) - LL[rows]) / phi
        kmax = gain.argmax(axis=1)
        g = gain[np.arange(n), kmax]
        idx = np.flatnonzero(~done & (g > thr))
        mask[idx, kmax[idx]] = 1
        a[idx] = alt[kmax[idx], idx]
        LL[idx] = loglik(Y[idx], S, scale, a[idx])
        done[g <= thr] = True
        if done.all():
            break
    return mask


def path(Y, S, scale, est, phi, pen, n_iter=100):
    """``pen``: per spot, the criterion's price of one more type."""
    n, K = est.shape
    order = np.argsort(-est, axis=1)
    best, crit = np.zeros(n, int), np.full(n, np.inf)
    for m in range(1, K + 1):
        mask = np.zeros((n, K))
        np.put_along_axis(mask, order[:, :m], 1.0, axis=1)
        a = fit(Y, S, scale, mask=mask, n_iter=n_iter, init=est * mask + 1e-12 * mask)
        c = -2 * loglik(Y, S, scale, a) / phi + pen * m
        best[c < crit], crit = m, np.minimum(c, crit)
    mask = np.zeros((n, K))
    for m in range(1, K + 1):
        rows = np.flatnonzero(best == m)
        mask[rows[:, None], order[rows, :m]] = 1.0
    return mask


def rare_check(P, truth, types, d: Path) -> dict:
    f = d / "rare.txt"
    if not f.exists():
        return {}
    k = types.index(f.read_text().strip())
    here = truth[:, k] > 0
    return {"rare_est": float(P[here, k].mean()), "rare_truth": float(truth[here, k].mean()),
            "rare_lost": float((P[here, k] < 0.01).mean())}


def run(d: Path, which) -> dict:
    from sklearn.metrics import average_precision_score as ap
    S, Y, truth = load(d)
    types = sorted(pd.read_csv(d / "ref_obs.tsv", sep="\t")["cell_type"].astype(str).unique())
    scale = dec._platform_scale(Y, S, 100, dec.TOL, 0.0, dec.PRIOR_COUNTS)
    a_ml = dec._abundance_chunks(Y, S, scale, 500, dec.TOL, 0.0)
    prior = dec._abundance_prior(Y, S, scale, a_ml, dec.PRIOR_SHAPE)
    phi = prior[2]
    default = fit(Y, S, scale, prior)
    lib = np.asarray(Y.sum(axis=1), dtype=np.float64).ravel()
    P = default / default.sum(axis=1, keepdims=True)
    present = (truth > 0).ravel()
    dev1, _ = drop_deviance(Y, S, scale, a_ml, np.ones_like(a_ml), phi, n_iter=50)
    out = {"default": {**metrics(P, truth), **rare_check(P, truth, types, d),
                       "ap_est": ap(present, P.ravel()),
                       "ap_ml": ap(present, (a_ml / a_ml.sum(axis=1, keepdims=True)).ravel()),
                       "ap_dev": ap(present, dev1.ravel()), "true_n": float((truth > 0).sum(axis=1).mean())}}
    for v in which:
        c0 = time.process_time()
        kind, t = v.split(":") if ":" in v else (v, "")
        thr = np.log(np.maximum(lib / phi, 2.0)) if t == "bic" else np.full(len(lib), float(t or 0))
        if kind == "oracle":
            mask = (truth > 0).astype(float)
        elif kind == "back":
            mask = backward(Y, S, scale, a_ml, phi, thr)
        elif kind.startswith("guard"):
            mask = backward(Y, S, scale, a_ml, phi, thr, guard=float(kind[5:]))
        elif kind == "fwd":
            mask = forward(Y, S, scale, phi, thr)
        else:
            mask = path(Y, S, scale, default, phi, thr)
        est = fit(Y, S, scale, prior, mask=mask)
        Pv = est / est.sum(axis=1, keepdims=True)
        out[v] = {**metrics(Pv, truth), **rare_check(Pv, truth, types, d), "cpu_s": time.process_time() - c0,
                  "kept": float(mask.sum(axis=1).mean()), "true_n": float((truth > 0).sum(axis=1).mean())}
    return out


def main() -> int:
    p = run_parser(__doc__)
    p.add_argument("--variants", nargs="+", default=list(VARIANTS))
    p.add_argument("--table", default="type_selection.tsv", help="file name of the table under --out")
    args = p.parse_args()
    df = run_all(args, run)
    cols = [c for c in ["RMSE", "JSD", "AUPR", "r", "absent", "absent_med", "absent_gt05", "kept", "true_n",
                        "ap_est", "ap_ml", "ap_dev", "cpu_s"] if c in df]
    pd.set_option("display.width", 250)
    for by in (["variant"], ["dataset", "variant"], ["design", "variant"]):
        print(df.groupby(by, sort=False)[cols].mean().round(4).to_string(), "\n")
    rare = df[df.design == "rare"].groupby("variant", sort=False)[["rare_est", "rare_truth", "rare_lost"]].mean()
    print(rare.round(4).to_string())
    return 0


if __name__ == "__main__":
    sys.exit(main())
