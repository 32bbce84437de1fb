"""CPU steps/s and cells/s with 1 vs 2 training processes (integrate(devices=...)), 10^5 cells.

Cells: the Symphony PBMC fixture (tests/data/symphony_pbmc.h5ad, 1,200 cells, 3 10x chemistries)
resampled with replacement to ``--cells`` cells with binomial thinning (p = 0.5, so no two cells
are identical), ``batch_key="batch"`` (3 datasets). Each method is fitted for ``--steps`` steps
(no early stopping) with devices = 1 and 2. Timed: the training alone, i.e. ``scferry.train.fit``
(1 process) or ``scferry.distributed.run`` (2 processes: starting them, the process group, the
training, the final merges and returning the result); CPU seconds are this process's plus its
children's (the training processes).

    PYTHONPATH=python python bench/distributed/bench_ddp.py --cells 100000 --steps 400 --out bench/out/distributed/ddp.tsv
"""
from __future__ import annotations

import argparse
import resource
import time
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

import scferry as sf
from scferry.sampling import batch_sizes

ROOT = Path(__file__).resolve().parents[2]


def make_cells(n: int, seed: int = 0) -> ad.AnnData:
    src = ad.read_h5ad(ROOT / "tests" / "data" / "symphony_pbmc.h5ad")
    rng = np.random.default_rng(seed)
    rows = rng.integers(0, src.n_obs, n)
    X = sp.csr_matrix(src.X[rows], dtype=np.float32)
    X.data = rng.binomial(X.data.astype(np.int64), 0.5).astype(np.float32)
    X.eliminate_zeros()
    out = ad.AnnData(X, obs=pd.DataFrame({"batch": src.obs["batch"].to_numpy()[rows]},
                                         index=[f"c{i}" for i in range(n)]), var=src.var[[]].copy())
    out.obs["batch"] = out.obs["batch"].astype("category")
    return out


def cpu_now() -> float:
    s, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime


class Timed:
    """Wall and CPU seconds (self + children) spent inside one function."""

    def __init__(self, module, name):
        self.module, self.name, self.real = module, name, getattr(module, name)
        self.wall = self.cpu = 0.0

    def __enter__(self):
        def wrapped(*a, **k):
            c, t = cpu_now(), time.perf_counter()
            try:
                return self.real(*a, **k)
            finally:
                self.wall += time.perf_counter() - t
                self.cpu += cpu_now() - c
        setattr(self.module, self.name, wrapped)
        return self

    def __exit__(self, *exc):
        setattr(self.module, self.name, self.real)


def one(adata, method: str, devices: int, steps: int) -> dict:
    import sys
    a = adata.copy()  # the module, not the function scferry.integrate that shadows it
    target = (sys.modules["scferry.distributed"], "run") if devices > 1 else (sys.modules["scferry.integrate"], "fit")
    with Timed(*target) as t:
        m = sf.integrate(a, method, batch_key="batch", max_iter=steps, patience=None, seed=0,
                         progress=False, devices=devices, accelerator="cpu")
    cells = m.train_params.get("distributed", {}).get("cells_per_step")
    return {"wall_s": t.wall, "cpu_s": t.cpu, "steps": m.train_params["iterations_run"],
            "cells_per_step": int(sum(cells)) if cells else None}


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--cells", type=int, default=100_000)
    p.add_argument("--methods", nargs="+", default=["davae", "uniport"])
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--out", default="bench/out/distributed/ddp.tsv")
    args = p.parse_args()
    torch.set_num_threads(1)
    adata = make_cells(args.cells)
    rows = []
    for method in args.methods:
        for devices in (1, 2):
            r = one(adata, method, devices, args.steps)
            cells = r["cells_per_step"] or sum(batch_sizes(
                adata.obs["batch"].value_counts(sort=False).tolist(), sf.get_method(method).train_defaults["batch_size"]))
            row = {"method": method, "cells": args.cells, "devices": devices, "steps": r["steps"],
                   "cells_per_step": cells, "train_wall_s": r["wall_s"], "train_cpu_s": r["cpu_s"],
                   "steps_per_wall_s": r["steps"] / r["wall_s"], "steps_per_cpu_s": r["steps"] / r["cpu_s"],
                   "cpu_ms_per_step": 1000 * r["cpu_s"] / r["steps"],
                   "load1": float(open("/proc/loadavg").read().split()[0])}
            row["cells_per_wall_s"] = row["steps_per_wall_s"] * cells
            row["cells_per_cpu_s"] = row["steps_per_cpu_s"] * cells
            rows.append(row)
            print(row, flush=True)
    df = pd.DataFrame(rows)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(args.out, sep="\t", index=False)
    print(df.round(3).to_string())
