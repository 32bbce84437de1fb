#!/usr/bin/env python
"""Pamona PBMC: does partial GW (``mass`` < 1, Pamona's formulation) drop the cell types one
modality lacks? Labels are used only to read the couplings (each metacell's majority type) and
to score. For each mass: transfer RNA -> ATAC, the same-type share of the coupling, and where
each type's mass goes; then partial GW started from the balanced solution.

    OMP_NUM_THREADS=1 nice -n 12 ~/.virtualenvs/r-scferry/bin/python bench/diagonal/partial_pamona.py \
        --mass 1 0.8 --refine 0.9 0.8 0.76 0.7
"""
from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from common import load, score  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--mass", nargs="+", type=float, default=[1.0, 0.8])
    p.add_argument("--refine", nargs="*", type=float, default=[0.9, 0.8, 0.76, 0.7])
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    import scferry as sf
    from scferry import gw
    rna, atac, _, _ = load("pamona", 2000, args.seed)
    lr, la = (a.obs["cell_type"].astype(str).to_numpy() for a in (rna, atac))
    types = sorted(set(lr) | set(la))

    def shares(meta, lab):
        P = np.zeros((len(meta.mass), len(types)))
        np.add.at(P, (meta.nearest[:, 0], [types.index(x) for x in lab]), 1)
        return P / np.maximum(P.sum(1, keepdims=True), 1)

    def transfer(al, T):
        own = [m.lift(m.centroids) for m in al.meta]
        proj = [al.meta[s].lift((C @ al.meta[1 - s].centroids) / np.maximum(C.sum(1, keepdims=True), 1e-300))
                for s, C in ((0, T), (1, T.T))]
        return score(np.hstack([own[0], proj[0]]), np.hstack([proj[1], own[1]]), lr, la, False)["transfer"]

    balanced = None
    for mass in args.mass:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = sf.integrate({"rna": rna, "atac": atac}, method="gw", seed=args.seed, progress=False, mass=mass)
        al = model.alignment
        TT = shares(al.meta[0], lr).T @ al.coupling @ shares(al.meta[1], la)
        print(f"mass {mass}: transfer {transfer(al, al.coupling):.3f}, same-type share "
              f"{np.trace(TT) / TT.sum():.3f}")
        for i, t in enumerate(types):
            to = types[int(np.argmax(TT[i]))] if TT[i].sum() > 0 else "-"
            frm = types[int(np.argmax(TT[:, i]))] if TT[:, i].sum() > 0 else "-"
            print(f"  {t:18s} RNA sends {TT[i].sum():.3f} mostly to {to:16s} ATAC receives "
                  f"{TT[:, i].sum():.3f} mostly from {frm}")
        if mass == 1.0:
            balanced = al
    if balanced is not None:
        D = [gw.geodesic(m.centroids, balanced.params["k"]) for m in balanced.meta]
        for mass in args.refine:
            T = gw.gw_coupling(D[0], D[1], balanced.meta[0].mass, balanced.meta[1].mass,
                               epsilon=balanced.params["epsilon"], init=balanced.coupling, anneal=False, mass=mass)
            print(f"partial (mass {mass}) started from the balanced solution: transfer {transfer(balanced, T):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
