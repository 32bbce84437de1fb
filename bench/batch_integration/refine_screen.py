"""Screen ``sf.refine`` variants on the runner's saved PCAs, several variants in one process.

For each dataset, variant and seed: ``sf.refine(seed=s, **params)`` on ``OUT/DATASET/seedS/pca``
(written by ``bench_integration.py --methods pca``), scored by the runner's ``score`` (no Leiden);
prints the seed means and each seed's transfer / batch entropy / silhouette @ selected iterate.
Labels are used for scoring only. Example (RESULTS.md, sf.refine second pass)::

    P=~/.virtualenvs/r-scferry/bin/python
    $P bench/batch_integration/bench_integration.py --no-score --seeds 0 1 2 3 4 5 6 7 8 9 \\
        --datasets symphony pdac --methods pca --out bench/out/r16
    $P bench/batch_integration/refine_screen.py --out bench/out/r16 --seeds 0 1 2 3 4 5 6 7 8 9 \\
        --variants '{"default": {}, "former": {"soft_bandwidth": 0.5, "union_size": "prototypes"}}'
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import torch

import bench_integration as bi


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", nargs="+", default=["symphony", "pdac"])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--variants", required=True, help="JSON: name -> sf.refine keyword arguments")
    ap.add_argument("--out", default="bench/out/integration")
    a = ap.parse_args()
    import scferry as sf
    torch.set_num_threads(1)
    variants = json.loads(a.variants)
    for d in a.datasets:
        ddir = Path(a.out) / d
        obs = pd.read_csv(ddir / "input" / "obs.tsv", sep="\t", keep_default_na=False, dtype=str)
        for name, params in variants.items():
            rows = []
            for seed in a.seeds:
                A = ad.AnnData(obs=obs.set_index("cell"))
                A.obsm["X_pca"] = np.load(ddir / f"seed{seed}" / "pca" / "embedding.npy")
                rec = sf.refine(A, basis="X_pca", seed=seed, device="cpu", progress=False, **params)
                s = bi.score(A.obsm["X_scferry_refined"], obs, seed=seed, leiden_seeds=0)
                rows.append((s.get("transfer", np.nan), s["batch_entropy"], s["silhouette"],
                             rec["best_iter"]))
            R = np.array(rows, dtype=float)
            per = " ".join(f"{x[0]:.3f}/{x[1]:.3f}/{x[2]:.3f}@{int(x[3])}" for x in R)
            tr = f"{R[:, 0].mean():.4f}" if np.isfinite(R[:, 0]).all() else "-"
            print(f"{d:8s} {name:14s} transfer {tr} entropy {R[:, 1].mean():.3f} "
                  f"silhouette {R[:, 2].mean():.4f} | {per}", flush=True)


if __name__ == "__main__":
    main()
