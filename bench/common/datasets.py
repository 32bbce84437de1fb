"""Benchmark datasets, loaded the same way in every venv (no scferry or uniport import here)."""
from __future__ import annotations

import os

import anndata as ad

PDAC_FILES = [("pdac_a_st.h5ad", "PDAC-A-ST1"), ("pdac_a_scrna.h5ad", "PDAC-A-indrop")]
# the other spatial pairs, as PDAC's: the unlabelled spatial data first, the labelled reference last
SPATIAL_PAIRS = {
    "merfish": [("merfish_hypothalamus_st.h5ad", "MERFISH"), ("merfish_hypothalamus_ref.h5ad", "scRNA")],
    "hippocampus": [("visium_hippocampus_st.h5ad", "Visium"), ("visium_hippocampus_ref.h5ad", "scRNA")],
    "lymph_node": [("visium_lymphnode_st.h5ad", "Visium"), ("visium_lymphnode_ref.h5ad", "scRNA")],
}
SYMPHONY_FILE = "symphony_pbmc.h5ad"
KANG_FILE = "kang_pbmc_donors.h5ad"


def shared_data_dir() -> str:
    """Where the shared public datasets are, found as the tests find them: $SCFERRY_SHARED_DATA,
    else ``../shared/data`` beside the checkout."""
    here = os.path.dirname(os.path.abspath(__file__))  # bench/common
    return os.environ.get("SCFERRY_SHARED_DATA") or os.path.normpath(
        os.path.join(here, "..", "..", "..", "shared", "data"))


def load_datasets(name: str, data_dir: str) -> list[tuple[str, ad.AnnData]]:
    """Raw-count AnnData per dataset, in uniport's order: the LAST one is its reference."""
    if name == "pdac" or name in SPATIAL_PAIRS:
        # Tutorial order: spots are dataset 0, scRNA (labelled) is dataset 1 = reference.
        files = PDAC_FILES if name == "pdac" else SPATIAL_PAIRS[name]
        return [(label, ad.read_h5ad(os.path.join(data_dir, f))) for f, label in files]
    if name in ("symphony", "kang"):
        full = ad.read_h5ad(os.path.join(data_dir, SYMPHONY_FILE if name == "symphony" else KANG_FILE))
        batches = full.obs["batch"]
        levels = list(batches.cat.categories) if hasattr(batches, "cat") else sorted(batches.unique())
        return [(str(b), full[(batches == b).to_numpy()].copy()) for b in levels]
    raise ValueError(f"unknown dataset {name!r}")
