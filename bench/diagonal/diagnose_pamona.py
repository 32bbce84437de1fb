#!/usr/bin/env python
"""Why unsupervised GW fails on Pamona's PBMC pair (issue 17): per preprocessing variant and kNN k,
the GW objective of the unsupervised coupling vs the coupling a label prior gives (Pamona's own PBMC
example multiplies the GW gradient by 0.5 where RNA and ATAC labels agree), and the label transfer
each gives. Labels are used only to build the reference coupling and to score.

    OMP_NUM_THREADS=1 nice -n 5 ~/.virtualenvs/r-scferry/bin/python bench/diagonal/diagnose_pamona.py
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import load, score  # noqa: E402
from scferry import gw, pp  # noqa: E402


def gw_cost(D1, D2, T):
    a, b = T.sum(1), T.sum(0)
    C = (D1 ** 2) @ a[:, None] + ((D2 ** 2) @ b)[None, :] - 2 * D1 @ T @ D2.T
    return float((C * T).sum())


def variants(X):
    X = np.asarray(X, np.float64)
    std = (X - X.mean(0)) / X.std(0)
    yield "zscore+pca30 (ours)", pp.pca(std, 30, 0), "euclidean"
    yield "zscore (Pamona)", std, "euclidean"
    yield "raw", X - X.mean(0), "euclidean"
    l2 = X / np.linalg.norm(X, axis=1, keepdims=True)
    yield "l2 rows, correlation (SCOT)", l2, "correlation"


def main(only=tuple(sys.argv[1:])):
    rna, atac, _, _ = load("pamona", 0, 0)
    lr, la = np.asarray(rna.obs["cell_type"], str), np.asarray(atac.obs["cell_type"], str)
    from sklearn.model_selection import cross_val_score
    from sklearn.neighbors import KNeighborsClassifier, kneighbors_graph
    from scipy.sparse.csgraph import connected_components
    for (name, Zr, met), (_, Za, _) in zip(variants(rna.X), variants(atac.X)):
        if only and name.split()[0] not in only:
            continue
        cv = [cross_val_score(KNeighborsClassifier(15, metric=met), Z, l, cv=3).mean()
              for Z, l in ((Zr, lr), (Za, la))]
        comps = [connected_components(kneighbors_graph(Z, 10, metric=met), directed=False)[0]
                 for Z in (Zr, Za)]
        print(f"\n## {name}: within-modality 15-NN CV accuracy rna {cv[0]:.3f} atac {cv[1]:.3f}; "
              f"cell kNN(k=10) components rna {comps[0]} atac {comps[1]}", flush=True)
        mr, ma = gw.metacells(Zr.astype(np.float32), 300, seed=0), gw.metacells(Za.astype(np.float32), 300, seed=0)
        labm = [np.array([np.bincount(np.unique(l, return_inverse=True)[1][m.nearest[:, 0] == c],
                                       minlength=len(np.unique(l))).argmax() for c in range(len(m.mass))])
                for l, m in ((lr, mr), (la, ma))]
        names = [np.unique(l) for l in (lr, la)]
        labm = [n[i] for n, i in zip(names, labm)]
        M = (labm[0][:, None] != labm[1][None, :]).astype(float)
        for k in (10, 30):
            if met == "correlation":
                def geo(P, k=k):
                    G = kneighbors_graph(P, k, mode="connectivity", metric="correlation")
                    from scipy.sparse.csgraph import shortest_path
                    D = shortest_path(G.maximum(G.T), directed=False)
                    D[~np.isfinite(D)] = D[np.isfinite(D)].max()
                    return D / D.max()
                D1, D2 = geo(mr.centroids), geo(ma.centroids)
            else:
                D1, D2 = gw.geodesic(mr.centroids, k), gw.geodesic(ma.centroids, k)
            same = labm[0][:, None] == labm[1][None, :]
            for eps in (1e-3, 5e-3):
                Tl = gw.gw_coupling(D1, D2, mr.mass, ma.mass, epsilon=eps, M=M, alpha=0.5)
                E = eccentricity_cost(D1, D2, mr.mass, ma.mass)
                starts = {"a b^T (default)": None, "label prior, then plain GW": Tl,
                          "eccentricity OT": ot_plan(mr.mass, ma.mass, E, 0.05 * E.mean())}
                rng = np.random.default_rng(0)
                for r in range(4):
                    starts[f"random {r}"] = ot_plan(mr.mass, ma.mass, rng.random((len(mr.mass), len(ma.mass))), 0.05)
                line = []
                for sname, T0 in starts.items():
                    T = gw.gw_coupling(D1, D2, mr.mass, ma.mass, epsilon=eps, init=T0, anneal=T0 is None)
                    zr, za = gw.Alignment(T, (mr, ma), (Zr, Za)).joint()
                    line.append(f"{sname}: cost {gw.gw_cost(D1, D2, T):.5f} transfer "
                                f"{score(zr, za, lr, la, False)['transfer']:.3f} same-label {(T * same).sum():.3f}")
                print(f"k={k} eps={eps:g}\n    " + "\n    ".join(line), flush=True)


def eccentricity_cost(D1: np.ndarray, D2: np.ndarray, a: np.ndarray, b: np.ndarray,
                      n_quantiles: int = 100) -> np.ndarray:
    """Memoli's third lower bound of GW (Memoli, Found Comput Math 11, 417 (2011)) as a cost:
    ``M[i, j]`` = 1-D Wasserstein distance between point i's distance distribution (``D1[i, :]``
    weighted by ``a``) and point j's (``D2[j, :]`` by ``b``). Invariant to any isometry, it tells
    a cluster's core from its periphery and needs no shared features."""
    t = (np.arange(n_quantiles) + 0.5) / n_quantiles

    def quantiles(D, w):
        order = np.argsort(D, axis=1)
        Ds = np.take_along_axis(D, order, axis=1)
        cw = np.cumsum(w[order], axis=1)
        cw /= cw[:, -1:]
        idx = np.stack([np.searchsorted(c, t) for c in cw])
        return np.take_along_axis(Ds, np.minimum(idx, D.shape[1] - 1), axis=1)

    from scipy.spatial.distance import cdist
    return cdist(quantiles(D1, a), quantiles(D2, b), "cityblock") / n_quantiles


def ot_plan(a, b, C, eps):
    import ot
    return ot.sinkhorn(a, b, C, eps, method="sinkhorn_log")

if __name__ == "__main__":
    main()
