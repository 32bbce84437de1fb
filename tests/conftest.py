from pathlib import Path

import os

import anndata as ad
import numpy as np
import pytest
import torch

# One torch thread: on a 2-core machine, OpenMP threads competing with any other busy process
# slow small ops down by orders of magnitude; tests are about results, not speed.
torch.set_num_threads(1)

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "inst" / "extdata"
# The real public datasets (../shared/data beside the checkout, or $SCFERRY_SHARED_DATA; on the
# development machine /work/shared/data), used when present; tests that need them skip otherwise.
_SHARED_CANDIDATES = [os.environ.get("SCFERRY_SHARED_DATA", ""), ROOT.parent / "shared" / "data",
                      "/work/shared/data"]
SHARED = next((Path(p) for p in _SHARED_CANDIDATES if p and Path(p).is_dir()), None)


def shared_file(name: str) -> Path:
    """Path of a file of the shared real data; skips the test when it is not on this machine."""
    if SHARED is None or not (SHARED / name).exists():
        pytest.skip(f"shared dataset {name} not found (set SCFERRY_SHARED_DATA to its folder)")
    return SHARED / name


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


@pytest.fixture(scope="session")
def pbmc_full():
    return ad.read_h5ad(shared_file("symphony_pbmc.h5ad"))


@pytest.fixture()
def pbmc(pbmc_full):
    """Symphony PBMC (3 chemistries): 600 real cells, 200 from each chemistry (fresh copy per test)."""
    rng = np.random.default_rng(0)
    rows = [rng.choice(np.flatnonzero(pbmc_full.obs["batch"] == b), 200, replace=False)
            for b in pbmc_full.obs["batch"].cat.categories]
    return pbmc_full[np.sort(np.concatenate(rows))].copy()
