"""Fixtures and data locations for the tests.

Three kinds of data:
- `inst/extdata` (DEMO): the PDAC demo pair shipped with the package;
- `tests/data` (FIXTURES): small real subsets of the public datasets, shipped in the repository
  (provenance and the script that makes them: tests/data/README.md); every quality test runs on
  these, on any clone;
- the shared data folder (the full public datasets, MANIFEST.md there): found through the one
  environment variable ``SCFERRY_SHARED_DATA``, or else the folder ``shared/data`` beside the
  checkout (``../shared/data``). Tests that need it are marked ``shared_data``; without it they
  skip, except under CI (``CI`` set), where they fail and name the variable.
"""
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
FIXTURES = Path(__file__).resolve().parent / "data"
SHARED_ENV = "SCFERRY_SHARED_DATA"
SHARED = Path(os.environ[SHARED_ENV]) if os.environ.get(SHARED_ENV) else ROOT.parent / "shared" / "data"


def shared_file(name: str) -> Path:
    """Path of a file of the full shared data. Missing: the test skips, or fails under CI."""
    f = SHARED / name
    if not f.exists():
        msg = (f"shared dataset {name} not found in {SHARED} (set {SHARED_ENV} to the folder "
               f"holding the shared data, or put it in ../shared/data beside the checkout)")
        if os.environ.get("CI"):
            pytest.fail(msg + "; CI expects it", pytrace=False)
        pytest.skip(msg)
    return f


def fixture_file(name: str) -> Path:
    """Path of a shipped fixture (tests/data/<name>); it is in the repository, so it must exist."""
    f = FIXTURES / name
    assert f.exists(), f"fixture {f} is missing: it is committed in the repository (tests/data)"
    return f


def read_fixture(name: str) -> ad.AnnData:
    return ad.read_h5ad(fixture_file(name))


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


@pytest.fixture(scope="module")
def snare_peaks():
    """SNARE-seq cortex fixture (RNA + ATAC peaks of the same nuclei, nuclei with counts in both),
    split 80 / 20 with a fixed draw: (rna, atac) of the training nuclei, then of the held-apart ones."""
    rna, atac = read_fixture("snare_cortex_rna.h5ad"), read_fixture("snare_cortex_atac.h5ad")
    ok = (np.asarray(rna.X.sum(1)).ravel() > 0) & (np.asarray(atac.X.sum(1)).ravel() > 0)
    rna, atac = rna[ok].copy(), atac[ok].copy()
    test = np.zeros(rna.n_obs, bool)
    test[np.random.default_rng(0).choice(rna.n_obs, rna.n_obs // 5, replace=False)] = True
    return rna[~test].copy(), atac[~test].copy(), rna[test].copy(), atac[test].copy()


@pytest.fixture(scope="session")
def pbmc_full():
    """Symphony PBMC, all 1,200 cells (the fixture holds the whole file)."""
    return read_fixture("symphony_pbmc.h5ad")


@pytest.fixture()
def pbmc(pbmc_full):
    """Symphony PBMC (3 chemistries): 600 real cells, 200 from each chemistry (fresh copy per test)."""
    rng = np.random.default_rng(0)
    rows = [rng.choice(np.flatnonzero(pbmc_full.obs["batch"] == b), 200, replace=False)
            for b in pbmc_full.obs["batch"].cat.categories]
    return pbmc_full[np.sort(np.concatenate(rows))].copy()
