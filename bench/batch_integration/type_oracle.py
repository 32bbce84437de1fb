#!/usr/bin/env python
"""Can any embedding clear both of a dataset's bars? A label oracle (issue 16, a diagnostic).

Goal 2 asks one embedding for LOBO transfer >= the better of Harmony and scVI **and** batch
entropy >= Harmony's. This removes each batch's offset *within each true cell type* from an
embedding the study wrote (a PCA, scVI, Harmony, sf.refine: any ``METHOD`` folder):
``E' = E - a * (mean(E | type, batch) - mean(E | type))`` with strength ``a`` in [0, 1]
(``a = 1``: every type's batches share one centroid, the within-type spread untouched).
The labels of every batch are used, the held-out one's too: an oracle no method has, which shows
what a perfect linear correction per type would give under the study's judge.

A second oracle bounds what mixing within types can give: every cell moved to the position of a
random cell of its type from any batch (``shuffled``: the batches of a type indistinguishable,
each type's set of positions exactly the input's), and both in turn (centroids aligned, then
shuffled: a perfect correction within types). (Moving cells part of the way towards a random
partner is not an oracle of alignment: it shrinks every true type towards its centroid.)

The same correction with the types replaced by k-means clusters of the embedding (``--clusters``;
label-free, a correction any method could make) shows how much of the oracle survives without
labels. A sliding-window form of it (``--local``, label-free, session 43): each cell's group is its
own ``k`` nearest neighbours in the embedding; the cell moves by its batch's mean in that window
minus the window's batch-balanced mean (the mean of the batches' means, over the batches with at
least ``max(2, k / 20)`` cells there), all cells at once, repeated ``--local-rounds`` times.
``--cluster-rounds R`` (label-free, session 44) repeats the k-means centring ``R`` times, each
round clustering the embedding the previous one moved (k-means seed ``seed + 17 (r - 1)`` in
round ``r``). ``--mnn K`` (label-free, session 44) corrects the batches as fastMNN does
(Haghverdi et al., Nat Biotechnol 2018; batchelor's ``fastMNN``): batches merged largest first,
each into the union of those before it; its mutual nearest neighbours (``K`` each way, on
unit-normalised rows) give correction vectors (partner minus cell), averaged per cell and
spread over the batch by a Gaussian kernel on the unit-normalised rows (``exp(-d^2 / sigma)``,
sigma 0.1 and 1; batchelor's default is 0.1); batchelor's removal of the variation along the
average correction is left out.
Nothing else is fitted; scores are the study's own ``score`` (no Leiden).

    OMP_NUM_THREADS=1 PYTHONPATH=python ~/.virtualenvs/r-scferry/bin/python \
        bench/batch_integration/type_oracle.py --out bench/out/integration --dataset kang \
        --pca pca pca@u16 scvi harmony --seeds 0 1 2 --clusters 8 30 100
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from scferry.refine._field import _centre_within_groups

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_integration as bi  # noqa: E402


def center_within(E: np.ndarray, groups: np.ndarray, batch: np.ndarray, strength: float) -> np.ndarray:
    """Move each (group, batch) block by ``strength`` times its offset from the group's mean:
    the package's centring step (``scferry.refine._field._centre_within_groups``) on given
    groups, in float64."""
    gc, g = np.unique(groups, return_inverse=True)
    bc, b = np.unique(batch, return_inverse=True)
    return _centre_within_groups(torch.from_numpy(np.asarray(E, np.float64)),
                                 torch.from_numpy(g.astype(np.int64)),
                                 torch.from_numpy(b.astype(np.int64)), len(gc), len(bc),
                                 strength).numpy()


def shuffle_within(E: np.ndarray, groups: np.ndarray, seed: int) -> np.ndarray:
    """Each cell takes the position of a random cell of its group, any batch: the group's batches
    become indistinguishable while the groups stay exactly where they are (entropy's ceiling for
    an embedding that keeps the groups as ``E`` does)."""
    rng = np.random.default_rng(seed)
    out = np.empty_like(E, dtype=np.float64)
    for g in np.unique(groups):
        idx = np.flatnonzero(groups == g)
        out[idx] = E[rng.permutation(idx)]
    return out


def centre_locally(E: np.ndarray, batch: np.ndarray, k: int, chunk: int = 2048) -> np.ndarray:
    """One round of the sliding-window centring (module docstring): ``E`` minus, per cell, its
    batch's mean among its ``k`` nearest neighbours minus their batch-balanced mean."""
    from sklearn.neighbors import NearestNeighbors
    _, b = np.unique(batch, return_inverse=True)
    onehot = np.eye(b.max() + 1)[b]
    idx = NearestNeighbors(n_neighbors=k).fit(E).kneighbors(E, return_distance=False)
    out = E.copy()
    for lo in range(0, len(E), chunk):
        rows = idx[lo:lo + chunk]
        oh = onehot[rows]                                   # cells x k x batches
        n = oh.sum(1)                                       # cells x batches
        means = np.einsum("ckb,ckd->cbd", oh, E[rows]) / np.maximum(n, 1)[..., None]
        kept = n >= max(2, k / 20)
        n_kept = kept.sum(1, keepdims=True)
        balanced = (means * kept[..., None]).sum(1) / np.maximum(n_kept, 1)
        own = means[np.arange(len(rows)), b[lo:lo + chunk]]
        out[lo:lo + chunk] -= (own - balanced) * (n_kept > 0)  # no batch counted: not moved
    return out


def unit_rows(X: np.ndarray) -> np.ndarray:
    return X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)


def mnn_correct(E: np.ndarray, batch: np.ndarray, k: int, sigma: float,
                chunk: int = 1000) -> np.ndarray:
    """fastMNN-style correction of ``E`` (module docstring, ``--mnn``); the pairs are the
    package's ``scferry.neighbors.mutual_pairs``."""
    from scferry.neighbors import mutual_pairs
    names, sizes = np.unique(batch, return_counts=True)
    order = names[np.argsort(-sizes, kind="stable")]
    out = np.asarray(E, np.float64).copy()
    ref = np.flatnonzero(batch == order[0])
    for b in order[1:]:
        idx = np.flatnonzero(batch == b)
        R, B = out[ref], out[idx]
        Ru, Bu = unit_rows(R), unit_rows(B)
        rows, partners = mutual_pairs(Bu, Ru, k)
        cells, inv = np.unique(rows, return_inverse=True)
        vec = np.zeros((len(cells), E.shape[1]))
        np.add.at(vec, inv, R[partners] - B[rows])
        vec /= np.bincount(inv)[:, None]
        for lo in range(0, len(idx), chunk):
            d2 = ((Bu[lo:lo + chunk, None, :] - Bu[cells][None]) ** 2).sum(-1)
            w = np.exp(-(d2 - d2.min(axis=1, keepdims=True)) / sigma)
            out[idx[lo:lo + chunk]] = B[lo:lo + chunk] + (w @ vec) / w.sum(axis=1, keepdims=True)
        ref = np.concatenate([ref, idx])
    return out


SHOWN = ("transfer", "batch_entropy", "silhouette")


def shown(row: dict) -> dict:
    return {c: round(row[c], 3) for c in SHOWN if c in row}


def print_table(rows: list[dict], key: str, title: str) -> None:
    """Mean ± sd over seeds of the shown scores, one markdown row per value of ``key``."""
    df = pd.DataFrame(rows)
    cols = [c for c in SHOWN if c in df]
    g = df.groupby(key, sort=False)
    mean, sd, n = g[cols].mean(), g[cols].std(), g.size()
    print(f"\n| {title} | seeds | " + " | ".join(cols) + " |")
    print("|---|---|" + "---|" * len(cols))
    for name in mean.index:
        cells = " | ".join(f"{mean.loc[name, c]:.3f} ± {sd.loc[name, c]:.3f}" for c in cols)
        print(f"| {name} | {n[name]} | {cells} |")


def kmeans_labels(E: np.ndarray, k: int, seed: int) -> np.ndarray:
    from sklearn.cluster import KMeans
    return KMeans(n_clusters=k, n_init=3, random_state=seed).fit_predict(E)


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--out", type=Path, required=True, help="the study's output folder")
    p.add_argument("--dataset", default="kang")
    p.add_argument("--pca", nargs="+", default=["pca"], help="PCA folders (pca, pca@TAG)")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--strengths", nargs="+", type=float, default=[0.5, 1.0])
    p.add_argument("--clusters", nargs="*", type=int, default=[8, 30, 100],
                   help="k of the label-free k-means variant (none: oracle only)")
    p.add_argument("--local", nargs="*", type=int, default=[],
                   help="window sizes k of the label-free sliding-window centring (none: off)")
    p.add_argument("--local-rounds", type=int, default=3, help="rounds of it, each scored")
    p.add_argument("--cluster-rounds", type=int, default=1,
                   help="rounds of the k-means centring, re-clustered each round, each scored")
    p.add_argument("--mnn", nargs="*", type=int, default=[],
                   help="neighbours K of the label-free fastMNN-style correction (none: off)")
    args = p.parse_args()
    base = args.out / args.dataset
    obs = pd.read_csv(base / "input" / "obs.tsv", sep="\t", keep_default_na=False, dtype=str)
    batch, types = obs["batch"].to_numpy(), obs["cell_type"].to_numpy()
    rows = []
    for m in args.pca:
        for seed in args.seeds:
            E = np.load(base / f"seed{seed}" / m / "embedding.npy").astype(np.float64)
            clusters = {k: kmeans_labels(E, k, seed) for k in args.clusters}  # one fit per k
            variants = {f"{m}": E}
            for a in args.strengths:
                variants[f"{m}, true types, a={a:g} (oracle)"] = center_within(E, types, batch, a)
                for k, lab in clusters.items():
                    X = variants[f"{m}, k-means {k}, a={a:g}"] = center_within(E, lab, batch, a)
                    for r in range(2, args.cluster_rounds + 1):
                        X = variants[f"{m}, k-means {k}, a={a:g}, round {r}"] = center_within(
                            X, kmeans_labels(X, k, seed + 17 * (r - 1)), batch, a)
            for k in args.local:
                X = E
                for r in range(args.local_rounds):
                    X = variants[f"{m}, window {k}, round {r + 1}"] = centre_locally(X, batch, k)
            for k in args.mnn:
                for sigma in (0.1, 1.0):
                    variants[f"{m}, MNN {k}, sigma {sigma:g}"] = mnn_correct(E, batch, k, sigma)
            variants[f"{m}, true types, shuffled (oracle)"] = shuffle_within(E, types, seed)
            centred = variants.get(f"{m}, true types, a=1 (oracle)")
            variants[f"{m}, true types, a=1, then shuffled (oracle)"] = shuffle_within(
                center_within(E, types, batch, 1.0) if centred is None else centred, types, seed)
            for name, X in variants.items():
                rows.append({"embedding": name, "seed": seed, **bi.score(X, obs, seed=seed, leiden_seeds=0)})
                print(name, seed, shown(rows[-1]), flush=True)
    print_table(rows, "embedding", f"{args.dataset}: embedding")
    return 0


if __name__ == "__main__":
    sys.exit(main())
