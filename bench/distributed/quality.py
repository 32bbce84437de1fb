"""Embedding quality with devices=2 (2 CPU processes, gloo) vs the single-process fit, on the
PDAC demo pair (scRNA cell types, ST spots), uniPort, over seeds; the settings of
tests/test_distributed.py's quality test. Untrained (0 steps... 1 step) model as the control.

    PYTHONPATH=python python bench/distributed/quality.py --seeds 0 1 2 --out bench/out/distributed/quality.tsv
"""
from __future__ import annotations

import argparse
import resource
import time
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import torch

import scferry as sf
from scferry import metrics

ROOT = Path(__file__).resolve().parents[2]
SETTINGS = dict(max_iter=300, n_common_genes=1000, n_specific_genes=300, progress=False)


def load():
    rna = ad.read_h5ad(ROOT / "inst" / "extdata" / "pdac_demo_scrna.h5ad")
    st = ad.read_h5ad(ROOT / "inst" / "extdata" / "pdac_demo_st.h5ad")
    return rna, st


def score(rna, st) -> dict[str, float]:
    """Mixing of the two datasets (batch entropy) and separation of the scRNA cell types
    (silhouette on the scRNA cells)."""
    Z = np.concatenate([rna.obsm["X_scferry"], st.obsm["X_scferry"]])
    batches = np.array(["rna"] * rna.n_obs + ["st"] * st.n_obs)
    return {"batch_entropy": metrics.batch_entropy(Z, batches, seed=0),
            "silhouette": metrics.silhouette(rna.obsm["X_scferry"], rna.obs["cell_type"].astype(str).to_numpy())}


def fit_and_score(rna, st, seed: int, devices: int, **kw) -> dict:
    a, b = rna.copy(), st.copy()
    t, c = time.time(), time.process_time()
    ch = resource.getrusage(resource.RUSAGE_CHILDREN)
    m = sf.integrate({"rna": a, "st": b}, seed=seed, devices=devices, accelerator="cpu", **{**SETTINGS, **kw})
    ch2 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = time.process_time() - c + (ch2.ru_utime + ch2.ru_stime) - (ch.ru_utime + ch.ru_stime)
    return {"seed": seed, "devices": devices, **score(a, b), "wall_s": time.time() - t, "cpu_s": cpu,
            "steps": m.train_params["iterations_run"]}


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--out", default="bench/out/distributed/quality.tsv")
    args = p.parse_args()
    torch.set_num_threads(1)
    rna, st = load()
    rows = []
    for seed in args.seeds:
        for devices in (1, 2):
            rows.append(fit_and_score(rna, st, seed, devices))
            print(rows[-1], flush=True)
        rows.append({**fit_and_score(rna, st, seed, 1, max_iter=1), "devices": "untrained (1 step)"})
        print(rows[-1], flush=True)
    df = pd.DataFrame(rows)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(args.out, sep="\t", index=False)
    print(df.groupby("devices")[["batch_entropy", "silhouette", "cpu_s", "wall_s"]].agg(["mean", "std"]).round(3))
