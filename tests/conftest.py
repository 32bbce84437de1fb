from pathlib import Path

import anndata as ad
import numpy as np
import pytest
import torch

# One torch thread: on a 2-core machine, OpenMP threads competing with any other busy process
# slow small ops down by orders of magnitude; tests are about results, not speed.
torch.set_num_threads(1)

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "inst" / "extdata"
SHARED = ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def pdac_full():
    return ad.read_h5ad(DEMO / "pdac_demo_scrna.h5ad"), ad.read_h5ad(DEMO / "pdac_demo_st.h5ad")


@pytest.fixture()
def pdac_small(pdac_full):
    """A small real subset (300 cells, 150 spots, 1,500 genes): fresh copies for every test."""
    rna, st = pdac_full
    rng = np.random.default_rng(0)
    genes = rna.var_names[:1500]
    return (rna[np.sort(rng.choice(rna.n_obs, 300, replace=False)), genes].copy(),
            st[np.sort(rng.choice(st.n_obs, 150, replace=False)), genes].copy())
