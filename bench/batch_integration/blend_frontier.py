#!/usr/bin/env python
"""Blends of an integrated and an unintegrated embedding on one dataset (issue 16, a diagnostic).

On kang no embedding measured reaches both bars (LOBO transfer >= scVI's, batch entropy >=
Harmony's). This asks whether a point between the two sides is above the line joining them:
each blend is ``[A / rms(A), w * B / rms(B)]`` (rms: root-mean-square row norm) of two embeddings
the study already wrote (``METHOD/embedding.npy`` under ``--out``), scored with the study's own
``score`` (no Leiden). Nothing is fitted here.

    OMP_NUM_THREADS=1 PYTHONPATH=python ~/.virtualenvs/r-scferry/bin/python \
        bench/batch_integration/blend_frontier.py --out bench/out/s30_batch --dataset kang --seeds 0 1 2 \
        --pairs uniport@lat24:pca@u16 harmony@u16:pca@u16 --weights 0 0.3 0.5 0.7
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_integration as bi  # noqa: E402


def unit_rms(E: np.ndarray) -> np.ndarray:
    E = np.asarray(E, np.float64)
    return E / max(float(np.sqrt((E ** 2).sum(1).mean())), 1e-12)


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--out", type=Path, required=True, help="the study's output folder")
    p.add_argument("--dataset", default="kang")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--pairs", nargs="+", default=["uniport@lat24:pca@u16", "harmony@u16:pca@u16"],
                   help="INTEGRATED:UNINTEGRATED method folders")
    p.add_argument("--weights", nargs="+", type=float, default=[0.0, 0.3, 0.5, 0.7])
    args = p.parse_args()
    base = args.out / args.dataset
    obs = pd.read_csv(base / "input" / "obs.tsv", sep="\t", keep_default_na=False)
    rows = []
    for pair in args.pairs:
        a, b = pair.split(":")
        for seed in args.seeds:
            A, B = (unit_rms(np.load(base / f"seed{seed}" / m / "embedding.npy")) for m in (a, b))
            for w in args.weights:
                s = bi.score(np.hstack([A, w * B]), obs, seed=seed, leiden_seeds=0)
                rows.append({"blend": f"{a} + {w:g} x {b}", "seed": seed, **s})
    df = pd.DataFrame(rows)
    g = df.groupby("blend", sort=False)[["transfer", "batch_entropy", "silhouette"]]
    mean, sd = g.mean(), g.std()
    print("| blend | seeds | transfer | batch entropy | silhouette |\n|---|---|---|---|---|")
    for name in mean.index:
        cells = " | ".join(f"{mean.loc[name, c]:.3f} ± {sd.loc[name, c]:.3f}" for c in mean.columns)
        print(f"| {name} | {len(args.seeds)} | {cells} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
