#!/usr/bin/env python
"""Scale of sf.deconvolve: 10^5 spots against 10^5 reference cells (each size in its own process).

    OMP_NUM_THREADS=1 nice -n 5 ~/.virtualenvs/r-scferry/bin/python bench/deconvolution/scale.py
    ... scale.py --cells 100000 --spots 100000
    ... scale.py --cells 100000 --spots 10000 --n-states 5      # cell states within types

Reference: ``--cells`` cells drawn with replacement from the Symphony PBMC cells (1,200 real
cells, 9 types, 1,767 genes, ~205 non-zeros per cell; the gene panel keeps the inputs of 2 x 10^5
cells small on a shared machine: the fit's cost grows with the spots' non-zeros and the types). Spots, as Visium HD 16 um bins: each sums
1-3 cells drawn from the other half of the cells, then keeps each count with probability 0.5
(binomial thinning, THIN: bins hold a few hundred counts). Timed: sf.deconvolve's default path
(readout="counts", defaults) called as study.py's run_scferry calls it (the function
sf.deconvolve runs, on the same Dataset objects, without the integration that readout does not
use); peak resident memory (VmHWM) of the process, which holds the inputs too, and the largest
resident growth during the fit alone (sampled every 20 ms).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp

HERE = Path(__file__).resolve().parent
THIN = 0.5  # each count of the summed cells kept with this probability (bins are shallow)
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "common"))
from datasets import shared_data_dir  # noqa: E402


def rss_mb(key: str = "VmRSS") -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


class Sampler:
    def __init__(self):
        self.peak, self._stop = rss_mb(), threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, rss_mb())

    def __enter__(self):
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()


def child(n_cells: int, n_spots: int, seed: int, max_iter: int | None, n_states: int = 1) -> dict:
    import anndata as ad
    import pandas as pd
    import torch
    torch.set_num_threads(1)
    import scferry as sf
    pbmc = ad.read_h5ad(Path(shared_data_dir()) / "symphony_pbmc.h5ad")
    X, labels = sp.csr_matrix(pbmc.X, dtype=np.float32), pbmc.obs["cell_type"].astype(str).to_numpy()
    genes, types = list(pbmc.var_names), sorted(set(labels))
    rng = np.random.default_rng(seed)
    half = rng.permutation(len(labels))
    a, b = half[: len(half) // 2], half[len(half) // 2:]
    rows = rng.choice(a, n_cells)
    ref = ad.AnnData(X[rows], obs=pd.DataFrame({"cell_type": labels[rows]}, index=[f"c{i}" for i in range(n_cells)]),
                     var=pd.DataFrame(index=genes))
    k = rng.integers(1, 4, n_spots)
    cols = rng.choice(b, k.sum())
    owner = np.repeat(np.arange(n_spots), k)
    Y = (sp.csr_matrix((np.ones(len(cols), np.float32), (owner, np.arange(len(cols)))),
                       shape=(n_spots, len(cols))) @ X[cols]).tocsr()
    Y.data = rng.binomial(Y.data.astype(np.int64), THIN).astype(np.float32)
    Y.eliminate_zeros()
    spots = ad.AnnData(Y, obs=pd.DataFrame(index=[f"s{i}" for i in range(n_spots)]), var=pd.DataFrame(index=genes))
    before = rss_mb()
    import inspect
    from scferry.data import Dataset
    from scferry.tl.deconvolve import _signature_fit
    defaults = {k: v.default for k, v in inspect.signature(sf.deconvolve).parameters.items()
                if k in ("platform", "min_share", "prior_shape", "select_genes", "max_iter", "seed")}
    if max_iter:
        defaults["max_iter"] = max_iter
    defaults["n_states"] = n_states
    t1, c1 = time.perf_counter(), time.process_time()
    start = rss_mb()
    with Sampler() as s:
        props, params, _ = _signature_fit(Dataset("ref", ref), Dataset("spots", spots), ref.obs["cell_type"],
                                  "ref", "spots", progress=False, **defaults)
    t2, c2 = time.perf_counter(), time.process_time()
    return {"max_iter": defaults["max_iter"], "cells": n_cells, "spots": n_spots, "genes": len(genes),
            "genes_fitted": params["n_genes"], "types": len(types), "n_states": n_states,
            "states": int(sum(params["states_per_type"].values())),
            "spot_nnz_median": float(np.median(np.diff(Y.indptr))), "input_rss_mb": before,
            "deconvolve_s": t2 - t1,
            "deconvolve_cpu_s": c2 - c1, "deconvolve_growth_mb": s.peak - start,
            "peak_rss_mb": rss_mb("VmHWM"), "nan_rows": int(props.isna().any(axis=1).sum())}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cells", type=int, nargs="+", default=[100_000])
    p.add_argument("--spots", type=int, nargs="+", default=[100_000])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-iter", type=int, default=None,
                   help="EM iterations at most (default: sf.deconvolve's); a few give memory and time per iteration")
    p.add_argument("--n-states", type=int, default=1, help="sf.deconvolve's n_states (cell states per type)")
    p.add_argument("--_child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args._child:
        print(json.dumps(child(args.cells[0], args.spots[0], args.seed, args.max_iter, args.n_states)))
        return 0
    for n, m in zip(args.cells, args.spots):
        out = subprocess.run([sys.executable, __file__, "--_child", "--cells", str(n), "--spots", str(m),
                              "--seed", str(args.seed), "--n-states", str(args.n_states)]
                             + (["--max-iter", str(args.max_iter)] if args.max_iter else []),
                             capture_output=True, text=True)
        if out.returncode:
            print(out.stderr[-3000:])
            return out.returncode
        print(out.stdout.strip().splitlines()[-1], flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
