"""scferry from Python: integrate scRNA-seq with spatial spots, transfer labels, and hand the
results to R users.

Run it from the repository root (it takes about a minute on a laptop CPU):

    python vignettes/python_tutorial.py [output_folder]

Figures and files go to ``output_folder`` (default: a new temporary folder). The data are the
pancreatic ductal adenocarcinoma (PDAC) example of Moncada et al. (2020) shipped in
``inst/extdata``: inDrop scRNA-seq with published cell types, and spatial transcriptomics (ST)
spots of the same tumour.
"""
from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import anndata as ad
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import scanpy as sc  # noqa: E402

import scferry as sf  # noqa: E402

out = Path(sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp(prefix="scferry_tutorial_"))
out.mkdir(parents=True, exist_ok=True)

# --------------------------------------------------------------------------------------------
# 1. Data: two AnnData objects with raw counts in .X
# --------------------------------------------------------------------------------------------
repo = Path(__file__).resolve().parent.parent
demo = repo / "inst" / "extdata"
if (demo / "pdac_demo_scrna.h5ad").exists():
    rna = ad.read_h5ad(demo / "pdac_demo_scrna.h5ad")
    st = ad.read_h5ad(demo / "pdac_demo_st.h5ad")
else:  # development checkout without the demo files: the full PDAC-A files, every 3rd cell
    shared = Path(os.environ.get("SCFERRY_SHARED_DATA", "/work/shared/data"))
    rna = ad.read_h5ad(shared / "pdac_a_scrna.h5ad")[::3].copy()
    st = ad.read_h5ad(shared / "pdac_a_st.h5ad")
print(rna)
print(st)

# --------------------------------------------------------------------------------------------
# 2. Integration: one call; every input gets obsm["X_scferry"] and nothing else
# --------------------------------------------------------------------------------------------
print("methods:", sf.available_methods())
model = sf.integrate({"rna": rna, "st": st}, method="uniport", max_iter=100, seed=0, progress=False)
print(model)
print("latent:", rna.obsm["X_scferry"].shape, st.obsm["X_scferry"].shape)

# A UMAP of the joint space with scanpy (on a concatenated copy; the inputs stay as they are).
both = ad.concat({"scRNA-seq": rna, "ST spots": st}, label="dataset", index_unique=None)
both.obs["cell_type"] = rna.obs["cell_type"].reindex(both.obs_names)  # NaN for the spots
sc.pp.neighbors(both, use_rep="X_scferry", n_neighbors=15)
sc.tl.umap(both, random_state=0)
fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
sc.pl.umap(both, color="dataset", ax=axes[0], show=False)
sc.pl.umap(both[both.obs["dataset"] == "scRNA-seq"].copy(), color="cell_type", ax=axes[1], show=False,
           title="cell types (scRNA-seq)")
fig.tight_layout()
fig.savefig(out / "umap.png", dpi=120)
plt.close(fig)

# --------------------------------------------------------------------------------------------
# 3. Label transfer: a probability per label for every spot (rows sum to 1)
# --------------------------------------------------------------------------------------------
probs = sf.transfer_labels(model, source="rna", target="st", label_key="cell_type")
print(probs.round(2).head())
print(st.obs["scferry_label"].value_counts().head(8))
assert np.allclose(probs.sum(axis=1), 1, atol=1e-5)

xy = st.obsm["spatial"]
fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
for ax, label in zip(axes, ["Cancer clone A", "Ductal"]):
    pts = ax.scatter(xy[:, 0], xy[:, 1], c=probs[label], s=30, cmap="Blues", vmin=0)
    ax.set_title(f"P({label})")
    ax.set_aspect("equal")
    fig.colorbar(pts, ax=ax, shrink=0.8)
fig.tight_layout()
fig.savefig(out / "spatial_probabilities.png", dpi=120)
plt.close(fig)

# --------------------------------------------------------------------------------------------
# 4. Save and reload the model (re-attach the AnnData objects for label transfer)
# --------------------------------------------------------------------------------------------
model.save(out / "pdac.scferry")
model2 = sf.load(out / "pdac.scferry", adatas={"rna": rna, "st": st})
probs2 = sf.transfer_labels(model2, source="rna", target="st", label_key="cell_type")
print("same predictions after reload:", np.allclose(probs, probs2, atol=1e-5))

# --------------------------------------------------------------------------------------------
# 5. Mixed pipelines: R objects in, R objects out (needs R, rpy2<3.6 and anndata2ri)
# --------------------------------------------------------------------------------------------
# A colleague hands you a SingleCellExperiment or Seurat object saved with saveRDS(). Here we make
# one from the ST AnnData with anndata2ri, to have something to read.
try:
    from scferry import r as sfr
    import anndata2ri
    import rpy2.robjects as ro
    from rpy2.robjects.conversion import localconverter
except ImportError as e:
    print("skipping the R part:", e)
    sys.exit(0)

rds_in, rds_out = out / "st.rds", out / "st_ferry.rds"
plain = ad.AnnData(X=st.X, obs=st.obs[["batch"]].copy(), var=st.var[[]].copy())
with localconverter(ro.default_converter + anndata2ri.converter):
    sce = ro.conversion.get_conversion().py2rpy(plain)
ro.r("function(x, p) { SummarizedExperiment::assayNames(x)[1] <- 'counts'; saveRDS(x, p) }")(sce, str(rds_in))

st_r = sfr.read_rds(rds_in)          # counts in X, colData in obs, reducedDims in obsm
print(st_r)
model3 = sf.integrate({"rna": rna, "st": st_r}, method="uniport", max_iter=30, seed=0, progress=False)
sf.transfer_labels(model3, source="rna", target="st", label_key="cell_type")
sfr.write_back(st_r, rds_in, rds_out)  # reducedDim "FERRY", altExp "ferry.predictions", colData
print(ro.r(f"function() {{ x <- readRDS('{rds_out}'); print(x); table(x$predicted.id) }}")())
print("outputs in", out)
