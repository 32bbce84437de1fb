"""Build the shipped demo data (inst/extdata) from the real PDAC pair in ../shared/data.

All 1,926 inDrop cells and 428 ST spots are kept; genes are cut to the 4,000 detected in the
most scRNA cells plus the 4,000 detected in the most spots (union), so the files stay a few MB.
Counts are unchanged. Run: python inst/scripts/make_demo_data.py [SHARED_DATA_DIR]
"""
import sys
from pathlib import Path

import anndata as ad
import numpy as np
import scipy.sparse as sp

src = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).resolve().parents[2].parent / "shared" / "data")
out = Path(__file__).resolve().parents[1] / "extdata"
rna = ad.read_h5ad(src / "pdac_a_scrna.h5ad")
st = ad.read_h5ad(src / "pdac_a_st.h5ad")


def top_detected(a, n):
    det = np.asarray((sp.csr_matrix(a.X) > 0).sum(axis=0)).ravel()
    return set(a.var_names[np.argsort(-det)[:n]])


genes = top_detected(rna, 4000) | top_detected(st, 4000)
keep = [g for g in rna.var_names if g in genes and g in st.var_names]
for a, name in ((rna, "pdac_demo_scrna.h5ad"), (st, "pdac_demo_st.h5ad")):
    sub = a[:, keep].copy()
    sub.X = sp.csr_matrix(sub.X, dtype=np.float32)
    sub.uns = {"x_kind": "counts", "source": "Moncada et al. 2020, GSE111672 / GSM3036911; subset of ../shared/data/" + name.replace("demo", "a")}
    sub.write_h5ad(out / name, compression="gzip")
    print(name, sub.shape)
