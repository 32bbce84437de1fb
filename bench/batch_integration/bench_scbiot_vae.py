#!/usr/bin/env python
"""scferry ``scbiot_vae`` (without and with labels) against scferry ``davae`` and an unintegrated
PCA, on the benchmark datasets of ``bench_integration.py`` (same input, same scores), one
process, one thread.

    ~/.virtualenvs/r-scferry/bin/python bench/batch_integration/bench_scbiot_vae.py [--datasets symphony pdac] [--seed 0]

Labels (``scbiot_vae + labels``): symphony: ``cell_type`` of 10x_3p_v1 and 10x_3p_v2 only
(10x_5p unlabelled), so ``transfer_5p`` (kNN, k = 30, from the two labelled chemistries to
10x_5p) measures cells the model never saw labelled; PDAC: the scRNA's ``cell_type`` (the spots
have none). ``transfer`` (leave-one-chemistry-out) is reported for every row, but for the
labelled row two of its three folds score cells whose labels trained the model.
Writes ``--out``/scores.tsv and table.md (default bench/out/scbiot_vae).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
BENCH = HERE.parent  # bench/: shared helpers in common/, venvs in .venvs/, outputs in out/
sys.path[:0] = [str(HERE), str(BENCH / "common")]
from bench_integration import markdown, prepare, read_input, score  # noqa: E402

LABELLED_SYMPHONY = ("10x_3p_v1", "10x_3p_v2")


def embed(method: str, adata, obs, dataset: str, seed: int):
    """Embedding (rows in obs order), run seconds, optimiser steps."""
    if method == "pca":
        import scanpy as sc
        a = adata.copy()
        t = time.perf_counter()
        sc.pp.normalize_total(a, target_sum=1e4)
        sc.pp.log1p(a)
        sc.pp.highly_variable_genes(a, n_top_genes=2000, batch_key="batch", flavor="seurat", subset=True)
        sc.pp.scale(a, max_value=10)
        sc.tl.pca(a, n_comps=50, random_state=seed)
        return a.obsm["X_pca"], time.perf_counter() - t, ""
    import scferry as sf
    names = list(dict.fromkeys(obs["batch"]))
    data = {n: adata[(obs["batch"] == n).to_numpy()].copy() for n in names}
    kw = dict(seed=seed, progress=False)
    if method == "scbiot_vae_labels":
        for n, a in data.items():
            keep = n in LABELLED_SYMPHONY if dataset == "symphony" else (a.obs["cell_type"] != "").all()
            if keep:
                a.obs["label"] = a.obs["cell_type"].astype(str)
        kw["label_key"] = "label"
    t = time.perf_counter()
    model = sf.integrate(data, method=method.replace("_labels", ""), **kw)
    run_s = time.perf_counter() - t
    emb = np.vstack([data[n].obsm["X_scferry"] for n in names])
    return emb, run_s, model.train_params["iterations_run"]


def transfer_5p(emb, obs) -> float:
    from scferry import metrics
    src = obs["batch"].isin(LABELLED_SYMPHONY).to_numpy()
    tgt = (obs["batch"] == "10x_5p").to_numpy()
    pred, _ = metrics.knn_label_transfer(emb[src], obs["cell_type"][src], emb[tgt], k=30)
    return metrics.transfer_accuracy(obs["cell_type"][tgt], pred)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--datasets", nargs="+", default=["symphony", "pdac"], choices=["symphony", "pdac"])
    p.add_argument("--methods", nargs="+", default=["pca", "davae", "scbiot_vae", "scbiot_vae_labels"])
    p.add_argument("--data-dir", default=str(BENCH.parents[1] / "shared" / "data"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=BENCH / "out" / "scbiot_vae")
    args = p.parse_args()
    import torch
    torch.set_num_threads(1)
    rows = []
    for dataset in args.datasets:
        inp = args.out / dataset / "input"
        prepare(dataset, args.data_dir, inp)
        adata, obs = read_input(inp)
        for method in args.methods:
            emb, run_s, steps = embed(method, adata, obs, dataset, args.seed)
            row = {"dataset": dataset, "method": method, **score(emb, obs, args.seed)}
            if dataset == "symphony":
                row["transfer_5p"] = transfer_5p(emb, obs)
            row.update(run_s=run_s, steps=steps)
            rows.append(row)
            print({k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()}, flush=True)
    table = pd.DataFrame(rows)
    args.out.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.out / f"scores_seed{args.seed}.tsv", sep="\t", index=False)
    md = markdown(table.fillna("-"))
    (args.out / f"table_seed{args.seed}.md").write_text(md + "\n")
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
