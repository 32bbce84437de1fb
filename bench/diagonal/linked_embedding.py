#!/usr/bin/env python
"""Which joint embedding to build when the modalities have linked features (fused GW): the
evidence for ``scferry.gw.Alignment.joint`` (issue 17). One GW fit per dataset (package defaults,
what a user would give: shared genes for SNARE gene activity, the gene-protein table for CITE-seq),
then FOSCTTM / transfer of several embeddings built from it, against the Seurat CCA of the linked
features on the same cells:

- ``joint_own_spaces``: [own-space metacell coordinates, barycentric projection] (the embedding
  without linked features);
- ``cca_metacell``: [CCA, metacell-smoothed CCA] (X) vs [metacell-smoothed, CCA] (Y);
- ``cca_knn{k}``: the same with the mean over the cell and its k nearest cells in its own
  modality's embedding; ``cca_knn{k}_in_cca``: neighbours searched in the CCA space instead;
- ``cca_knn{k}+gw``: plus the GW projection of the other modality's CCA coordinates (the default,
  ``n_smooth`` = k); ``cca_knn{k}+joint``: plus ``joint_own_spaces``.

    OMP_NUM_THREADS=1 nice -n 12 ~/.virtualenvs/r-scferry/bin/python bench/diagonal/linked_embedding.py \
        --datasets snare_gene cite --seed 0
"""
from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from common import load, score, user_inputs  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--datasets", nargs="+", default=["snare_gene", "cite"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-cells", type=int, default=2000)
    p.add_argument("--k", nargs="+", type=int, default=[5, 10, 20, 40])
    args = p.parse_args()
    import scferry as sf
    from scferry import gw
    for name in args.datasets:
        rna, oth, other, paired = load(name, args.max_cells, args.seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            extra = user_inputs(name, rna, oth, other)
            model = sf.integrate({"rna": rna, other: oth}, method="gw", seed=args.seed, progress=False, **extra)
        al = model.alignment
        (U, _), (V, _) = al.linked_embeddings
        lr, lo = rna.obs["cell_type"], oth.obs["cell_type"]

        def sc(a, b):
            s = score(np.asarray(a), np.asarray(b), lr, lo, paired)
            return f"{s['foscttm']:.4f} / {s['transfer']:.3f}"

        T = al.coupling
        means = [gw._metacell_means(np.asarray(c, np.float64), m) for c, m in zip((U, V), al.meta)]
        pU = al.meta[0].lift((T @ means[1]) / T.sum(1, keepdims=True))
        pV = al.meta[1].lift((T.T @ means[0]) / T.sum(0)[:, None])
        own = [m.lift(m.centroids) for m in al.meta]
        jr, jo = np.hstack([own[0], al.barycentric(0)]), np.hstack([al.barycentric(1), own[1]])
        mU, mV = al.meta[0].lift(means[0]), al.meta[1].lift(means[1])
        rows = {"cca (baseline, the fused term's space)": sc(U, V),
                "joint_own_spaces": sc(jr, jo), "cca_metacell": sc(np.hstack([U, mU]), np.hstack([mV, V]))}
        for k in args.k:
            sU, sV = (gw._neighbour_mean(z, c, k, args.seed) for z, c in zip(al.embeddings, (U, V)))
            cU, cV = (gw._neighbour_mean(c, c, k, args.seed) for c in (U, V))
            rows[f"cca_knn{k}"] = sc(np.hstack([U, sU]), np.hstack([sV, V]))
            rows[f"cca_knn{k}_in_cca"] = sc(np.hstack([U, cU]), np.hstack([cV, V]))
            rows[f"cca_knn{k}+gw"] = sc(np.hstack([U, sU, pU]), np.hstack([sV, V, pV]))
            rows[f"cca_knn{k}+joint"] = sc(np.hstack([U, sU, jr / 2 ** .5]), np.hstack([sV, V, jo / 2 ** .5]))
        print(f"\n{name}, seed {args.seed} (FOSCTTM / transfer RNA->other)")
        for key, v in rows.items():
            print(f"| {key} | {v} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
