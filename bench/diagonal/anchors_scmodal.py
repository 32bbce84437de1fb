#!/usr/bin/env python
"""Quality of scMODAL's MNN anchors on SNARE cortex RNA vs ATAC gene activity (issue 17, goal 3):
per linked space and k, over minibatches drawn as scMODAL draws them (independent cells of each
modality), the number of anchors, the fraction joining nuclei of the same type, and over the
whole subsample (both modalities' cells together) the fraction joining a nucleus to its own
pair. Labels and pairing are used only to score.

    OMP_NUM_THREADS=1 nice -n 5 ~/.virtualenvs/r-scferry/bin/python bench/diagonal/anchors_scmodal.py
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import load  # noqa: E402
from scferry.methods.scmodal import _zscore  # noqa: E402
from scferry.methods.scmodal_cca import seurat_cca  # noqa: E402
from scferry.neighbors import mutual_knn_mask  # noqa: E402
from scferry.pp import highly_variable, normalize_log1p  # noqa: E402


def spaces(rna, act, seed):
    X1, X2 = normalize_log1p(rna.X), normalize_log1p(act.X)
    hv = highly_variable(X1, rna.var_names, 2000)
    i = rna.var_names.get_indexer(hv)
    A, B = _zscore(X1[:, i]), _zscore(X2[:, i])
    yield "shared genes, z-scored (linked='shared')", A, B
    U, V = seurat_cca(X1[:, i], X2[:, i], n_components=20, seed=seed)
    yield "Seurat CCA 20 (linked='cca')", np.asarray(U, np.float32), np.asarray(V, np.float32)
    from sklearn.decomposition import PCA
    P = PCA(30, random_state=seed).fit(np.vstack([A, B]))
    yield "joint PCA 30 of z-scored shared genes", P.transform(A).astype(np.float32), P.transform(B).astype(np.float32)


def main():
    out = []
    for seed in (0, 1, 2):
        rna, act, _, _ = load("snare_gene", 2000, seed)
        lab = np.asarray(rna.obs["cell_type"], str)
        known = lab != "Mis"
        rng = np.random.default_rng(seed)
        for name, A, B in spaces(rna, act, seed):
            tA, tB = torch.as_tensor(A), torch.as_tensor(B)
            for k in (5, 30):
                same, n_anchor = [], []
                for _ in range(20):
                    ia, ib = rng.choice(len(A), 500, replace=False), rng.choice(len(B), 500, replace=False)
                    m = mutual_knn_mask(tA[ia], tB[ib], k).numpy()
                    r, c = np.nonzero(m)
                    ok = known[ia][r] & known[ib][c]
                    n_anchor.append(len(r))
                    same.append(np.mean(lab[ia][r][ok] == lab[ib][c][ok]) if ok.any() else np.nan)
                m = mutual_knn_mask(tA, tB, k * 4).numpy()  # whole subsample: k per 500 cells
                r, c = np.nonzero(m)
                out.append(dict(seed=seed, space=name, k=k, anchors_per_batch=np.mean(n_anchor),
                                same_type=np.nanmean(same), true_pair=np.mean(r == c),
                                pair_is_anchor=np.mean(m[np.arange(len(A)), np.arange(len(A))])))
                print(out[-1], flush=True)
    import pandas as pd
    df = pd.DataFrame(out)
    same_rand = pd.Series(lab[known]).value_counts(normalize=True).pow(2).sum()
    print(df.groupby(["space", "k"]).agg(["mean", "std"]).drop(columns="seed").round(3).to_string())
    print(f"same-type fraction of random pairs: {same_rand:.3f}")


if __name__ == "__main__":
    main()
