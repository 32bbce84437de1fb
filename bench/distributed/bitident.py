"""Same seed, same embedding: uniport / davae embeddings of the PDAC demo, minnet and vertical
uniport on the SNARE-seq fixture (short fits, seeds 0 and 1) saved to an .npz, to compare the training path before and after a change.

    PYTHONPATH=<checkout>/python python bench/distributed/bitident.py OUT.npz [extra integrate kwargs as k=v]
    python bench/distributed/bitident.py --compare A.npz B.npz      # max |diff| per embedding
"""
import ast
import sys
from pathlib import Path

import numpy as np

if sys.argv[1] == "--compare":
    a, b = np.load(sys.argv[2]), np.load(sys.argv[3])
    for k in sorted(a):
        print(k, "max|diff| =", float(np.abs(a[k] - b[k]).max()), a[k].shape)
    sys.exit(0)

import anndata as ad
import torch

import scferry as sf

torch.set_num_threads(1)
extra = {k: ast.literal_eval(v) for k, v in (a.split("=", 1) for a in sys.argv[2:])}
demo = Path(__file__).resolve().parents[2] / "inst" / "extdata"
rna, st = ad.read_h5ad(demo / "pdac_demo_scrna.h5ad"), ad.read_h5ad(demo / "pdac_demo_st.h5ad")
fix = Path(__file__).resolve().parents[2] / "tests" / "data"
snare = {"rna": ad.read_h5ad(fix / "snare_cortex_rna.h5ad"), "atac": ad.read_h5ad(fix / "snare_cortex_atac_gene.h5ad")}
runs = [("uniport", {"rna": rna, "st": st}, {}), ("davae", {"rna": rna, "st": st}, {}),
        ("minnet", snare, dict(label_key="cell_type", n_specific_genes=300, n_hidden=(64,))),
        ("uniport_vertical", snare, dict(mode="vertical"))]
out = {}
for name, pair, kw in runs:
    for seed in (0, 1):
        data = {k: v.copy() for k, v in pair.items()}
        sf.integrate(data, name.split("_")[0], max_iter=120, seed=seed, progress=False, **kw, **extra)
        out[f"{name}_seed{seed}"] = np.concatenate([a.obsm["X_scferry"] for a in data.values()])
np.savez(sys.argv[1], **out)
print(sf.__file__, {k: v.shape for k, v in out.items()})
