#!/usr/bin/env python
"""method="gw" at 10^5 cells per modality: SNARE cortex RNA and ATAC peaks resampled with noise
(cells drawn with replacement, each count binomially thinned at p = 0.8, so no two copies are
identical), aligned unpaired; CPU seconds and peak RSS (this process, imports included). The
pairing of the resampled copies scores FOSCTTM on a random 5,000 cells.

    OMP_NUM_THREADS=1 nice -n 12 ~/.virtualenvs/r-scferry/bin/python bench/diagonal/scale.py --cells 100000 [--tss]
"""
from __future__ import annotations

import argparse
import json
import resource
import sys
import time
import warnings
from pathlib import Path

import anndata as ad
import numpy as np
import scipy.sparse as sp

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from common import load, user_inputs  # noqa: E402


def resample(X, idx, rng):
    X = sp.csr_matrix(X[idx], dtype=np.float32)
    X.data = rng.binomial(X.data.astype(np.int64), 0.8).astype(np.float32)
    X.eliminate_zeros()
    return X


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--cells", type=int, default=100_000)
    p.add_argument("--other", default="snare_peaks")
    p.add_argument("--tss", action="store_true",
                   help="give the TSS table (peaks aligned through their gene activity: fused GW)")
    p.add_argument("--out", type=Path, default=HERE.parent / "out" / "diagonal")
    args = p.parse_args()
    import scferry as sf
    from scferry.metrics import foscttm
    rna, oth, other, _ = load(args.other)
    rng = np.random.default_rng(0)
    idx = rng.integers(0, rna.n_obs, args.cells)
    names = [f"c{i}" for i in range(args.cells)]
    r = ad.AnnData(resample(rna.X, idx, rng), obs={"cell_type": rna.obs["cell_type"].to_numpy()[idx]},
                   var=rna.var)
    o = ad.AnnData(resample(oth.X, idx, rng), obs={"cell_type": oth.obs["cell_type"].to_numpy()[idx]},
                   var=oth.var)
    r.obs_names = o.obs_names = names
    keep = (np.asarray(r.X.sum(1)).ravel() > 0) & (np.asarray(o.X.sum(1)).ravel() > 0)
    r, o = r[keep].copy(), o[keep].copy()
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t = time.process_time()
    w = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = sf.integrate({"rna": r, other: o}, method="gw", progress=False,
                             **(user_inputs(args.other, r, o, other) if args.tss else {}))
    cpu, wall = time.process_time() - t, time.perf_counter() - w
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    sub = np.random.default_rng(1).choice(r.n_obs, 5000, replace=False)
    f = foscttm(r.obsm["X_scferry"][sub], o.obsm["X_scferry"][sub])
    res = {"cells": int(r.n_obs), "other": args.other, "fused": model.params["fused"],
           "n_starts": model.params["n_starts"], "cpu_s": cpu, "wall_s": wall,
           "peak_mib": peak, "peak_before_fit_mib": base, "foscttm_5000": f}
    print(res)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"scale_{args.cells}{'_tss' if args.tss else ''}.json").write_text(json.dumps(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
