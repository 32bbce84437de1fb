#!/usr/bin/env python
"""Scale of sf.deconvolve: 10^5 spots against 10^5 reference cells (each size in its own process).

    OMP_NUM_THREADS=1 nice -n 5 ~/.virtualenvs/r-scferry/bin/python bench/deconvolution/scale.py
    ... scale.py --cells 100000 --spots 100000

Reference: ``--cells`` cells drawn with replacement from the PDAC-A inDrop cells (7 types with at
least 20 cells, all 19,736 genes, real sparse counts). Spots, as Visium HD 16 um bins: each sums
1-3 cells drawn from the other half of the cells, then keeps each count with probability 0.3
(binomial thinning: bins are shallower than single cells). Timed separately: ``sf.integrate``
(uniPort, ``--sf-iters`` steps, no kept plan: the default readout reads counts, not the
embedding) and ``sf.deconvolve`` at its defaults; peak resident memory (VmHWM) of the process and
the largest resident growth during ``sf.deconvolve`` alone (sampled every 20 ms).
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
sys.path.insert(0, str(HERE))


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


def child(n_cells: int, n_spots: int, sf_iters: int, seed: int) -> dict:
    import anndata as ad
    import pandas as pd
    import torch
    torch.set_num_threads(1)
    import scferry as sf
    from spots import load_reference
    X, labels, genes, types, _ = load_reference(Path("/work/shared/data"), "pdac", 20)
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
    Y.data = rng.binomial(Y.data.astype(np.int64), 0.3).astype(np.float32)
    Y.eliminate_zeros()
    spots = ad.AnnData(Y, obs=pd.DataFrame(index=[f"s{i}" for i in range(n_spots)]), var=pd.DataFrame(index=genes))
    before = rss_mb()
    t0, c0 = time.perf_counter(), time.process_time()
    model = sf.integrate({"ref": ref, "spots": spots}, method="uniport", max_iter=sf_iters, patience=None,
                         seed=seed, keep_plan=False, progress=False)
    t1, c1 = time.perf_counter(), time.process_time()
    start = rss_mb()
    with Sampler() as s:
        props = sf.deconvolve(model, reference="ref", spots="spots", label_key="cell_type", progress=False)
    t2, c2 = time.perf_counter(), time.process_time()
    return {"cells": n_cells, "spots": n_spots, "genes": len(genes), "types": len(types),
            "spot_nnz_median": float(np.median(np.diff(Y.indptr))), "input_rss_mb": before,
            "integrate_s": t1 - t0, "integrate_cpu_s": c1 - c0, "deconvolve_s": t2 - t1,
            "deconvolve_cpu_s": c2 - c1, "deconvolve_growth_mb": s.peak - start,
            "peak_rss_mb": rss_mb("VmHWM"), "nan_rows": int(props.isna().any(axis=1).sum())}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cells", type=int, nargs="+", default=[100_000])
    p.add_argument("--spots", type=int, nargs="+", default=[100_000])
    p.add_argument("--sf-iters", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--_child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args._child:
        print(json.dumps(child(args.cells[0], args.spots[0], args.sf_iters, args.seed)))
        return 0
    for n, m in zip(args.cells, args.spots):
        out = subprocess.run([sys.executable, __file__, "--_child", "--cells", str(n), "--spots", str(m),
                              "--sf-iters", str(args.sf_iters), "--seed", str(args.seed)],
                             capture_output=True, text=True)
        if out.returncode:
            print(out.stderr[-3000:])
            return out.returncode
        print(out.stdout.strip().splitlines()[-1], flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
