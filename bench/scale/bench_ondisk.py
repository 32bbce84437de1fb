#!/usr/bin/env python
"""Scale on disk: scferry davae trained from an on-disk .h5ad vs the same cells in memory, and
projection of every cell of the store; 10^5, 10^6 and 10^7 cells.

    # stores first (bench/scale/make_store.py: kang_pbmc_donors resampled with noise, 500 genes)
    ~/.virtualenvs/r-scferry/bin/python bench/scale/make_store.py --cells 100000 --out /work/tmp_ondisk/s1e5.h5ad
    ~/.virtualenvs/r-scferry/bin/python bench/scale/bench_ondisk.py --store /work/tmp_ondisk/s1e5.h5ad --mode memory disk disk-anndata

Each (store, mode) runs in its own process, single-threaded (torch.set_num_threads(1)):
``sf.integrate(data, method="davae", batch_key="batch", n_common_genes=300, max_iter=--steps,
patience=None)`` (a fixed step budget of 128 cells per step, two datasets "A"/"B" of one store),
then ``sf.project(model, store, "A")`` of every cell of the store (on disk; in memory: the loaded
AnnData). Modes: ``memory`` (anndata.read_h5ad, then the default in-memory path), ``disk`` (the
path; minibatches read as sorted, merged slices), ``disk-anndata`` (the path; minibatch rows
read through anndata's backed sparse dataset, ``anndata.io.sparse_dataset(...)[sorted rows]``);
``memory-prep``: only ``scferry.pp.fit_transform`` on the loaded data (the preprocessing
integrate runs here), for its memory: prep_growth_mb = peak resident during it minus resident
before (the loaded input included in neither).

Printed per run: input_mb (CSR data + indices + indptr of the store's matrix); load_s and
load_mb (memory mode: reading the store into memory); prep_s and prep_growth_mb (validation
and preprocessing until training starts: peak resident during it minus resident before);
data_ms / compute_ms per step (wall time in the sampler = reading and densifying the minibatch
vs the rest of the step: forward, backward, Adam; data_cpu_ms / compute_cpu_ms: the same in
process CPU time, which a machine shared with other jobs does not inflate); train_cells_s; epoch_s (extrapolated: ms per
step x n / 128); embed_s (integrate's embedding of every cell, streamed to the store on disk);
project_s and project_cells_s; peak_mb (VmHWM of the process) and rss_base_mb (after imports);
cpu_s (process CPU seconds).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
BENCH = HERE.parent
sys.path[:0] = [str(HERE), str(BENCH / "common"), str(BENCH / "batch_integration")]
from procstat import status_mb  # noqa: E402


class Peak:
    """Largest VmRSS while active (sampled every 20 ms in a thread)."""

    def __init__(self):
        self.start = self.peak = status_mb("VmRSS")
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self):
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, status_mb("VmRSS"))

    def stop(self) -> float:
        self._stop.set()
        self._t.join()
        self.peak = max(self.peak, status_mb("VmRSS"))
        return self.peak - self.start


def child(store: str, mode: str, steps: int, seed: int) -> dict:
    import numpy as np
    import torch
    torch.set_num_threads(1)
    import anndata as ad
    import h5py
    import scferry as sf
    from scferry import ondisk, train
    integ = sys.modules["scferry.integrate"]
    base = status_mb("VmRSS")
    cpu0 = time.process_time()
    with h5py.File(store, "r") as f:
        g = f["X"]
        input_mb = sum(g[k].size * g[k].dtype.itemsize for k in ("data", "indices", "indptr")) / 2**20
        n_cells = int(g.attrs["shape"][0])
    out = {"store": Path(store).name, "mode": mode, "cells": n_cells, "input_mb": input_mb, "steps": steps}
    if mode == "memory-prep":  # preprocessing alone, as integrate runs it for davae here
        from scferry import pp
        from scferry.data import collect_datasets
        data = ad.read_h5ad(store)
        datasets = collect_datasets(data, batch_key="batch")
        peak, t, c = Peak(), time.perf_counter(), time.process_time()
        pp.fit_transform(datasets, n_common=300, n_specific=0, scale=False)
        out.update(prep_s=time.perf_counter() - t, prep_cpu_s=time.process_time() - c,
                   prep_growth_mb=peak.stop(), peak_mb=status_mb("VmHWM"), rss_base_mb=base)
        return out
    if mode == "memory":
        t = time.perf_counter()
        data = ad.read_h5ad(store)
        out["load_s"] = time.perf_counter() - t
        out["load_mb"] = status_mb("VmRSS") - base
    else:
        data = store
        if mode == "disk-anndata":
            orig = ondisk.open_dataset
            ondisk.open_dataset = lambda *a, **k: orig(*a, **{**k, "reader": "anndata"})

    timing = {"data_s": 0.0, "data_cpu_s": 0.0}
    shared_fit, Sampler = integ.fit, train.MinibatchSampler

    class TimedSampler(Sampler):
        def __call__(self):
            t, c = time.perf_counter(), time.process_time()
            b = super().__call__()
            timing["data_s"] += time.perf_counter() - t
            timing["data_cpu_s"] += time.process_time() - c
            return b

    def timed_fit(*args, **kwargs):
        timing["prep_s"] = time.perf_counter() - timing["t_call"]
        timing["prep_growth_mb"] = timing["prep_peak"].stop()
        t, c = time.perf_counter(), time.process_time()
        history = shared_fit(*args, **kwargs)
        timing["fit_s"] = time.perf_counter() - t
        timing["fit_cpu_s"] = time.process_time() - c
        timing["t_embed"] = time.perf_counter()
        return history

    integ.fit, integ.MinibatchSampler = timed_fit, TimedSampler
    timing["prep_peak"] = Peak()
    timing["t_call"] = time.perf_counter()
    model = sf.integrate(data, method="davae", batch_key="batch", n_common_genes=300, max_iter=steps,
                         patience=None, seed=seed, progress=False)
    out["embed_s"] = time.perf_counter() - timing["t_embed"]
    out["rss_after_integrate_mb"] = status_mb("VmRSS")
    fit_s, data_s = timing["fit_s"], timing["data_s"]
    out.update(prep_s=timing["prep_s"], prep_growth_mb=timing["prep_growth_mb"],
               data_ms=1000 * data_s / steps, compute_ms=1000 * (fit_s - data_s) / steps,
               data_cpu_ms=1000 * timing["data_cpu_s"] / steps,
               compute_cpu_ms=1000 * (timing["fit_cpu_s"] - timing["data_cpu_s"]) / steps,
               train_cells_s=steps * 128 / fit_s, epoch_s=fit_s / steps * n_cells / 128)
    t = time.perf_counter()
    if mode == "memory":
        z = sf.project(model, data, "A")
    else:
        z = sf.project(model, store, "A")
    out["project_s"] = time.perf_counter() - t
    out["project_cells_s"] = n_cells / out["project_s"]
    assert z.shape[0] == n_cells and np.isfinite(z).all()
    out.update(peak_mb=status_mb("VmHWM"), rss_base_mb=base, cpu_s=time.process_time() - cpu0,
               latent_mb=z.nbytes / 2**20)
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--store", nargs="+")
    p.add_argument("--mode", nargs="+", default=["memory", "disk"],
                   choices=["memory", "disk", "disk-anndata", "memory-prep"])
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=BENCH / "out" / "scale_ondisk.jsonl")
    p.add_argument("--_child", nargs=2, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a._child:
        print(json.dumps(child(a._child[0], a._child[1], a.steps, a.seed)))
        return 0
    a.out.parent.mkdir(parents=True, exist_ok=True)
    for store in a.store:
        for mode in a.mode:
            cmd = [sys.executable, __file__, "--_child", store, mode, "--steps", str(a.steps),
                   "--seed", str(a.seed)]
            env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
            res = subprocess.run(cmd, capture_output=True, text=True, env=env)
            if res.returncode != 0:
                sys.stderr.write(res.stderr[-3000:])
                print(json.dumps({"store": store, "mode": mode, "failed": res.returncode}), flush=True)
                continue
            row = json.loads(res.stdout.strip().splitlines()[-1])
            with open(a.out, "a") as f:
                f.write(json.dumps(row) + "\n")
            print(json.dumps({k: round(v, 2) if isinstance(v, float) else v for k, v in row.items()}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
