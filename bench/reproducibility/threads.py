"""Same seed, different torch thread counts: how far apart are the embeddings?

integrate() promises the same embedding for the same seed on CPU with the same thread count.
This measures what changes with the thread count (floating-point sums reduced in another order
inside matmuls), on the shipped PDAC demo pair, uniPort horizontal mode. Writes a markdown
table to stdout.

    OMP_NUM_THREADS=2 python bench/reproducibility/threads.py --iters 300 --seeds 0 1 2
"""
from __future__ import annotations

import argparse
import resource
import time
import warnings
from pathlib import Path

import anndata as ad
import numpy as np
import torch

import scferry as sf

DEMO = Path(__file__).resolve().parents[2] / "inst" / "extdata"


def run(rna, st, seed, threads, iters):
    torch.set_num_threads(threads)
    t0 = time.process_time()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", sf.ScferryWarning)
        sf.integrate({"rna": rna, "st": st}, seed=seed, max_iter=iters, progress=False)
    return np.vstack([rna.obsm["X_scferry"], st.obsm["X_scferry"]]), time.process_time() - t0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--iters", type=int, default=300)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = ap.parse_args()
    rna = ad.read_h5ad(DEMO / "pdac_demo_scrna.h5ad")
    st = ad.read_h5ad(DEMO / "pdac_demo_st.h5ad")
    print(f"PDAC demo ({rna.n_obs} cells + {st.n_obs} spots), uniPort, {args.iters} steps\n")
    print("| seed | 1 thread again: max abs diff | 1 vs 2 threads: max abs diff | relative (max diff / embedding sd) | CPU s (1 thr / 2 thr) |")
    print("|---|---|---|---|---|")
    for seed in args.seeds:
        a, ta = run(rna, st, seed, 1, args.iters)
        a2, _ = run(rna, st, seed, 1, args.iters)
        b, tb = run(rna, st, seed, 2, args.iters)
        d = np.abs(a - b).max()
        print(f"| {seed} | {np.abs(a - a2).max():.1e} | {d:.1e} | {d / a.std():.1e} | {ta:.0f} / {tb:.0f} |")
    print(f"\npeak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")


if __name__ == "__main__":
    main()
