#!/usr/bin/env python
"""Unpaired, unlabelled cross-modality alignment (issue 17): scferry's GW method (given what a user
would have beside the data: CITE-seq's gene-protein table, SNARE peaks' TSS table), diagonal uniPort
with and without GW guidance, the CCA baseline (where features are linked), a random embedding and
SCOT (cell-level entropic GW + barycentric projection, Demetci et al. 2022, re-run here with POT on
a subsample). Pairing is used only to score; no method sees labels.

    OMP_NUM_THREADS=1 nice -n 5 ~/.virtualenvs/r-scferry/bin/python bench/diagonal/study.py \
        --seeds 0 1 2 --methods random gw cca

``--max-cells`` (default 0: every cell of the dataset) subsamples each dataset; SCOT runs on its
own ``--scot-cells`` subsample (dense matrices).

Each dataset runs in its own process (all methods, all seeds); seed s subsamples the cells (paired
sets: the same cells in both modalities) and seeds the method. Scores on all cells of the subsample
(transductive: GW and SCOT cannot encode new cells): FOSCTTM (paired sets), kNN (k=15) label
transfer RNA -> other over cells of a type the RNA data has; cpu_s: CPU seconds of the fit;
peak_mib: the dataset process's peak RSS (imports included) when the method finished: cumulative
over the methods run before it in that process (random, gw, scot, cca, uniport: in that order). Writes --out/scores.tsv and table.md.
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from common import SETS, linked_table, load, score, user_inputs  # noqa: E402

METHODS = ["random", "gw", "gw_refine0", "scot", "cca", "uniport_gw", "uniport_nogw"]
LINKED = {"snare_gene", "cite", "snare_peaks"}  # snare_peaks: through the TSS table's gene activity


def scot(rna, oth, seed: int, n_max: int, eps: float = 1e-3, max_iter: int = 200):
    """SCOT v1 as its authors run it by default (Demetci et al. 2022; rsinghlab/SCOT
    ``SCOT.align``): rows l2-normalised, kNN graphs with correlation distance in connectivity
    mode, k = min(20% of cells, 50), shortest paths scaled to [0, 1], entropic GW (POT,
    epsilon 1e-3, raised to 2e-3 / 5e-3 / 1e-2 on a convergence error as SCOT advises; at most
    ``max_iter`` = 200 outer steps, POT's default being 1,000), the other modality barycentrically
    projected onto RNA. Inputs: each modality's reduced space (``scferry.gw.embed_modality``: PCA / LSI).
    Subsample of at most ``n_max`` cells per modality (dense n x n and n x m matrices)."""
    import ot
    from scipy.sparse.csgraph import shortest_path
    from sklearn.neighbors import kneighbors_graph
    from scferry import gw
    rng = np.random.default_rng(seed)
    ir = np.sort(rng.choice(rna.n_obs, min(n_max, rna.n_obs), replace=False))
    io = ir if rna.n_obs == oth.n_obs and (rna.obs_names == oth.obs_names).all() else \
        np.sort(rng.choice(oth.n_obs, min(n_max, oth.n_obs), replace=False))
    Z = [gw.embed_modality(a.X[i], gw.guess_kind(a.X, a.var, a.var_names), seed=seed)
         for a, i in ((rna, ir), (oth, io))]
    Z = [z / np.maximum(np.linalg.norm(z, axis=1, keepdims=True), 1e-12) for z in Z]
    k = min(int(0.2 * min(len(ir), len(io))), 50)
    D = []
    for z in Z:
        G = kneighbors_graph(z, k, mode="connectivity", metric="correlation", include_self=True)
        d = shortest_path(G, directed=False)
        d[~np.isfinite(d)] = d[np.isfinite(d)].max()
        D.append(d / d.max())
    p, q = ot.unif(len(ir)), ot.unif(len(io))
    ok = lambda T: np.isfinite(T).all() and T.sum() > 0.95 and T.any(axis=1).all() and T.any(axis=0).all()
    for e in (eps, 2 * eps, 5 * eps, 10 * eps):  # SCOT's advice on a convergence error: raise e
        T = ot.gromov.entropic_gromov_wasserstein(D[0], D[1], p, q, "square_loss", epsilon=e, max_iter=5)
        if ok(T):  # the probe did not underflow: run it to the end
            T = ot.gromov.entropic_gromov_wasserstein(D[0], D[1], p, q, "square_loss", epsilon=e,
                                                      max_iter=max_iter)
            if ok(T):
                break
    proj = (T.T @ Z[0]) / np.maximum(T.sum(0)[:, None], 1e-300)
    return ir, io, Z[0], proj.astype(np.float32)


def child(name: str, methods: list[str], args) -> None:
    """All methods on one dataset, method by method over the seeds (the data read once)."""
    import scferry as sf
    cache = {}
    for method in methods:
        if method == "cca" and name not in LINKED:
            continue
        rows = []
        for seed in args.seeds:
            if seed not in cache:
                cache[seed] = load(name, args.max_cells, seed)
            rna, oth, other, paired = (x.copy() if hasattr(x, "copy") else x for x in cache[seed])
            rows.append(run_one(sf, name, method, seed, rna, oth, other, paired, args))
            rows[-1]["peak_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            (args.out / f"{name}__{method}.json").write_text(json.dumps(rows))


def run_one(sf, name, method, seed, rna, oth, other, paired, args) -> dict:
    t = time.process_time()
    ir = io = None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if method == "random":
            rng = np.random.default_rng(seed)
            zr, zo = rng.normal(size=(rna.n_obs, 30)), rng.normal(size=(oth.n_obs, 30))
        elif method in ("gw", "gw_refine0"):  # gw_refine0: without the refinement (scferry.gw.refine)
            extra = {"refine": 0} if method == "gw_refine0" else {}
            sf.integrate({"rna": rna, other: oth}, method="gw", seed=seed, progress=False,
                         **user_inputs(name, rna, oth, other), **extra)
            zr, zo = rna.obsm["X_scferry"], oth.obsm["X_scferry"]
        elif method == "scot":
            ir, io, zr, zo = scot(rna, oth, seed, args.scot_cells)
        elif method == "cca":
            from scferry.methods.scmodal_cca import seurat_cca
            sys.path.insert(0, str(HERE.parent / "multiome"))
            from bench_multiome import lognorm
            if name == "snare_peaks":  # the peaks' gene activity, as method="gw" derives it
                oth = sf.tl.gene_activity(oth, user_inputs(name, rna, oth, other)["tss"])
            pairs = linked_table(name, rna, oth)
            X = lognorm(rna.X)[:, rna.var_names.get_indexer(pairs["rna"])]
            Y = lognorm(oth.X)[:, oth.var_names.get_indexer(pairs["other"])]
            zr, zo = seurat_cca(X, Y, n_components=min(20, len(pairs) - 1), seed=seed)
        else:
            guided = method == "uniport_gw"  # guidance given what gw gets (TSS, protein table)
            given = user_inputs(name, rna, oth, other) if guided else None
            sf.integrate({"rna": rna, other: oth}, method="uniport", mode="diagonal",
                         gw_prior=guided, gw_params=given,
                         max_iter=args.uniport_iter, seed=seed, progress=False)
            zr, zo = rna.obsm["X_scferry"], oth.obsm["X_scferry"]
    cpu = time.process_time() - t
    r, o = (rna, oth) if ir is None else (rna[ir], oth[io])
    s = score(np.asarray(zr), np.asarray(zo), r.obs["cell_type"], o.obs["cell_type"], paired)
    return {"dataset": name, "method": method, "seed": seed, "cells": f"{r.n_obs}/{o.n_obs}",
            **s, "cpu_s": cpu}


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--datasets", nargs="+", default=list(SETS))
    p.add_argument("--methods", nargs="+", default=METHODS, choices=METHODS)
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--max-cells", type=int, default=0, help="cells per modality (0: all)")
    p.add_argument("--scot-cells", type=int, default=600)
    p.add_argument("--uniport-iter", type=int, default=300)
    p.add_argument("--out", type=Path, default=HERE.parent / "out" / "diagonal")
    p.add_argument("--parallel", type=int, default=1, help="datasets run at once")
    p.add_argument("--_child", nargs=1)
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if args._child:
        child(args._child[0], args.methods, args)
        return 0
    procs = []
    for name in args.datasets:
        cmd = [sys.executable, __file__, "--_child", name, "--methods", *args.methods, "--seeds",
               *map(str, args.seeds), "--max-cells", str(args.max_cells), "--scot-cells",
               str(args.scot_cells), "--uniport-iter", str(args.uniport_iter), "--out", str(args.out)]
        while len([p for p in procs if p.poll() is None]) >= args.parallel:
            time.sleep(5)
        procs.append(subprocess.Popen(cmd))
    for proc in procs:
        proc.wait()
    table(args.out)
    return 0


def table(out: Path) -> None:
    rows = [r for f in sorted(out.glob("*__*.json")) for r in json.loads(f.read_text())]
    if not rows:
        return
    df = pd.DataFrame(rows)
    df.to_csv(out / "scores.tsv", sep="\t", index=False)
    g = df.groupby(["dataset", "method"], sort=False)
    lines = ["| dataset | method | cells | seeds | FOSCTTM | transfer RNA->other | CPU s | peak MiB |",
             "|---|---|---|---|---|---|---|---|"]
    fmt = lambda s: "n/a" if s.isna().all() else f"{s.mean():.3f} ± {s.std(ddof=1) if len(s) > 1 else 0:.3f}"
    for (d, m), x in g:
        lines.append(f"| {d} | {m} | {x['cells'].iloc[0]} | {len(x)} | {fmt(x['foscttm'])} | "
                     f"{fmt(x['transfer'])} | {x['cpu_s'].mean():.1f} | {x['peak_mib'].max():.0f} |")
    (out / "table.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    sys.exit(main())
