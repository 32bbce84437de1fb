#!/usr/bin/env python
"""GLUE (Cao & Gao, Nat Biotechnol 40, 1458 (2022); scglue 0.4.1) on SNARE cortex RNA vs ATAC gene
activity, the unpaired protocol of ``study.py``: a peer from another family (graph-linked VAEs
with an adversarial alignment), to see whether FOSCTTM <= 0.15 is reachable on these nuclei at all.

Runs inside its own venv (``bench/venvs/setup_glue.sh``: scglue, torch 2.13.0 CPU, no scferry).
Cells: ``common.load(name, max_cells, seed)``, the same subsample as every row of ``study.py``;
the other modality's cells are renamed so no pairing reaches GLUE. Each modality: scanpy
``seurat_v3`` HVGs (2,000) on counts, normalised, log1p, scaled, 50 PCs (GLUE's tutorial
preprocessing); guidance graph: one self-loop per gene both modalities measure (gene activity
carries the RNA's gene names, so each gene is one vertex). ``fit_SCGLUE`` at its defaults
(pretraining, then fine-tuning with balancing; its own epoch rule and early stopping), one
thread. Writes each modality's GLUE embedding (``*_rna.npy``, ``*_oth.npy``, rows in ``load``
order) and ``*.json`` (CPU s, genes); ``study.py``-style scores are computed by
``score_glue.py`` in the scferry env.

    bash bench/venvs/setup_glue.sh
    bench/.venvs/scglue/bin/python bench/diagonal/reference_glue.py --dataset snare_gene --seed 0 \
        --out bench/out/diag8/glue
    PYTHONPATH=python ~/.virtualenvs/r-scferry/bin/python bench/diagonal/score_glue.py --out bench/out/diag8/glue
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import load  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--dataset", default="snare_gene")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-cells", type=int, default=2000)
    p.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "out" / "diag8" / "glue")
    args = p.parse_args()
    import networkx as nx
    import scanpy as sc
    import scglue
    import torch
    torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    rna, oth, _, paired = load(args.dataset, args.max_cells, args.seed)
    if not paired or not rna.var_names.isin(oth.var_names).any():
        raise SystemExit(f"{args.dataset}: this runner needs paired cells (to score) and shared gene names")
    oth.obs_names = ["other_" + str(i) for i in range(oth.n_obs)]
    for a in (rna, oth):
        a.layers["counts"] = a.X.copy()
        sc.pp.highly_variable_genes(a, n_top_genes=min(2000, a.n_vars), flavor="seurat_v3")
        sc.pp.normalize_total(a)
        sc.pp.log1p(a)
        sc.pp.scale(a, max_value=10)
        sc.tl.pca(a, n_comps=50, random_state=args.seed)
        a.X = a.layers["counts"].copy()
    hv = set(rna.var_names[rna.var["highly_variable"]]) | set(oth.var_names[oth.var["highly_variable"]])
    genes = sorted(g for g in hv if g in rna.var_names and g in oth.var_names)
    graph = nx.MultiDiGraph()
    for g in genes:
        graph.add_edge(g, g, weight=1.0, sign=1, type="loop")
    for a in (rna, oth):
        a.var["highly_variable"] = a.var_names.isin(genes)
        scglue.models.configure_dataset(a, "NB", use_highly_variable=True, use_layer="counts", use_rep="X_pca")
    stem = args.out / f"{args.dataset}__{args.seed}"
    t = time.process_time()
    glue = scglue.models.fit_SCGLUE({"rna": rna, "other": oth}, graph, init_kws={"random_seed": args.seed},
                                    fit_kws={"directory": str(stem) + "_train"})
    cpu = time.process_time() - t
    np.save(str(stem) + "_rna.npy", glue.encode_data("rna", rna))
    np.save(str(stem) + "_oth.npy", glue.encode_data("other", oth))
    (Path(str(stem) + ".json")).write_text(json.dumps({"cpu_s": cpu, "genes": len(genes)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
