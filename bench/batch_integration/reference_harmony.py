#!/usr/bin/env python
"""Harmony (harmonypy, in bench/.venvs/scvi or bench/.venvs/harmony) on the benchmark's PCA baseline.

    bench/.venvs/harmony/bin/python bench/batch_integration/reference_harmony.py DATASET_DIR --out DATASET_DIR/seed0/harmony [--seed 0]

Reads OUT/../pca/embedding.npy (50 PCs, written by bench_integration.py's pca run of the same seed;
``--pca pca@TAG``: a variant of that PCA)
and DATASET_DIR/input/obs.tsv; writes OUT/{embedding.npy,timing.json}. Harmony's
defaults (theta 2, sigma 0.1, nclust min(N/30, 100), 10 rounds); ``run_seconds`` is Harmony
alone: add the pca run's for the whole pipeline.
"""
import argparse
import json
import time
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "common"))
from procstat import status_mb  # noqa: E402

t0 = time.perf_counter()

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import harmonypy  # noqa: E402

p = argparse.ArgumentParser()
p.add_argument("ddir", type=Path)
p.add_argument("--seed", type=int, default=0)
p.add_argument("--threads", type=int, default=1)
p.add_argument("--out", type=Path, required=True, help="output folder; reads OUT/../PCA")
p.add_argument("--pca", default="pca", help="the PCA run to correct (a variant: pca@TAG)")
args = p.parse_args()
pca = np.load(args.out.parent / args.pca / "embedding.npy").astype(np.float64)
obs = pd.read_csv(args.ddir / "input" / "obs.tsv", sep="\t", keep_default_na=False, dtype=str)
c0, t1 = time.process_time(), time.perf_counter()
ho = harmonypy.run_harmony(pca, obs, "batch", random_state=args.seed, ncores=args.threads,
                           verbose=False)
run_s, cpu_s = time.perf_counter() - t1, time.process_time() - c0
Z = np.asarray(ho.Z_corr)
Z = Z if Z.shape[0] == len(obs) else Z.T  # harmonypy keeps PCs x cells
out = args.out
out.mkdir(parents=True, exist_ok=True)
np.save(out / "embedding.npy", Z.astype(np.float32))
json.dump({"run_seconds": run_s, "cpu_seconds": cpu_s, "total_seconds": time.perf_counter() - t0,
           "peak_rss_mb": status_mb("VmHWM"),
           "harmonypy": harmonypy.__version__ if hasattr(harmonypy, "__version__") else ""},
          open(out / "timing.json", "w"), indent=1)
