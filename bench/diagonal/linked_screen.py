#!/usr/bin/env python
"""Which linked features, and how many CCA components, the linked CCA that ``method="gw"`` and
scMODAL start from should use (issue 17): all shared features (current) against the RNA's most
variable ones among them (MaxFuse's and Seurat's choice), and 20 / 30 / 40 components.

One ``method="gw"`` fit per dataset and seed (``refine=0``, package defaults, what a user gives);
then, per variant, the linked CCA recomputed (``scferry.gw.linked_cca``) and put in place of the
fit's (cell coordinates, their own-modality neighbour means and the metacell means the joint
embedding projects; the GW coupling is kept), and the joint embedding and its refinement
(``Alignment.refined``) scored. Scores: FOSCTTM / transfer (``common.score``) of the linked CCA
alone, the joint embedding and the refined embedding.

    OMP_NUM_THREADS=1 nice -n 5 ~/.virtualenvs/r-scferry/bin/python bench/diagonal/linked_screen.py \
        --datasets snare_gene cite snare_peaks --seeds 0 --out bench/out/diag7/linked
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from common import gw_fit, linked_table, score, screen_args, TSS_FILE  # noqa: E402

VARIANTS = {"all_c20": (None, 20), "all_c30": (None, 30), "all_c40": (None, 40),
            "hvg2000_c20": (2000, 20), "hvg1000_c20": (1000, 20), "hvg500_c20": (500, 20),
            "hvg2000_c30": (2000, 30),
            # own-modality embedding of count data from z-scored HVGs (Seurat / scanpy / MaxFuse)
            "scaled_all_c20": (None, 20, "scaled"), "scaled50_all_c20": (None, 20, "scaled50"),
            # n_smooth of the joint embedding's own-modality neighbour means (default 40)
            "all_c20_s80": (None, 20, None, 80), "all_c20_s120": (None, 20, None, 120)}


def scaled_embedding(X, n_components: int, seed: int) -> np.ndarray:
    """``scferry.gw.embed_modality``'s "counts" embedding with each selected gene z-scored (clipped
    at 10) before the PCA, as Seurat's ScaleData / scanpy's scale do."""
    from scferry.pp import normalize_log1p, pca
    X = normalize_log1p(X).astype(np.float64)
    mean = np.asarray(X.mean(axis=0)).ravel()
    var = np.asarray(X.multiply(X).mean(axis=0)).ravel() - mean ** 2
    keep = np.sort(np.argsort(-var)[:2000])
    keep = keep[var[keep] > 0]
    D = X[:, keep].toarray()
    D = np.clip((D - D.mean(0)) / D.std(0), -10, 10)
    Z = pca(D, n_components, seed).astype(np.float64)
    return (Z / np.sqrt((Z ** 2).sum(1).mean())).astype(np.float32)


def linked_mats(name, rna, oth):
    """(RNA linked counts, other linked counts, linked names) as ``method="gw"`` builds them."""
    import pandas as pd
    import scferry as sf
    if name == "snare_peaks":
        ga = sf.tl.gene_activity(oth, pd.read_csv(TSS_FILE, sep="\t"))
        genes = rna.var_names.intersection(ga.var_names)
        return (rna.X[:, rna.var_names.get_indexer(genes)], ga.X[:, ga.var_names.get_indexer(genes)])
    t = linked_table(name, rna, oth)
    return rna.X[:, rna.var_names.get_indexer(t["rna"])], oth.X[:, oth.var_names.get_indexer(t["other"])]


def main() -> int:
    args = screen_args(["snare_gene", "cite", "snare_peaks"], "variants", VARIANTS,
                       HERE.parent / "out" / "diag7" / "linked")
    from scferry import gw
    from scferry.pp import highly_variable, normalize_log1p
    for name in args.datasets:
        for seed in args.seeds:
            rna, oth, other, paired, model, _ = gw_fit(name, args.max_cells, seed, refine=0)
            lr, lo = rna.obs["cell_type"], oth.obs["cell_type"]
            al = model.alignment
            L = linked_mats(name, rna, oth)
            rows = {}
            j0 = al.joint()
            Z0, s0 = al.embeddings, al.params["n_smooth"]
            for v in args.variants:
                n_hvg, n_comp, *more = VARIANTS[v]
                own = more[0] if more else None
                n_smooth = more[1] if len(more) > 1 else s0
                al.params["n_smooth"] = n_smooth  # read by Alignment.refined too
                al.embeddings = Z0
                if own:  # count modalities re-embedded from scaled genes
                    nc = 50 if own == "scaled50" else 30
                    al.embeddings = tuple(scaled_embedding(a.X, nc, seed) if kd == "counts" else z
                                          for a, kd, z in zip((rna, oth), al.params["kinds"], Z0))
                LL = L
                if n_hvg is not None:
                    if n_hvg >= L[0].shape[1]:
                        continue
                    import pandas as pd
                    names = pd.Index(np.arange(L[0].shape[1]).astype(str))
                    keep = highly_variable(normalize_log1p(L[0]), names, n_hvg)
                    idx = np.sort(np.asarray(keep).astype(int))
                    LL = (L[0][:, idx], L[1][:, idx])
                # the same sub-seed as scferry.gw.align's linked CCA (the 5th integer of its generator)
                rng = np.random.default_rng(seed)
                sub = [int(rng.integers(2 ** 31)) for _ in range(5)][-1]
                cca = gw.linked_cca(LL, seed=sub, n_components=n_comp)
                al.linked_embeddings = gw.denoised_linked(al.embeddings, cca, n_smooth, seed)
                al.linked_means = tuple(gw._metacell_means(np.asarray(E, np.float64), m)
                                        for E, m in zip(cca, al.meta))
                jx, jy = al.joint()
                (rx, ry), _ = al.refined(1, seed=seed)
                rows[v] = {"n_linked": LL[0].shape[1],
                           "cca": score(cca[0], cca[1], lr, lo, paired),
                           "joint": score(jx, jy, lr, lo, paired),
                           "refined": score(rx, ry, lr, lo, paired)}
                r = rows[v]
                if v == "all_c20":  # must reproduce the fit's own joint embedding
                    r["same_as_fit"] = bool(np.allclose(jx, j0[0], atol=1e-4) and np.allclose(jy, j0[1], atol=1e-4))
                print(f"| {name} | {seed} | {v} | {r['n_linked']} | " + " | ".join(
                    f"{r[k]['foscttm']:.3f} / {r[k]['transfer']:.3f}" for k in ("cca", "joint", "refined"))
                    + f" | {r.get('same_as_fit', '')} |",
                    flush=True)
            (args.out / f"{name}__{seed}.json").write_text(json.dumps(rows, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
