#!/usr/bin/env python
"""Is a dataset's batch effect carried by a few genes? A label oracle (issue 16, a diagnostic).

Each gene's share of variance explained by the batch *within the true cell types* (every batch's
labels, the held-out one's too: an oracle) is computed on log-normalised values (counts per
10,000, log1p): per type, the between-batch sum of squares over the total, summed over types.
The genes with the largest share are dropped (``--drop``: how many) and the study's PCA
(``bench_integration.study_pca``) is made from the rest and scored by the study's ``score``
(no Leiden). If a few genes carried the batch effect (sex genes, genotype-dependent genes such as
HLA alleles), dropping them would raise batch entropy at little cost in transfer.

    OMP_NUM_THREADS=1 PYTHONPATH=python ~/.virtualenvs/r-scferry/bin/python \\
        bench/batch_integration/gene_oracle.py --out bench/out/integration --dataset kang \\
        --drop 0 10 30 100 200 --seeds 0 1 2
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from scferry import pp

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_integration as bi  # noqa: E402
from type_oracle import print_table, shown  # noqa: E402


def batch_share_within_types(X: np.ndarray, batch: np.ndarray, types: np.ndarray) -> np.ndarray:
    """Per column of ``X``: the within-type between-batch sum of squares over the within-type
    total sum of squares (an eta squared of batch, types held fixed)."""
    between, total = np.zeros(X.shape[1]), np.zeros(X.shape[1])
    for t in np.unique(types):
        Xt, bt = X[types == t], batch[types == t]
        mu = Xt.mean(0)
        total += ((Xt - mu) ** 2).sum(0)
        for b in np.unique(bt):
            between += (bt == b).sum() * (Xt[bt == b].mean(0) - mu) ** 2
    return between / np.maximum(total, 1e-12)


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--out", type=Path, required=True, help="the study's output folder (its input/)")
    p.add_argument("--dataset", default="kang")
    p.add_argument("--drop", nargs="+", type=int, default=[0, 10, 30, 100, 200])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    args = p.parse_args()
    adata, obs = bi.read_input(args.out / args.dataset / "input")
    share = batch_share_within_types(pp.normalize_log1p(adata.X.tocsr()).toarray(),
                                     obs["batch"].to_numpy(), obs["cell_type"].to_numpy())
    order = np.argsort(-share)
    print("largest shares:", ", ".join(f"{adata.var_names[i]} {share[i]:.3f}" for i in order[:15]))
    rows = []
    for n in args.drop:
        for seed in args.seeds:
            emb = bi.study_pca(adata[:, np.sort(order[n:])].copy(), seed=seed)
            scores = bi.score(emb, obs, seed=seed, leiden_seeds=0)
            rows.append({"dropped": n, "seed": seed, **scores})
            print(n, seed, shown(rows[-1]), flush=True)
    print_table(rows, "dropped", f"{args.dataset}: genes dropped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
