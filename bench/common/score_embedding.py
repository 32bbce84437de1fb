#!/usr/bin/env python
"""Quality figures for one saved embedding (standalone; numpy + scikit-learn + pandas only).

    python bench/common/score_embedding.py DIR [DIR ...]      # scores every embedding_*.npy in DIR

``score(embedding, obs)`` is the function the benchmark calls; its definitions are the ones
``scferry.metrics`` will carry, so it can be swapped for it later:

silhouette
    Cell-type silhouette on the labelled cells (``obs.cell_type`` not empty), sklearn
    ``silhouette_score`` with euclidean distance, scaled to [0, 1] as (s + 1) / 2. Higher = cell
    types better separated.
batch_entropy
    Batch entropy mixing score in SCALEX's form: 100 pools of 100 cells drawn at random (with
    replacement) from all cells; for each drawn cell its 100 nearest neighbours (itself excluded,
    euclidean); the batch frequencies among them divided by the batches' global proportions and
    renormalised; their Shannon entropy (natural log). Mean over cells and pools, divided by
    ln(n_batches), so 1 = perfect mixing and 0 = no mixing. (SCALEX/uniport divide by log2, which
    caps their score at ln 2 for two batches; we divide by ln so that the ceiling is 1.)
transfer_accuracy (only with >= 3 batches, i.e. symphony)
    Leave-one-batch-out label transfer: for each batch, a kNN classifier (k = 30, euclidean,
    uniform votes) fitted on the labelled cells of all other batches predicts its labelled cells;
    ``transfer_accuracy`` is the mean over held-out batches of the fraction predicted right
    (``transfer_accuracy_per_batch`` has each one, ``transfer_accuracy_pooled`` pools all cells).
"""
from __future__ import annotations

import json
import os
import sys

import numpy as np
import pandas as pd
from sklearn.metrics import silhouette_score
from sklearn.neighbors import KNeighborsClassifier, NearestNeighbors


def _labels(obs: pd.DataFrame, key: str) -> np.ndarray:
    """Labels as strings, '' where unknown."""
    lab = obs[key].astype(object).where(obs[key].notna(), "")
    return lab.astype(str).str.strip().replace({"nan": "", "None": "", "NA": ""}).to_numpy()


def silhouette(embedding: np.ndarray, labels: np.ndarray) -> float:
    keep = labels != ""
    X, y = embedding[keep], labels[keep]
    if len(np.unique(y)) < 2:
        return float("nan")
    return float((silhouette_score(X, y, metric="euclidean") + 1) / 2)


def batch_entropy(embedding: np.ndarray, batches: np.ndarray, n_neighbors: int = 100,
                  n_pools: int = 100, n_samples_per_pool: int = 100, seed: int = 0) -> float:
    levels, codes = np.unique(batches, return_inverse=True)
    n_b = len(levels)
    if n_b < 2:
        return float("nan")
    n = embedding.shape[0]
    k = min(n_neighbors, n - 1)
    global_p = np.bincount(codes, minlength=n_b) / n
    # neighbours of every cell, self excluded (drop the first column when it is the cell itself)
    nn = NearestNeighbors(n_neighbors=k + 1).fit(embedding)
    idx = nn.kneighbors(embedding, return_distance=False)
    nbr = np.empty((n, k), dtype=np.int64)
    for i in range(n):
        row = idx[i][idx[i] != i]
        nbr[i] = row[:k]
    rng = np.random.default_rng(seed)
    pool_means = []
    for _ in range(n_pools):
        cells = rng.choice(n, size=n_samples_per_pool, replace=True)
        counts = np.stack([np.bincount(codes[nbr[c]], minlength=n_b) for c in cells]) / k
        w = counts / global_p
        w = w / w.sum(1, keepdims=True)
        ent = -(w * np.log(w + 1e-8)).sum(1)
        pool_means.append(ent.mean())
    return float(np.mean(pool_means) / np.log(n_b))


def transfer_accuracy(embedding: np.ndarray, batches: np.ndarray, labels: np.ndarray,
                      k: int = 30) -> dict:
    keep = labels != ""
    per_batch, right, total = {}, 0, 0
    for b in np.unique(batches):
        test = keep & (batches == b)
        train = keep & (batches != b)
        if test.sum() == 0 or train.sum() == 0:
            continue
        clf = KNeighborsClassifier(n_neighbors=min(k, int(train.sum()))).fit(embedding[train], labels[train])
        hit = clf.predict(embedding[test]) == labels[test]
        per_batch[str(b)] = float(hit.mean())
        right += int(hit.sum())
        total += int(test.sum())
    return {
        "transfer_accuracy": float(np.mean(list(per_batch.values()))) if per_batch else float("nan"),
        "transfer_accuracy_pooled": right / total if total else float("nan"),
        "transfer_accuracy_per_batch": per_batch,
    }


def score(embedding, obs, batch_key: str = "dataset", label_key: str = "cell_type",
          seed: int = 0) -> dict:
    """Quality figures of one embedding (rows aligned with ``obs``)."""
    X = np.asarray(embedding, dtype=np.float64)
    if X.ndim != 2 or X.shape[0] != len(obs):
        raise ValueError(f"embedding shape {X.shape} does not match {len(obs)} obs rows")
    if not np.isfinite(X).all():
        raise ValueError("embedding has non-finite values")
    batches = obs[batch_key].astype(str).to_numpy()
    labels = _labels(obs, label_key)
    out = {
        "n_cells": int(X.shape[0]),
        "n_labelled": int((labels != "").sum()),
        "n_batches": int(len(np.unique(batches))),
        "silhouette": silhouette(X, labels),
        "batch_entropy": batch_entropy(X, batches, seed=seed),
    }
    # transfer needs labelled cells in every batch: only where >= 3 batches are all labelled
    labelled_batches = np.unique(batches[labels != ""])
    if out["n_batches"] >= 3 and len(labelled_batches) == out["n_batches"]:
        out.update(transfer_accuracy(X, batches, labels))
    return out


def score_dir(d: str) -> dict:
    obs = pd.read_csv(os.path.join(d, "obs.tsv"), sep="\t", dtype=str, keep_default_na=False)
    res = {}
    for f in sorted(os.listdir(d)):
        if f.startswith("embedding_") and f.endswith(".npy"):
            res[f[len("embedding_"):-len(".npy")]] = score(np.load(os.path.join(d, f)), obs)
    return res


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv:
        print(__doc__)
        return 2
    for d in argv:
        res = score_dir(d)
        with open(os.path.join(d, "scores.json"), "w") as fh:
            json.dump(res, fh, indent=2)
        print(json.dumps({"dir": d, **res}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
