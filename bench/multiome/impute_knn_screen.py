#!/usr/bin/env python
"""kNN imputation across modalities from saved embeddings (issue 19, goal 3): how the neighbours
are found and weighted, scored as bench_multiome.py scores imputation (mean per-feature Pearson r
on the held-apart cells). Reads a bench_multiome.py output folder (all_rna.npy / all_other.npy /
imputed_features.txt per method); trains nothing.

    ~/.virtualenvs/r-scferry/bin/python bench/multiome/impute_knn_screen.py --out DIR \
        --datasets teaseq cite snare snare_peaks scicar --seeds 0 1 2 --methods minnet minnet_nolabel

Variants: ``cross`` = the query's k nearest training cells of the target modality in the joint
space (sf.impute's kNN before this study); ``same`` = its k nearest training cells of its *own*
modality, whose paired target measurements are averaged (the pairing of the training cells);
``both`` = neighbours by the mean of each training cell's two embeddings. Weights: ``uniform`` or
``gauss`` (exp(-d^2 / d_k^2), d_k the k-th neighbour's distance). ``+qs`` = the imputed values then
averaged over the query's 15 nearest other query cells (transductive; for reference only).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE)]
from bench_multiome import feature_pearson, load, measured, split, impute_score  # noqa: E402
from datasets import shared_data_dir  # noqa: E402  (bench/common, put on the path by bench_multiome)


def knn(Z, q, k):
    from scferry.neighbors import knn_between
    return knn_between(Z, q, k)


def weights(dist, kind):
    """Uniform weights, or the package's Gaussian kernel (``scferry.tl.project.knn_weights``)."""
    if kind == "uniform":
        return np.full_like(dist, 1.0 / dist.shape[1])
    from scferry.tl.project import knn_weights
    return knn_weights(dist)


def pearson(P, T):
    return float(feature_pearson(P, T).mean())


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--out", type=Path, nargs="+", required=True, help="bench_multiome output folder(s), first found wins")
    p.add_argument("--datasets", nargs="+", default=["teaseq", "cite", "snare", "snare_peaks", "scicar"])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--methods", nargs="+", default=["minnet", "minnet_nolabel"])
    p.add_argument("--ks", type=int, nargs="+", default=[5, 15, 30, 50, 100])
    p.add_argument("--data-dir", default=shared_data_dir())
    p.add_argument("--save", type=Path, default=None)
    a = p.parse_args()
    rows = []
    for ds in a.datasets:
        for seed in a.seeds:
            rna, oth, other = load(ds, a.data_dir, 2000, seed)
            test = split(rna.obs["cell_type"].astype(str), 0.2, seed)
            tgt_ad = oth if other == "adt" else rna  # protein from RNA, RNA from ATAC
            for m in a.methods:
                mdir = next((o / ds / f"seed{seed}" / m for o in a.out if (o / ds / f"seed{seed}" / m / "all_rna.npy").exists()), None)
                if mdir is None or not (mdir / "imputed_features.txt").exists():
                    continue
                R, O = np.load(mdir / "all_rna.npy"), np.load(mdir / "all_other.npy")
                feats = (mdir / "imputed_features.txt").read_text().split()
                idx = tgt_ad.var_names.get_indexer(feats)
                vals = measured(tgt_ad.X)[:, idx]  # log1p CP10k over all features, as sf.impute
                V_tr, T_te = vals[~test], vals[test]
                # target modality's training embedding, the query's own modality (train and held apart)
                Zt, Zs, q = (O[~test], R[~test], R[test]) if other == "adt" else (R[~test], O[~test], O[test])
                base = impute_score(mdir, measured(tgt_ad.X)[test], tgt_ad.var_names).get("impute_r")  # as saved
                for k in a.ks:
                    for space, Z, qq in (("cross", Zt, q), ("same", Zs, q), ("both", (Zt + Zs) / 2, q)):
                        d, nn = knn(Z, qq, k)
                        for wk in ("uniform", "gauss"):
                            W = weights(d, wk)
                            P = np.einsum("ik,ikf->if", W, V_tr[nn])
                            r = pearson(P, T_te)
                            rows.append(dict(dataset=ds, seed=seed, method=m, k=k, space=space, weight=wk,
                                             qs=False, r=r, saved=base))
                            if k == 15 and wk == "uniform":  # query smoothing, for reference
                                _, nq = knn(qq, qq, 16)
                                Ps = P[nq].mean(1)
                                rows.append(dict(dataset=ds, seed=seed, method=m, k=k, space=space, weight=wk,
                                                 qs=True, r=pearson(Ps, T_te), saved=base))
                print(ds, seed, m, "saved", None if base is None else round(base, 3), flush=True)
    df = pd.DataFrame(rows)
    if a.save:
        df.to_csv(a.save, sep="\t", index=False)
    piv = df.groupby(["space", "weight", "qs", "k", "dataset"])["r"].mean().unstack("dataset")
    piv["mean"] = piv.mean(1)
    pd.set_option("display.width", 200)
    print(piv.round(3).to_string())


if __name__ == "__main__":
    main()
