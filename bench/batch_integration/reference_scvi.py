#!/usr/bin/env python
"""scVI (scvi-tools 1.4.2, bench/.venvs/scvi) on the benchmark's raw counts.

    bench/.venvs/scvi/bin/python bench/batch_integration/reference_scvi.py DATASET_DIR [--seed 0] [--threads 1]

Reads DATASET_DIR/input/{counts.npz,obs.tsv,genes.txt}; writes DATASET_DIR/<--out>/{embedding.npy,
timing.json}. As the scvi-tools tutorials: 2,000 HVGs by scanpy's ``seurat_v3`` flavour on the raw
counts with ``batch_key`` (all genes when there are fewer), ``SCVI.setup_anndata(batch_key=
"batch")``, ``SCVI()`` at its defaults (10 latent dimensions, 1 hidden layer of 128, ZINB),
``train()`` at its defaults (Adam 1e-3, 128 cells per step, 10% validation) on the CPU, except the
epoch budget: ``--max-steps`` caps scvi's epochs heuristic ``min(round(20000 / n * 400), 400)`` at
that many optimiser steps (epochs = max(1, round(max_steps / ceil(0.9 n / 128)))); 0 = no cap.
``cpu_seconds``: process CPU time of the HVG selection + set-up + training + latent.
"""
import argparse
import json
import math
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "common"))
from procstat import status_mb  # noqa: E402

t0 = time.perf_counter()

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import scipy.sparse as sp  # noqa: E402
import anndata as ad  # noqa: E402
import scanpy as sc  # noqa: E402
import torch  # noqa: E402
import scvi  # noqa: E402

p = argparse.ArgumentParser()
p.add_argument("ddir", type=Path)
p.add_argument("--seed", type=int, default=0)
p.add_argument("--threads", type=int, default=1)
p.add_argument("--max-steps", type=int, default=0)
p.add_argument("--out", type=Path, required=True, help="output folder")
args = p.parse_args()
torch.set_num_threads(args.threads)
scvi.settings.seed = args.seed
inp = args.ddir / "input"
X = sp.load_npz(inp / "counts.npz").tocsr()
obs = pd.read_csv(inp / "obs.tsv", sep="\t", keep_default_na=False, dtype=str)
genes = (inp / "genes.txt").read_text().split()
adata = ad.AnnData(X, obs=obs.set_index("cell"), var=pd.DataFrame(index=genes))
c0, t1 = time.process_time(), time.perf_counter()
if adata.n_vars > 2000:
    sc.pp.highly_variable_genes(adata, n_top_genes=2000, flavor="seurat_v3", batch_key="batch",
                                subset=True)
adata = adata.copy()
n = adata.n_obs
epochs = min(round((20000 / n) * 400), 400)  # scvi-tools' get_max_epochs_heuristic
steps_per_epoch = math.ceil(0.9 * n / 128)
if args.max_steps and epochs * steps_per_epoch > args.max_steps:
    epochs = max(1, round(args.max_steps / steps_per_epoch))
scvi.model.SCVI.setup_anndata(adata, batch_key="batch")
model = scvi.model.SCVI(adata)
model.train(max_epochs=epochs, accelerator="cpu", devices=1, enable_progress_bar=False)
Z = model.get_latent_representation()
cpu_s, run_s = time.process_time() - c0, time.perf_counter() - t1
out = args.out
out.mkdir(parents=True, exist_ok=True)
np.save(out / "embedding.npy", np.asarray(Z, dtype=np.float32))
json.dump({"run_seconds": run_s, "cpu_seconds": cpu_s, "total_seconds": time.perf_counter() - t0,
           "peak_rss_mb": status_mb("VmHWM"), "iterations": epochs * steps_per_epoch,
           "epochs": epochs, "n_genes": int(adata.n_vars)},
          open(out / "timing.json", "w"), indent=1)
