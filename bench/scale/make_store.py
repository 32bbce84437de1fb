#!/usr/bin/env python
"""Write an on-disk AnnData (.h5ad, CSR, uncompressed) of n cells resampled with noise from
kang_pbmc_donors.h5ad (12,261 real PBMCs of 8 donors), without holding it in memory.

    ~/.virtualenvs/r-scferry/bin/python bench/scale/make_store.py --cells 1000000 --out /work/tmp_ondisk/s1e6.h5ad

Features: the ``--genes`` (default 500) most variable genes of the source (scanpy seurat flavour
on log-normalised counts), to keep a 10^7-cell store near 10 GB. Each new cell copies a source
cell drawn with replacement (its donor becomes obs["batch"], grouped into two datasets "A"
(donors 1-4) / "B" (5-8)) and redraws every non-zero count c as 1 + Poisson((c - 1) f) with a
per-cell depth factor f ~ LogNormal(0, 0.25): the sparsity pattern and no empty cell are kept.
Rows are written in chunks of 500,000 cells with h5py; obs/var with anndata's writer.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import anndata as ad
import anndata.io as aio
import h5py
import numpy as np
import pandas as pd
import scanpy as sc
import scipy.sparse as sp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "common"))
from datasets import shared_data_dir  # noqa: E402


def source(n_genes: int):
    a = ad.read_h5ad(Path(shared_data_dir()) / "kang_pbmc_donors.h5ad")
    X = sp.csr_matrix(a.X, dtype=np.float32)
    b = a.copy()
    sc.pp.normalize_total(b, target_sum=1e4)
    sc.pp.log1p(b)
    hv = sc.pp.highly_variable_genes(b, n_top_genes=n_genes, flavor="seurat", inplace=False)["highly_variable"].to_numpy()
    X = X[:, hv].tocsr()
    keep = np.asarray(X.sum(axis=1)).ravel() >= 5
    donors = pd.Categorical(a.obs["batch"].astype(str))
    group = np.where(donors.codes < len(donors.categories) // 2, "A", "B")
    return X[keep], group[keep], a.var_names[hv]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--cells", type=int, required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--genes", type=int, default=500)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--chunk", type=int, default=500_000)
    a = p.parse_args()
    t0 = time.perf_counter()
    X, group, genes = source(a.genes)
    rng = np.random.default_rng(a.seed)
    n = a.cells
    draw = rng.integers(0, X.shape[0], n)
    out = Path(a.out)
    if out.exists():
        out.unlink()
    with h5py.File(out, "w") as f:
        f.attrs["encoding-type"], f.attrs["encoding-version"] = "anndata", "0.1.0"
        g = f.create_group("X")
        g.attrs["encoding-type"], g.attrs["encoding-version"] = "csr_matrix", "0.1.0"
        g.attrs["shape"] = (n, X.shape[1])
        nnz_row = np.diff(X.indptr)[draw]
        indptr = np.r_[0, np.cumsum(nnz_row)].astype(np.int64)
        total = int(indptr[-1])
        data = g.create_dataset("data", shape=(total,), dtype=np.float32, chunks=(1 << 18,))
        ind = g.create_dataset("indices", shape=(total,), dtype=np.int32, chunks=(1 << 18,))
        g.create_dataset("indptr", data=indptr)
        for start in range(0, n, a.chunk):
            rows = draw[start:start + a.chunk]
            part = X[rows]
            f_cell = rng.lognormal(0.0, 0.25, len(rows))
            lam = (part.data - 1) * np.repeat(f_cell, np.diff(part.indptr))
            vals = 1 + rng.poisson(lam).astype(np.float32)
            lo, hi = indptr[start], indptr[start + len(rows)]
            data[lo:hi] = vals
            ind[lo:hi] = part.indices.astype(np.int32)
            print(f"{start + len(rows):,} cells, {time.perf_counter() - t0:.0f} s", flush=True)
        obs = pd.DataFrame({"batch": pd.Categorical(group[draw], categories=["A", "B"])},
                           index=pd.Index([f"c{i:09d}" for i in range(n)]))
        aio.write_elem(f, "obs", obs)
        del obs
        aio.write_elem(f, "var", pd.DataFrame(index=pd.Index(genes.astype(str))))
        for key in ("obsm", "varm", "obsp", "varp", "layers", "uns"):
            aio.write_elem(f, key, {})
    size = out.stat().st_size / 2**30
    print(f"wrote {out} ({n:,} cells x {X.shape[1]} genes, {total:,} non-zeros, {size:.2f} GiB) in "
          f"{time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
