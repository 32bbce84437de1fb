#!/usr/bin/env python
"""Iterative refinement past the linked features (MaxFuse-style, ``scferry.gw.refine``): screen of
its settings against the current ``method="gw"`` embedding on the same cells (issue 17).

One ``method="gw"`` fit per dataset and seed at the package defaults (what a user gives: shared
genes, the gene-protein table, the TSS table, nothing for Pamona / sci-CAR) with ``refine=0``;
then ``scferry.gw.refine`` from its joint embedding under each setting, scored by FOSCTTM /
transfer RNA -> other; and the RNA types without an ATAC counterpart (Pamona's transfer ceiling).

    OMP_NUM_THREADS=1 nice -n 5 ~/.virtualenvs/r-scferry/bin/python bench/diagonal/refine_screen.py \
        --datasets snare_gene snare_peaks cite pamona scicar --seeds 0
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from common import gw_fit, report_rows, score, screen_args  # noqa: E402

# name -> (start space, refine kwargs, final space)
CONFIGS = {
    "w_it1": ("joint", dict(n_iter=1), "refined"),
    "w_it3": ("joint", dict(n_iter=3), "refined"),
    "w_it3+joint": ("joint", dict(n_iter=3), "refined+joint"),
    "w_it3_comp10": ("joint", dict(n_iter=3, n_components=10), "refined"),
    "w_it3_smooth10": ("joint", dict(n_iter=3, n_smooth=10), "refined"),
    "w_it3_from_linked": ("linked", dict(n_iter=3), "refined"),
    "w_it3_aug": ("joint", dict(n_iter=3), "refined", "aug"),
    "w_it1_aug": ("joint", dict(n_iter=1), "refined", "aug"),
    "w_it1_aug+joint": ("joint", dict(n_iter=1), "refined+joint", "aug"),
    "w_it2_aug+joint": ("joint", dict(n_iter=2), "refined+joint", "aug"),
    "w_it1+joint": ("joint", dict(n_iter=1), "refined+joint"),
    "w_it2": ("joint", dict(n_iter=2), "refined"),
    "w_it3_aug+joint": ("joint", dict(n_iter=3), "refined+joint", "aug"),
    "it1": ("joint", dict(n_iter=1, weight=False), "refined"),
    "it3": ("joint", dict(n_iter=3, weight=False), "refined"),
    "it5": ("joint", dict(n_iter=5, weight=False), "refined"),
    "it3_keep50": ("joint", dict(n_iter=3, keep=0.5, weight=False), "refined"),
    "it3_keep95": ("joint", dict(n_iter=3, keep=0.95, weight=False), "refined"),
    "it3_smooth10": ("joint", dict(n_iter=3, n_smooth=10, weight=False), "refined"),
    "it3_comp10": ("joint", dict(n_iter=3, n_components=10, weight=False), "refined"),
    "it3+joint": ("joint", dict(n_iter=3, weight=False), "refined+joint"),
    "it3_from_linked": ("linked", dict(n_iter=3, weight=False), "refined"),
}


def main() -> int:
    args = screen_args(["snare_gene", "snare_peaks", "cite", "pamona", "scicar"], "configs", CONFIGS,
                       HERE.parent / "out" / "diag6" / "screen")
    from scferry import gw
    for name in args.datasets:
        for seed in args.seeds:
            rna, oth, other, paired, model, t_gw = gw_fit(name, args.max_cells, seed, refine=0)
            lr, lo = rna.obs["cell_type"], oth.obs["cell_type"]
            rows = {}
            al = model.alignment
            jx, jy = al.joint()
            rows["gw (current default)"] = {**score(jx, jy, lr, lo, paired), "cpu_s": t_gw}
            for cfg in args.configs:
                start, kw, final, *space = CONFIGS[cfg]
                Z = al.embeddings
                if space == ["aug"]:  # own spaces plus the linked features' CCA coordinates
                    if al.linked_embeddings is None:
                        continue
                    Z = tuple(np.hstack([z, c]) for z, (c, _) in zip(Z, al.linked_embeddings))
                if start == "linked":
                    if al.linked_embeddings is None:
                        continue
                    (cx, sx), (cy, sy) = al.linked_embeddings
                    E = (np.hstack([cx, sx]), np.hstack([sy, cy]))
                else:
                    E = (jx, jy)
                t = time.process_time()
                (ex, ey), info = gw.refine(Z, E, seed=seed, **kw)
                cpu = time.process_time() - t
                if final == "refined+joint":
                    nx = np.sqrt((ex ** 2).sum(1).mean()) / np.sqrt((jx ** 2).sum(1).mean())
                    ex, ey = np.hstack([ex, jx * nx]), np.hstack([ey, jy * nx])
                rows[cfg] = {**score(ex, ey, lr, lo, paired), "cpu_s": cpu,
                             "corr1": info["corr"][-1][:3], "pivot_d": info["pivot_distance"]}
            if name == "pamona":
                rows["_ceiling"] = pamona_ceiling(jx, jy, lr, lo)
            report_rows(rows, name, seed, args.out)
    return 0


def pamona_ceiling(zr, zo, lr, lo) -> dict:
    """Pamona: which RNA types have no ATAC counterpart, their share of RNA cells, and the GW
    embedding's transfer with the RNA reference restricted to the shared types (what a method
    could reach if it knew which RNA cells have no counterpart)."""
    from scferry import metrics
    lr, lo = np.asarray(lr, str), np.asarray(lo, str)
    only_rna = sorted(set(lr) - set(lo))
    shared = np.isin(lr, lo)
    tgt = np.isin(lo, lr)
    pred_all, _ = metrics.knn_label_transfer(zr, lr, zo[tgt], k=15)
    pred_sh, _ = metrics.knn_label_transfer(zr[shared], lr[shared], zo[tgt], k=15)
    return {"rna_only": only_rna, "rna_only_share": float(1 - shared.mean()),
            "atac_only": sorted(set(lo) - set(lr)),
            "to_rna_only": float(np.isin(pred_all, only_rna).mean()),
            "transfer_all_ref": metrics.transfer_accuracy(lo[tgt], pred_all),
            "transfer_shared_ref": metrics.transfer_accuracy(lo[tgt], pred_sh)}


if __name__ == "__main__":
    sys.exit(main())
