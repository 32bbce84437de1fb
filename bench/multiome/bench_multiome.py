#!/usr/bin/env python
"""Paired multi-omics benchmark (issue 7): MinNet, scMODAL, uniPort (vertical and diagonal modes)
and a Seurat-CCA baseline on real paired data, scored on held-apart cells; then MinNet's
downstream peak-gene analysis on SNARE-seq cortex.

    ~/.virtualenvs/r-scferry/bin/python bench/multiome/bench_multiome.py --threads 1            # everything
    ... bench_multiome.py --datasets snare --methods cca minnet --max-cells 3000 --max-iter 500

Data (``../shared/data``): ``snare`` = SNARE-seq adult mouse cortex, RNA + ATAC gene activity (the
sum of each gene's linked peaks, the input MinNet's paper uses); ``scicar`` = sci-CAR A549, RNA +
ATAC peaks (binary); ``cite`` = 200 PBMC CITE-seq cells, RNA + 14 ADTs (a small fixture: its
figures are noisy). ``--max-cells`` subsamples cells (seeded, same cells in both modalities).

Protocol (MinNet's paper): cells are split 80/20 within each cell type (seeded). Every scferry
method trains on the 80% (MinNet and uniPort-vertical use the pairing of those cells, MinNet their
labels too) and embeds the held-apart 20% of each modality separately through its own encoder
(``sf.project``), with no pairing. The CCA baseline (``scferry.methods.scmodal_cca.seurat_cca``: RNA vs gene
activity on shared genes, RNA vs ADT on a gene-protein table) is transductive and unsupervised: fit
on all cells, unpaired, and scored on the same 20%. Scores on the 20% (``scferry.metrics``), cells
of unknown type ("Mis", "unknown") left out of the label-based ones:

- foscttm: FOSCTTM between a cell's RNA and other-modality embeddings (lower is better);
- transfer: kNN (k = 30) label transfer from the RNA cells to the ATAC/ADT cells, accuracy;
- silhouette: cell-type silhouette of both modalities together, scaled to [0, 1];
- batch_entropy / ilisi: mixing of the two modalities (1 = fully mixed);
- run_s: integrate + project (or CCA) seconds; peak_mib: the child process's VmHWM, imports included.

Each method runs in its own process. With ``--links`` (SNARE, after MinNet): kNN smoothing (k = 5),
100 mini-bulks within cell types, Spearman of each gene with the peaks within 150 kb of its TSS
(``sf.tl.peak_gene_links``), TSSs from ``bench/multiome/snare_cortex_tss_mm10.tsv`` (``make_tss_table.py``).
Outputs in ``--out`` (default bench/out/multiome): DATASET/METHOD/, scores.tsv, table.md, links_*.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
BENCH = HERE.parent  # bench/: shared helpers in common/, venvs in .venvs/, outputs in out/
sys.path[:0] = [str(HERE), str(BENCH / "common"), str(BENCH / "batch_integration")]
from bench_integration import markdown  # noqa: E402
from datasets import shared_data_dir  # noqa: E402
from procstat import status_mb  # noqa: E402

METHODS = ["cca", "minnet", "scmodal", "uniport_vertical", "uniport_diagonal"]
DATASETS = ["snare", "scicar", "cite"]
FILES = {"snare": ("snare_cortex_rna.h5ad", "snare_cortex_atac_gene.h5ad", "atac"),
         "scicar": ("scicar_a549_rna.h5ad", "scicar_a549_atac.h5ad", "atac"),
         "cite": ("pbmc10k_cite_small_rna.h5ad", "pbmc10k_cite_small_adt.h5ad", "adt")}
UNKNOWN = {"Mis", "unknown"}
# TotalSeq-B panel of 10x pbmc_10k_protein_v3 -> coding gene (CD45RA/RO are both PTPRC isoforms)
ADT_GENES = {"CD3": "CD3E", "CD4": "CD4", "CD8a": "CD8A", "CD14": "CD14", "CD15": "FUT4",
             "CD16": "FCGR3A", "CD56": "NCAM1", "CD19": "CD19", "CD25": "IL2RA", "CD45RA": "PTPRC",
             "CD45RO": "PTPRC", "PD-1": "PDCD1", "TIGIT": "TIGIT", "CD127": "IL7R"}
TSS_FILE = HERE / "snare_cortex_tss_mm10.tsv"


# ------------------------------------------------------------------ data and split (deterministic)
def load(dataset: str, data_dir: str, max_cells: int, seed: int):
    import anndata as ad
    f_rna, f_other, other = FILES[dataset]
    rna = ad.read_h5ad(os.path.join(data_dir, f_rna))
    oth = ad.read_h5ad(os.path.join(data_dir, f_other))
    assert (rna.obs_names == oth.obs_names).all(), "paired files must be row-aligned"
    if max_cells and rna.n_obs > max_cells:
        keep = np.sort(np.random.default_rng(seed).choice(rna.n_obs, max_cells, replace=False))
        rna, oth = rna[keep].copy(), oth[keep].copy()
    return rna, oth, other


def split(labels: pd.Series, frac: float, seed: int) -> np.ndarray:
    """Boolean test mask: ``frac`` of each cell type (at least one cell where a type has >= 2)."""
    rng = np.random.default_rng(seed + 1)
    test = np.zeros(len(labels), bool)
    for _, idx in pd.Series(np.arange(len(labels))).groupby(labels.to_numpy()):
        idx = rng.permutation(idx.to_numpy())
        n = int(round(frac * len(idx))) if len(idx) >= 2 else 0
        test[idx[:max(n, 1) if len(idx) >= 2 else 0]] = True
    return test


def lognorm(X):
    import scipy.sparse as sp
    X = sp.csr_matrix(X, dtype=np.float64)
    tot = np.asarray(X.sum(axis=1)).ravel()
    X = sp.diags(1e4 / np.maximum(tot, 1e-12)) @ X
    X.data = np.log1p(X.data)
    return X.tocsr()


def linked_table(dataset: str, rna, oth) -> pd.DataFrame:
    """Feature links RNA -> other: shared names (gene activity) or the ADT-gene table."""
    if dataset == "cite":
        pairs = [(g, p) for p, g in ADT_GENES.items() if p in oth.var_names and g in rna.var_names]
    else:
        pairs = [(g, g) for g in rna.var_names if g in oth.var_names]
    return pd.DataFrame(pairs, columns=["rna", "other"])


# ------------------------------------------------------------------ one method, in its own process
def child(method: str, dataset: str, ddir: Path, args) -> None:
    t0 = time.perf_counter()
    import torch
    torch.set_num_threads(args.threads)
    rna, oth, other = load(dataset, args.data_dir, args.max_cells, args.seed)
    test = split(rna.obs["cell_type"].astype(str), args.test_frac, args.seed)
    out = ddir / method
    out.mkdir(parents=True, exist_ok=True)
    extra = {}
    t1 = time.perf_counter()
    if method == "cca":
        from scferry.methods.scmodal_cca import seurat_cca
        links = linked_table(dataset, rna, oth)
        if len(links) < 2:
            raise SystemExit(f"cca: {dataset} has no shared or linked features (RNA vs peaks)")
        X = lognorm(rna.X)[:, rna.var_names.get_indexer(links["rna"])]
        Y = lognorm(oth.X)[:, oth.var_names.get_indexer(links["other"])]
        k = min(20, len(links) - 1)
        U, V = seurat_cca(X, Y, n_components=k, seed=args.seed)
        z_rna, z_oth = U[test], V[test]
        all_rna, all_oth = U, V
        extra = {"features": int(len(links)), "components": k}
    else:
        import scferry as sf
        name = method.split("_")[0]
        kw = dict(seed=args.seed, progress=False)
        if args.max_iter:
            kw["max_iter"] = args.max_iter
        if name == "uniport":
            kw["mode"] = method.split("_")[1]
        if name == "minnet":
            kw["label_key"] = "cell_type"
            if dataset == "cite":
                kw["negatives"] = "within"  # the paper's choice for RNA + protein
        if name == "scmodal":
            if dataset == "cite":
                kw["linked"] = linked_table(dataset, rna, oth).rename(columns={"other": other})
            elif dataset == "scicar":  # no shared names: CCA-extension links from cell-type means
                kw.update(linked="cca", label_key="cell_type")
                extra["semi_supervised"] = True
        tr = {"rna": rna[~test].copy(), other: oth[~test].copy()}
        model = sf.integrate(tr, method=name, **kw)
        z_rna = sf.project(model, rna[test].copy(), dataset="rna")
        z_oth = sf.project(model, oth[test].copy(), dataset=other)
        all_rna = np.zeros((rna.n_obs, z_rna.shape[1]), np.float32)
        all_oth = np.zeros_like(all_rna)
        all_rna[~test], all_rna[test] = tr["rna"].obsm["X_scferry"], z_rna
        all_oth[~test], all_oth[test] = tr[other].obsm["X_scferry"], z_oth
        extra = {"iterations": model.train_params.get("iterations_run"),
                 "params": {k: v for k, v in model.params.items()
                            if isinstance(v, (int, float, str, bool)) or v is None}}
    run_s = time.perf_counter() - t1
    np.save(out / "test_rna.npy", np.asarray(z_rna, np.float32))
    np.save(out / "test_other.npy", np.asarray(z_oth, np.float32))
    np.save(out / "all_rna.npy", np.asarray(all_rna, np.float32))
    np.save(out / "all_other.npy", np.asarray(all_oth, np.float32))
    json.dump({"run_seconds": run_s, "total_seconds": time.perf_counter() - t0,
               "peak_rss_mb": status_mb("VmHWM"), "n_train": int((~test).sum()),
               "n_test": int(test.sum()), **extra}, open(out / "timing.json", "w"), indent=1, default=str)


def run_method(method: str, dataset: str, ddir: Path, args) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "OPENBLAS_NUM_THREADS": str(args.threads),
           "MKL_NUM_THREADS": str(args.threads)}
    cmd = [sys.executable, __file__, "--_child", method, dataset, str(ddir), "--seed", str(args.seed),
           "--threads", str(args.threads), "--max-cells", str(args.max_cells), "--max-iter",
           str(args.max_iter), "--test-frac", str(args.test_frac), "--data-dir", args.data_dir]
    ddir.mkdir(parents=True, exist_ok=True)
    with open(ddir / f"{method}.log", "w") as log:
        rc = subprocess.call(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    if rc != 0:
        tail = (ddir / f"{method}.log").read_text().strip().splitlines()[-1:]
        raise RuntimeError(f"{method} on {dataset} failed (exit {rc}): {tail}")


# ------------------------------------------------------------------ scoring
def score(z_rna: np.ndarray, z_oth: np.ndarray, labels: np.ndarray, other: str, seed: int) -> dict:
    from scferry import metrics
    known = ~np.isin(labels, list(UNKNOWN))
    both = np.vstack([z_rna, z_oth])
    modality = np.array(["rna"] * len(z_rna) + [other] * len(z_oth))
    lab2 = np.concatenate([labels, labels])
    k2 = np.concatenate([known, known])
    pred, _ = metrics.knn_label_transfer(z_rna[known], labels[known], z_oth[known],
                                         k=min(30, int(known.sum())))
    return {"foscttm": metrics.foscttm(z_rna, z_oth),
            "transfer": metrics.transfer_accuracy(labels[known], pred),
            "silhouette": metrics.silhouette(both[k2], lab2[k2], seed=seed),
            "batch_entropy": metrics.batch_entropy(both, modality, n_neighbors=min(100, len(both) // 4),
                                                   seed=seed),
            "ilisi": metrics.ilisi(both, modality, scaled=True, n_neighbors=min(30, len(both) // 4),
                                   seed=seed)}


# ------------------------------------------------------------------ MinNet downstream on SNARE
def links(ddir: Path, args, method: str = "minnet") -> pd.DataFrame:
    """Peak-gene Spearman on 100 mini-bulks within cell types: unsmoothed, 5-NN smoothed (both from
    the joint embedding, each modality's own cells) and true pairs (both modalities of the same nuclei
    grouped together: the paired upper reference)."""
    import anndata as ad
    import scferry as sf
    rna, _, _ = load("snare", args.data_dir, args.max_cells, args.seed)
    atac = ad.read_h5ad(os.path.join(args.data_dir, "snare_cortex_atac.h5ad"))[rna.obs_names].copy()
    rna.obsm["X_scferry"] = np.load(ddir / method / "all_rna.npy")
    atac.obsm["X_scferry"] = np.load(ddir / method / "all_other.npy")
    keep = ~rna.obs["cell_type"].isin(UNKNOWN).to_numpy()
    rna, atac = rna[keep].copy(), atac[keep].copy()
    tss = pd.read_csv(TSS_FILE, sep="\t", index_col="gene")
    rows, tables = [], {}
    for variant in ("unsmoothed", "smoothed_5nn", "true_pairs"):
        r, a = rna.copy(), atac.copy()
        layer = None
        if variant == "smoothed_5nn":
            sf.tl.knn_smooth(r, k=5)
            sf.tl.knn_smooth(a, k=5)
            layer = "scferry_smoothed"
        if variant == "true_pairs":
            a.obsm["X_scferry"] = r.obsm["X_scferry"]
        t0 = time.perf_counter()
        bulks = sf.tl.mini_bulk({"rna": r, "atac": a}, n_bulks=100, label_key="cell_type", layer=layer,
                                seed=args.seed)
        tab = sf.tl.peak_gene_links(bulks["rna"], bulks["atac"], tss, window=150_000)
        d = tab["distance"].abs()
        rows.append({"variant": variant, "bulks": bulks["rna"].n_obs, "genes": tab["gene"].nunique(),
                     "pairs": len(tab), "rho_le2kb": tab.loc[d <= 2000, "rho"].mean(),
                     "rho_2_25kb": tab.loc[(d > 2000) & (d <= 25000), "rho"].mean(),
                     "rho_gt25kb": tab.loc[d > 25000, "rho"].mean(),
                     "pos_fdr05": float(((tab["fdr"] < 0.05) & (tab["rho"] > 0)).mean()),
                     "seconds": time.perf_counter() - t0})
        tables[variant] = tab
    tables["smoothed_5nn"].to_csv(args.out / "links_snare_minnet_smoothed.tsv.gz", sep="\t", index=False)
    return pd.DataFrame(rows)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--datasets", nargs="+", default=DATASETS, choices=DATASETS)
    p.add_argument("--methods", nargs="+", default=METHODS, choices=METHODS)
    p.add_argument("--data-dir", default=shared_data_dir())
    p.add_argument("--max-cells", type=int, default=0, help="subsample cells (0 = all)")
    p.add_argument("--max-iter", type=int, default=0, help="training steps for every method (0 = defaults)")
    p.add_argument("--test-frac", type=float, default=0.2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--links", action="store_true", help="SNARE peak-gene analysis from MinNet")
    p.add_argument("--out", type=Path, default=BENCH / "out" / "multiome")
    p.add_argument("--score-only", action="store_true", help="rescore finished runs")
    p.add_argument("--_child", nargs=3, help=argparse.SUPPRESS)
    args = p.parse_args()
    args.out = args.out.resolve()
    if args._child:
        child(args._child[0], args._child[1], Path(args._child[2]), args)
        return 0

    import torch
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for dataset in args.datasets:
        ddir = args.out / dataset
        rna, _, other = load(dataset, args.data_dir, args.max_cells, args.seed)
        labels = rna.obs["cell_type"].astype(str)
        test = split(labels, args.test_frac, args.seed)
        for method in [m for m in METHODS if m in args.methods]:
            if not args.score_only:
                print(f"[{dataset}] {method} ...", flush=True)
                try:
                    run_method(method, dataset, ddir, args)
                except RuntimeError as err:
                    print("   ", err, flush=True)
                    continue
            if not (ddir / method / "timing.json").exists():
                continue
            timing = json.load(open(ddir / method / "timing.json"))
            row = {"dataset": dataset, "method": method, "cells": rna.n_obs, "test": int(test.sum()),
                   **score(np.load(ddir / method / "test_rna.npy"), np.load(ddir / method / "test_other.npy"),
                           labels.to_numpy()[test], other, args.seed),
                   "run_s": timing["run_seconds"], "peak_mib": timing["peak_rss_mb"],
                   "steps": timing.get("iterations") or ""}
            rows.append(row)
            print("   ", {k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()}, flush=True)
    if rows:
        table = pd.DataFrame(rows)
        table.to_csv(args.out / "scores.tsv", sep="\t", index=False)
        (args.out / "table.md").write_text(markdown(table) + "\n")
        print(markdown(table))
    if args.links and "snare" in args.datasets:
        method = "minnet" if (args.out / "snare" / "minnet" / "all_rna.npy").exists() else "cca"
        summary = links(args.out / "snare", args, method)
        summary.insert(0, "embedding", method)
        summary.to_csv(args.out / "links_summary.tsv", sep="\t", index=False)
        (args.out / "links_table.md").write_text(markdown(summary) + "\n")
        print(markdown(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
