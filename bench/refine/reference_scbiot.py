#!/usr/bin/env python
"""The published scBIOT refinement (scbiot 1.2.1, bench/.venvs/scbiot) on a saved embedding.

    bench/.venvs/scbiot/bin/python bench/refine/reference_scbiot.py EMBEDDING OBS_TSV OUT_DIR \
        [--batch-key batch] [--seed 0] [--threads 1]

EMBEDDING is a cells x d ``.npy`` (or an ``.h5ad`` with ``--obsm KEY``), OBS_TSV has one row per
cell with the batch column. Runs scBIOT's documented call on an existing embedding,

    scb.ot.integrate(adata, obsm_key=..., batch_key=..., out_key="X_scbiot", random_state=seed)

with everything else at its defaults and no labels (unsupervised, as our refine). Writes
OUT_DIR/embedding.npy (float32, rows as the input) and OUT_DIR/timing.json: ``run_seconds``
(the integrate call alone), ``total_seconds`` (from interpreter start, imports included),
``peak_rss_mb`` (VmHWM, the whole process), scBIOT's own returned metrics and versions.
"""
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
p.add_argument("embedding", type=Path)
p.add_argument("obs", type=Path)
p.add_argument("out", type=Path)
p.add_argument("--obsm", default=None, help="obsm key when EMBEDDING is .h5ad")
p.add_argument("--batch-key", default="batch")
p.add_argument("--seed", type=int, default=0)
p.add_argument("--threads", type=int, default=1)
args = p.parse_args()

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(args.threads)
import anndata as ad  # noqa: E402
import scbiot as scb  # noqa: E402
import scbiot.ot  # noqa: E402,F401
from importlib.metadata import version  # noqa: E402

obs = pd.read_csv(args.obs, sep="\t", keep_default_na=False, dtype=str)
if args.embedding.suffix == ".h5ad":
    if not args.obsm:
        sys.exit("--obsm is required with an .h5ad input")
    X = np.asarray(ad.read_h5ad(args.embedding).obsm[args.obsm], dtype=np.float32)
else:
    X = np.load(args.embedding).astype(np.float32)
if X.shape[0] != len(obs):
    sys.exit(f"embedding has {X.shape[0]} rows, obs {len(obs)}")
adata = ad.AnnData(obs=pd.DataFrame({"batch": obs[args.batch_key].to_numpy()},
                                    index=[str(i) for i in range(len(obs))]))
adata.obs["batch"] = adata.obs["batch"].astype("category")
adata.obsm["X_emb"] = X  # a neutral key: scBIOT infers "rna" (no LSI normalisation)
rss_before = status_mb("VmRSS")

t1, c1 = time.perf_counter(), time.process_time()
adata, metrics = scb.ot.integrate(adata, obsm_key="X_emb", batch_key="batch", out_key="X_scbiot",
                                  random_state=args.seed)
run_s, cpu_s = time.perf_counter() - t1, time.process_time() - c1

Z = np.asarray(adata.obsm["X_scbiot"], dtype=np.float32)
args.out.mkdir(parents=True, exist_ok=True)
np.save(args.out / "embedding.npy", Z)


def plain(v):
    try:
        return float(v) if np.ndim(v) == 0 else str(v)
    except (TypeError, ValueError):
        return str(v)


json.dump({"run_seconds": run_s, "run_cpu_seconds": cpu_s, "total_seconds": time.perf_counter() - t0,
           "cpu_seconds": time.process_time(),  # the whole process, as the batch study's rows
           "peak_rss_mb": status_mb("VmHWM"), "rss_mb_before_run": rss_before,
           "n_cells": int(X.shape[0]), "n_dims_in": int(X.shape[1]), "n_dims_out": int(Z.shape[1]),
           "torch_threads": torch.get_num_threads(), "loadavg": os.getloadavg(),
           "scbiot_metrics": {str(k): plain(v) for k, v in dict(metrics).items()},
           "versions": {m: version(m) for m in ("scbiot", "torch", "numpy", "pot", "scikit-learn")}},
          open(args.out / "timing.json", "w"), indent=1)
print(f"scbiot: {X.shape[0]} cells, {run_s:.1f} s, peak {status_mb('VmHWM'):.0f} MiB")
