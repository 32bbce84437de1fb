"""Steps per second of uniPort, DAVAE (sf.integrate) and sf.refine on GPU vs CPU at 10^5 / 10^6 cells,
and the fraction of a training step's wall time spent in CUDA kernels (torch.profiler).

Cells: the shipped PDAC demo (inst/extdata) resampled with binomial thinning (p=0.5) over its
2,000 most-expressed genes: scRNA 80% of the cells, ST 20%. refine: a 50-d PCA of the pooled demo,
resampled with Gaussian jitter, batch = dataset.

    python bench/scale/bench_gpu.py --out DIR [--budget-s 480] [--sizes 100000,1000000]

On the lent GPU machine scferry's dependencies that its image lacks (anndata, scanpy, POT, umap-learn,
pynndescent, natsort, legacy-api-wrap, session-info2, array-api-compat) were carried as wheels.
SCFERRY_PY=<folder> runs the scferry package found in that folder instead of this checkout's.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import anndata as ad
import numpy as np
import scipy.sparse as sp
import torch

ROOT = os.path.abspath(os.path.dirname(__file__))
while not os.path.exists(os.path.join(ROOT, "pyproject.toml")):
    ROOT = os.path.dirname(ROOT)
sys.path.insert(0, os.environ.get("SCFERRY_PY") or os.path.join(ROOT, "python"))
import scferry as sf  # noqa: E402
sfi = sys.modules["scferry.integrate"]

T0 = time.time()
RESULTS: list[dict] = []


def resample(adata, n, rng, genes):
    X = adata[:, genes].X.tocsr()
    rows = rng.integers(0, X.shape[0], n)
    Y = X[rows].astype(np.float32)
    Y.data = rng.binomial(Y.data.astype(np.int64), 0.5).astype(np.float32)
    Y.eliminate_zeros()
    out = ad.AnnData(Y)
    out.obs_names = [f"c{i}" for i in range(n)]
    out.var_names = list(genes)
    return out


def timed_fit(kernel_steps: int, dev: torch.device):
    """Wrap scferry's fit: time it, then time `kernel_steps` more steps (data vs compute) under the profiler."""
    orig = ORIG_FIT
    box = {}

    def fit(module, sampler, **kw):
        sync = (lambda: torch.cuda.synchronize()) if dev.type == "cuda" else (lambda: None)
        sync(); t = time.perf_counter()
        hist = orig(module, sampler, **kw)
        sync(); box["fit_s"] = time.perf_counter() - t
        box["steps"] = hist[-1]["iteration"] if hist else 0
        if kernel_steps:
            opt = torch.optim.Adam(module.parameters(), lr=1e-6)
            module.train()
            data_s = comp_s = 0.0
            from torch.profiler import ProfilerActivity, profile
            acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if dev.type == "cuda" else [])
            with profile(activities=acts) as prof:
                for _ in range(kernel_steps):
                    sync(); t1 = time.perf_counter()
                    b = sampler()
                    sync(); t2 = time.perf_counter()
                    rec = module.loss(b); opt.zero_grad(); rec.total.backward(); opt.step()
                    sync(); t3 = time.perf_counter()
                    data_s += t2 - t1; comp_s += t3 - t2
            module.eval()
            box["data_s_per_step"] = data_s / kernel_steps
            box["compute_s_per_step"] = comp_s / kernel_steps
            if dev.type == "cuda":
                kern_us = sum(e.self_device_time_total for e in prof.key_averages()
                              if e.device_type is not None and "cuda" in str(e.device_type).lower())
                box["kernel_fraction_of_step"] = kern_us / 1e6 / (data_s + comp_s)
        return hist

    return fit, box


def bench_integrate(method, n, device, steps, rna, st, genes, kernel_steps):
    rng = np.random.default_rng(0)
    a, b = resample(rna, int(n * 0.8), rng, genes), resample(st, n - int(n * 0.8), rng, genes)
    dev = torch.device(device)
    fit, box = timed_fit(kernel_steps, dev)
    sfi.fit = fit
    t = time.perf_counter()
    try:
        sf.integrate({"rna": a, "st": b}, method=method, max_iter=steps, patience=None, device=device,
                     progress=False, seed=0)
    finally:
        sfi.fit = ORIG_FIT
    total = time.perf_counter() - t
    row = {"what": method, "cells": n, "device": device, "steps": box.get("steps"),
           "steps_per_s": box["steps"] / box["fit_s"], "fit_s": box["fit_s"], "total_s": total,
           **{k: v for k, v in box.items() if k not in ("steps", "fit_s")}}
    if device == "cuda":
        row["peak_gpu_mib"] = torch.cuda.max_memory_allocated() / 2**20
        torch.cuda.reset_peak_memory_stats()
    report(row)


def bench_refine(n, device, iters, base, codes):
    rng = np.random.default_rng(0)
    rows = rng.integers(0, len(base), n)
    X = base[rows] + rng.normal(0, 0.05 * base.std(0), (n, base.shape[1])).astype(np.float32)
    a = ad.AnnData(np.zeros((n, 1), np.float32))
    a.obsm["X_pca"] = X.astype(np.float32)
    a.obs["batch"] = np.asarray(codes)[rows].astype(str)
    if device == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    rec = sf.refine(a, basis="X_pca", batch_key="batch", max_iter=iters, device=device, progress=False,
                    seed=0)
    if device == "cuda":
        torch.cuda.synchronize()
    s = time.perf_counter() - t
    row = {"what": "refine", "cells": n, "device": device, "iterations": rec["n_iter"],
           "iters_per_s": rec["n_iter"] / s, "total_s": s}
    if device == "cuda":
        row["peak_gpu_mib"] = torch.cuda.max_memory_allocated() / 2**20
        torch.cuda.reset_peak_memory_stats()
    report(row)


def report(row):
    row["elapsed_s"] = time.time() - T0
    RESULTS.append(row)
    print(json.dumps(row), flush=True)
    with open(os.path.join(ARGS.out, "gpu_results.json"), "w") as fh:
        json.dump(RESULTS, fh, indent=1)


ORIG_FIT = sfi.fit

if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--out", required=True)
    p.add_argument("--budget-s", type=float, default=480)
    p.add_argument("--sizes", default="100000,1000000")
    p.add_argument("--gpu-steps", type=int, default=400)
    p.add_argument("--cpu-steps", type=int, default=40)
    ARGS = p.parse_args()
    os.makedirs(ARGS.out, exist_ok=True)
    rna = ad.read_h5ad(os.path.join(ROOT, "inst/extdata/pdac_demo_scrna.h5ad"))
    st = ad.read_h5ad(os.path.join(ROOT, "inst/extdata/pdac_demo_st.h5ad"))
    tot = np.asarray(rna.X.sum(0)).ravel() + np.asarray(st.X.sum(0)).ravel()
    genes = rna.var_names[np.argsort(-tot)[:2000]]
    import scanpy as sc
    pooled = ad.concat([rna, st], label="batch", keys=["rna", "st"])
    sc.pp.normalize_total(pooled, 1e4); sc.pp.log1p(pooled)
    base = sc.pp.pca(pooled.X.toarray(), 50, random_state=0).astype(np.float32)
    codes = pooled.obs["batch"].to_numpy()
    cuda = torch.cuda.is_available()
    print("torch", torch.__version__, "cuda", cuda, torch.cuda.get_device_name(0) if cuda else "", "threads",
          torch.get_num_threads(), flush=True)
    sizes = [int(s) for s in ARGS.sizes.split(",")]
    plan = []
    for n in sizes:
        for m in ("uniport", "davae"):
            if cuda:
                plan.append(("int", m, n, "cuda", ARGS.gpu_steps, 20))
            if n == sizes[0]:
                plan.append(("int", m, n, "cpu", ARGS.cpu_steps, 3))
        if cuda:
            plan.append(("ref", None, n, "cuda", 15, 0))
        if n == sizes[0]:
            plan.append(("ref", None, n, "cpu", 3, 0))
    for kind, m, n, dev, steps, ks in plan:
        if time.time() - T0 > ARGS.budget_s:
            print("budget spent; skipping", kind, m, n, dev, flush=True)
            continue
        try:
            if kind == "int":
                bench_integrate(m, n, dev, steps, rna, st, genes, ks)
            else:
                bench_refine(n, dev, steps, base, codes)
        except Exception as e:  # report and go on: one failure must not cost the whole lease
            import traceback
            traceback.print_exc()
            report({"what": m or "refine", "cells": n, "device": dev, "error": repr(e)[:500]})
