#!/usr/bin/env python
"""scMODAL on SNARE cortex RNA vs ATAC gene activity (issue 17, goal 3), unpaired (the second
modality's nuclei shuffled; the pairing used only to score), against Seurat CCA on the shared genes
and a random embedding on the same nuclei, over seeds and settings.

    OMP_NUM_THREADS=1 nice -n 5 ~/.virtualenvs/r-scferry/bin/python bench/diagonal/scmodal_snare.py \
        --cells 600 --steps 150 --seeds 0 1 2
"""
from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import load  # noqa: E402

CONFIGS = {
    "default": {},
    "k5": {"n_neighbors": 5},
    "k5_anchor10": {"n_neighbors": 5, "anchor_weight": 10.0},
    "reference_weights": {"geo_weight": 10.0, "cycle_weight": 10.0},
}


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--cells", type=int, default=600)
    p.add_argument("--steps", type=int, default=150)
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--configs", nargs="+", default=list(CONFIGS))
    p.add_argument("--linked", default="cca")
    args = p.parse_args()
    import scferry as sf
    from scferry import metrics
    from scferry.methods.scmodal_cca import seurat_cca
    from scferry.pp import normalize_log1p
    rows = []
    for seed in args.seeds:
        rna, act, _, _ = load("snare_gene", args.cells, seed)
        perm = np.random.default_rng(seed).permutation(act.n_obs)
        U, V = seurat_cca(normalize_log1p(rna.X), normalize_log1p(act.X), n_components=20, seed=seed)
        rng = np.random.default_rng(seed + 100)
        base = {"cca": metrics.foscttm(U, V),
                "random": metrics.foscttm(rng.normal(size=(rna.n_obs, 20)), rng.normal(size=(rna.n_obs, 20)))}
        for name in args.configs:
            a, b = rna.copy(), act[perm].copy()
            b.obs_names = [f"c{i}" for i in range(b.n_obs)]
            t = time.process_time()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                model = sf.integrate({"rna": a, "atac": b}, method="scmodal", linked=args.linked, seed=seed,
                                     max_iter=args.steps, batch_size=min(600, args.cells), progress=False,
                                     n_specific_genes=1000, **CONFIGS[name])
            zb = np.empty_like(b.obsm["X_scferry"])
            zb[perm] = b.obsm["X_scferry"]
            rows.append({"seed": seed, "config": name, "foscttm": metrics.foscttm(a.obsm["X_scferry"], zb),
                         **base, "cpu_s": time.process_time() - t,
                         "anchors": float(np.mean([h["mnn_pairs"] for h in model.history]))})
            print(json.dumps(rows[-1]), flush=True)
    import pandas as pd
    df = pd.DataFrame(rows)
    print(df.groupby("config")[["foscttm", "cca", "random", "cpu_s", "anchors"]].agg(["mean", "std"]).round(3).to_string())
    return 0


if __name__ == "__main__":
    sys.exit(main())
