#!/usr/bin/env python
"""Quality of scMODAL's MNN anchors (issue 17) per anchor space and k, over minibatches drawn as
scMODAL draws them (500 independent cells of each modality): anchors per minibatch, the share
joining cells of the same type ("precision"), and over the whole subsample the share joining a
cell to its own pair. Labels and pairing are used only to score.

Datasets: SNARE cortex RNA vs ATAC gene activity (linked: the 2,000 most variable shared genes,
as ``linked="shared"``), CITE-seq pbmc10k RNA vs 14 ADTs (linked: the gene-protein table).
Spaces: the linked features z-scored (the reference implementation's search space), their
Seurat CCA, and the CCA coordinates against their own-modality neighbour means
(``scferry.gw.denoised_linked``: ``[c, s]`` vs ``[s, c]``, n_smooth 40; scMODAL's default).

    OMP_NUM_THREADS=1 nice -n 5 ~/.virtualenvs/r-scferry/bin/python bench/diagonal/anchors_scmodal.py \
        --datasets snare_gene cite --seeds 0
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import linked_table, load  # noqa: E402
from scferry import gw  # noqa: E402
from scferry.methods.scmodal import _zscore  # noqa: E402
from scferry.neighbors import mutual_knn_mask  # noqa: E402
from scferry.pp import highly_variable, normalize_log1p  # noqa: E402


def linked_columns(name, rna, oth):
    if name == "cite":
        t = linked_table(name, rna, oth)
        return rna.var_names.get_indexer(t["rna"]), oth.var_names.get_indexer(t["other"])
    X1 = normalize_log1p(rna.X)
    shared = rna.var_names[rna.var_names.isin(oth.var_names)]
    hv = highly_variable(X1[:, rna.var_names.get_indexer(shared)], shared, 2000)
    return rna.var_names.get_indexer(hv), oth.var_names.get_indexer(hv)


def spaces(name, rna, oth, seed, n_smooth):
    i1, i2 = linked_columns(name, rna, oth)
    L1, L2 = rna.X[:, i1], oth.X[:, i2]
    yield "linked features z-scored (reference)", _zscore(normalize_log1p(L1)), _zscore(normalize_log1p(L2))
    U, V = gw.linked_cca((L1, L2), seed=seed)
    yield "Seurat CCA", U, V
    Z = tuple(gw.embed_modality(a.X, gw.guess_kind(a.X, a.var, a.var_names), seed=seed) for a in (rna, oth))
    for k in n_smooth:
        (c1, s1), (c2, s2) = gw.denoised_linked(Z, (U, V), k, seed)
        yield f"CCA [c, s] vs [s, c], n_smooth {k}", np.hstack([c1, s1]), np.hstack([s2, c2])
        yield f"CCA smoothed both [s] vs [s], n_smooth {k}", s1, s2


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--datasets", nargs="+", default=["snare_gene", "cite"])
    p.add_argument("--seeds", nargs="+", type=int, default=[0])
    p.add_argument("--cells", type=int, default=2000)
    p.add_argument("--k", nargs="+", type=int, default=[10, 30])
    p.add_argument("--n-smooth", nargs="+", type=int, default=[40])
    args = p.parse_args()
    out = []
    for name in args.datasets:
        for seed in args.seeds:
            rna, oth, _, _ = load(name, args.cells, seed)
            lab = np.asarray(rna.obs["cell_type"], str)
            known = ~np.isin(lab, ["Mis", "unknown"])
            rng = np.random.default_rng(seed)
            for space, A, B in spaces(name, rna, oth, seed, args.n_smooth):
                tA, tB = torch.as_tensor(A), torch.as_tensor(B)
                for k in args.k:
                    same, n_anchor = [], []
                    for _ in range(20):
                        ia, ib = rng.choice(len(A), 500, replace=False), rng.choice(len(B), 500, replace=False)
                        m = mutual_knn_mask(tA[ia], tB[ib], k).numpy()
                        r, c = np.nonzero(m)
                        ok = known[ia][r] & known[ib][c]
                        n_anchor.append(len(r))
                        same.append(np.mean(lab[ia][r][ok] == lab[ib][c][ok]) if ok.any() else np.nan)
                    m = mutual_knn_mask(tA, tB, round(k * len(A) / 500)).numpy()  # whole subsample
                    r, c = np.nonzero(m)
                    out.append(dict(dataset=name, seed=seed, space=space, k=k, anchors_per_batch=np.mean(n_anchor),
                                    precision=np.nanmean(same), true_pair=np.mean(r == c)))
                    print(out[-1], flush=True)
            rand = (np.unique(lab[known], return_counts=True)[1] / known.sum()) ** 2
            print(f"{name} seed {seed}: same-type share of random pairs {rand.sum():.3f}", flush=True)
    import pandas as pd
    df = pd.DataFrame(out)
    print(df.drop(columns="seed").groupby(["dataset", "space", "k"]).agg(["mean", "std"]).round(3).to_string())


if __name__ == "__main__":
    main()
