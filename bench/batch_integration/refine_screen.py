"""Screen ``sf.refine`` variants on the runner's saved PCAs, several variants in one process.

For each dataset, variant and seed: ``sf.refine(seed=s, **params)`` on ``OUT/DATASET/seedS/INPUT``
(``--input``, default ``pca``: written by ``bench_integration.py --methods pca``; any method's
saved embedding, e.g. ``uniport``), scored by the runner's ``score`` (no Leiden); prints the
input's and each variant's seed means, and each seed's transfer / batch entropy / silhouette @
selected iterate (0: the input kept) and the input's mixing (``input_mixing``). Labels are used
for scoring only. Example (RESULTS.md, sf.refine second pass)::

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
    ap.add_argument("--input", default="pca", help="the saved embedding refined (a method's folder)")
    ap.add_argument("--out", default="bench/out/integration")
    a = ap.parse_args()
    import scferry as sf
    torch.set_num_threads(1)
    variants = json.loads(a.variants)
    for d in a.datasets:
        ddir = Path(a.out) / d
        obs = pd.read_csv(ddir / "input" / "obs.tsv", sep="\t", keep_default_na=False, dtype=str)
        inputs = {seed: np.load(ddir / f"seed{seed}" / a.input / "embedding.npy") for seed in a.seeds}
        rows = [(*_scores(X, obs, seed), 0, np.nan) for seed, X in inputs.items()]
        _print(d, f"{a.input} (input)", rows)
        for name, params in variants.items():
            rows = []
            for seed in a.seeds:
                A = ad.AnnData(obs=obs.set_index("cell"))
                A.obsm["X_in"] = inputs[seed]
                rec = sf.refine(A, basis="X_in", seed=seed, device="cpu", progress=False, **params)
                rows.append((*_scores(A.obsm["X_scferry_refined"], obs, seed), rec["best_iter"],
                             rec.get("input_mixing", np.nan)))
            _print(d, name, rows)


def _scores(X: np.ndarray, obs: pd.DataFrame, seed: int) -> tuple[float, float, float]:
    s = bi.score(X, obs, seed=seed, leiden_seeds=0)
    return s.get("transfer", np.nan), s["batch_entropy"], s["silhouette"]


def _print(dataset: str, name: str, rows: list[tuple]) -> None:
    R = np.array(rows, dtype=float)
    per = " ".join(f"{x[0]:.3f}/{x[1]:.3f}/{x[2]:.4f}@{int(x[3])}"
                   + (f" mix {x[4]:.2f}" if np.isfinite(x[4]) else "") for x in R)
    tr = f"{R[:, 0].mean():.4f}" if np.isfinite(R[:, 0]).all() else "-"
    print(f"{dataset:8s} {name:16s} transfer {tr} entropy {R[:, 1].mean():.3f} "
          f"silhouette {R[:, 2].mean():.4f} | {per}", flush=True)

if __name__ == "__main__":
    main()
