#!/usr/bin/env python
"""The published DAVAE (scbean 0.5.6, bench/.venvs/scbean, Python 3.8 + TensorFlow 2.4 CPU) on
the benchmark's input, run as the paper's scripts run it.

    bench/.venvs/scbean/bin/python bench/batch_integration/reference_davae.py DATASET_DIR [--seed 0] [--threads 1]

Reads DATASET_DIR/input/{counts.npz,obs.tsv,genes.txt} (raw counts, written by
bench_integration.py); writes DATASET_DIR/NAME/{embedding.npy,timing.json} (``--name``, default
scbean), rows in obs.tsv order (NaN for any cell scbean's own filtering drops).

What runs (scbean's API, defaults of the davae_paper scripts):
1. one AnnData per batch; the labelled scRNA first where only it has labels (scbean's
   ``spatial_rna_preprocessing`` gives the scRNA reconstruction weight 1, the spots 0);
2. ``tl.davae_preprocessing(datasets, n_top_genes=2000)``: filter genes/cells, counts per
   million + log1p, 2,000 HVGs ranked by how many datasets select them; with fewer than 2,000
   shared genes (symphony: 1,767) ``hvg=False``, i.e. all shared genes (its HVG ranking indexes
   past the end otherwise). It sets ``loss_weight`` 1 for the first dataset and 0 for the others;
3. ``davae.fit_integration(adata, batch_num=k, split_by='batch_label', domain_lambda=3.0,
   epochs=25, batch_size=128, hidden_layers=[128, 64, 32, 5])`` (mode 'DACVAE', Adam lr 0.01);
   the embedding is ``obsm['X_davae']``. ``--steps N`` trains the whole epochs closest to N steps
   instead (to compare at scferry's budget).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "common"))
from procstat import status_mb  # noqa: E402

t0 = time.perf_counter()

p = argparse.ArgumentParser()
p.add_argument("ddir", type=Path)
p.add_argument("--seed", type=int, default=0)
p.add_argument("--threads", type=int, default=1)
p.add_argument("--epochs", type=int, default=25)
p.add_argument("--steps", type=int, default=None, help="instead of --epochs: whole epochs to about this many steps")
p.add_argument("--name", default="scbean", help="output folder name")
p.add_argument("--domain-lambda", type=float, default=3.0)
args = p.parse_args()
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import scipy.sparse as sp  # noqa: E402
import anndata  # noqa: E402
import tensorflow as tf  # noqa: E402

tf.config.threading.set_intra_op_parallelism_threads(args.threads)
tf.config.threading.set_inter_op_parallelism_threads(args.threads)
tf.random.set_seed(args.seed)
np.random.seed(args.seed)
import scbean.model.davae as davae  # noqa: E402  (the module: scbean.model re-exports vimcca's fit_integration)
import scbean.tools.utils as tl  # noqa: E402

inp = args.ddir / "input"
X = sp.load_npz(inp / "counts.npz").tocsr().astype(np.float32)
obs = pd.read_csv(inp / "obs.tsv", sep="\t", keep_default_na=False, dtype=str)
genes = (inp / "genes.txt").read_text().split()
names = list(dict.fromkeys(obs["batch"]))
labelled = [n for n in names if (obs.loc[obs["batch"] == n, "cell_type"] != "").all()]
order = labelled + [n for n in names if n not in labelled] if len(labelled) == 1 else names
datasets = []
for n in order:
    rows = np.flatnonzero((obs["batch"] == n).to_numpy())
    a = anndata.AnnData(X[rows], obs=obs.iloc[rows].set_index("cell"), var=pd.DataFrame(index=genes))
    datasets.append(a)

t1 = time.perf_counter()
adata = tl.davae_preprocessing(datasets, n_top_genes=2000, hvg=len(genes) > 2000)
t2 = time.perf_counter()
per_epoch = int(np.ceil(adata.n_obs / 128))
epochs = args.epochs if args.steps is None else max(1, round(args.steps / per_epoch))
out_adata = davae.fit_integration(adata, batch_num=len(order), split_by="batch_label",
                                  domain_lambda=args.domain_lambda, epochs=epochs,
                                  batch_size=128, sparse=True, hidden_layers=[128, 64, 32, 5])
t3 = time.perf_counter()

emb = pd.DataFrame(out_adata.obsm["X_davae"], index=out_adata.obs_names)
emb = emb.reindex(obs["cell"]).to_numpy(dtype=np.float32)
out = args.ddir / args.name
out.mkdir(parents=True, exist_ok=True)
np.save(out / "embedding.npy", emb)
json.dump({"run_seconds": t3 - t1, "preprocess_seconds": t2 - t1, "fit_seconds": t3 - t2,
           "total_seconds": time.perf_counter() - t0,
           "peak_rss_mb": status_mb("VmHWM"),
           "iterations": epochs * per_epoch, "epochs": epochs, "cells_dropped_by_scbean": int(np.isnan(emb).any(axis=1).sum()),
           "n_genes": int(adata.n_vars), "dataset_order": order, "tensorflow": tf.__version__},
          open(out / "timing.json", "w"), indent=1)
