"""Make the small real-data fixtures of tests/data from the shared public datasets.

Reads the folder named by $SCFERRY_SHARED_DATA (default: ../shared/data beside the checkout),
writes gzip-compressed .h5ad files next to this script (or to --out). Deterministic: the same
inputs and seeds give the same cells and features. Provenance of every source file is in
MANIFEST.md of the shared data folder and in tests/data/README.md.

    SCFERRY_SHARED_DATA=/path/to/shared/data python tests/data/make_fixtures.py
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

import anndata as ad
import numpy as np
import scipy.sparse as sp

HERE = Path(__file__).resolve().parent
SEED = 0


def shared_dir() -> Path:
    d = os.environ.get("SCFERRY_SHARED_DATA") or str(HERE.parents[2] / "shared" / "data")
    if not Path(d).is_dir():
        raise SystemExit(f"shared data folder {d!r} not found: set SCFERRY_SHARED_DATA")
    return Path(d)


def _counts_per_cell(a: ad.AnnData) -> np.ndarray:
    return np.asarray(a.X.sum(axis=1)).ravel()


def _sparse(a: ad.AnnData) -> ad.AnnData:
    a = a.copy()
    if not sp.issparse(a.X):
        a.X = sp.csr_matrix(np.asarray(a.X))
    a.X = sp.csr_matrix(a.X, dtype=np.float32)
    return a


def _top_detected(a: ad.AnnData, n: int, keep=()) -> np.ndarray:
    """Indices (in file order) of the n features detected in most cells, plus `keep`."""
    detected = np.asarray((a.X > 0).sum(axis=0)).ravel()
    top = set(np.argsort(-detected, kind="stable")[:n].tolist())
    top |= {int(i) for i in a.var_names.get_indexer(list(keep)) if i >= 0}
    return np.array(sorted(top))


def make(src: Path) -> dict[str, ad.AnnData]:
    rng = np.random.default_rng(SEED)
    out: dict[str, ad.AnnData] = {}

    # Symphony PBMC, 3 chemistries: every cell and gene (it is small).
    out["symphony_pbmc"] = ad.read_h5ad(src / "symphony_pbmc.h5ad")

    # SNARE-seq cortex (paired): 1,500 nuclei with RNA and ATAC counts, drawn at random; all
    # genes; the 5,000 peaks open in most of those nuclei.
    rna = ad.read_h5ad(src / "snare_cortex_rna.h5ad")
    gene = ad.read_h5ad(src / "snare_cortex_atac_gene.h5ad")
    atac = ad.read_h5ad(src / "snare_cortex_atac.h5ad")
    ok = np.flatnonzero((_counts_per_cell(rna) > 0) & (_counts_per_cell(gene) > 0))
    rows = np.sort(rng.choice(ok, 1500, replace=False))
    atac = atac[rows]
    out["snare_cortex_rna"] = rna[rows]
    out["snare_cortex_atac_gene"] = gene[rows]
    out["snare_cortex_atac"] = atac[:, _top_detected(atac, 5000)]

    # sci-CAR A549 (paired): 600 cells at random; all genes; the 5,000 most often open peaks.
    rna = ad.read_h5ad(src / "scicar_a549_rna.h5ad")
    atac = ad.read_h5ad(src / "scicar_a549_atac.h5ad")
    rows = np.sort(rng.choice(rna.n_obs, 600, replace=False))
    atac = atac[rows]
    out["scicar_a549_rna"] = rna[rows]
    out["scicar_a549_atac"] = atac[:, _top_detected(atac, 5000)]

    # CITE-seq (paired): all 200 cells and 14 proteins; the 3,000 genes detected in most cells
    # plus the genes of the 14 proteins (for the gene-protein table of the scMODAL test).
    rna = ad.read_h5ad(src / "pbmc10k_cite_small_rna.h5ad")
    protein_genes = ["CD3E", "CD4", "CD8A", "CD14", "FUT4", "FCGR3A", "NCAM1", "CD19", "IL2RA",
                     "PTPRC", "PDCD1", "TIGIT", "IL7R"]
    out["pbmc10k_cite_small_rna"] = rna[:, _top_detected(rna, 3000, protein_genes)]
    out["pbmc10k_cite_small_adt"] = ad.read_h5ad(src / "pbmc10k_cite_small_adt.h5ad")

    # Pamona PBMC (unpaired, 50 features each) and MERFISH hypothalamus: whole (they are small).
    for name in ("pamona_pbmc_rna", "pamona_pbmc_atac", "merfish_hypothalamus_ref",
                 "merfish_hypothalamus_st"):
        out[name] = ad.read_h5ad(src / f"{name}.h5ad")

    for name, a in out.items():
        a = a.copy() if a.is_view else a
        if not name.startswith("pamona"):  # Pamona's features are dense real values
            a = _sparse(a)
        a.uns["fixture"] = {"source": f"{name}.h5ad", "seed": SEED, "script": "tests/data/make_fixtures.py"}
        out[name] = a
    return out


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=HERE)
    args = p.parse_args(argv)
    src = shared_dir()
    args.out.mkdir(parents=True, exist_ok=True)
    for name, a in make(src).items():
        f = args.out / f"{name}.h5ad"
        a.write_h5ad(f, compression="gzip")
        print(f"{f.name:32s} {a.n_obs:6d} x {a.n_vars:6d}  {f.stat().st_size / 1e6:5.2f} MB")


if __name__ == "__main__":
    main()
