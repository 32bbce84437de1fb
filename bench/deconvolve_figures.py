"""Spatial deconvolution figures: uniPort's OT-plan cell-type proportions on real spot data.

Runs, for each pair of a labelled scRNA-seq reference and spatial spots in ../shared/data (see
MANIFEST.md there), ``sf.integrate`` (uniPort) then ``sf.deconvolve``, and writes under
``bench/out/deconvolve/`` (git-ignored):
  <name>_proportions.png   most abundant type + one panel per cell type on the spot coordinates
  <name>_proportions.tsv   spots x cell types (rows sum to 1), with the spot coordinates
  <name>_summary.tsv       per type: mean proportion, spots where it is the most abundant
  timing.tsv               training and deconvolution seconds per dataset

    ~/.virtualenvs/r-scferry/bin/python bench/deconvolve_figures.py [--max-iter N] [--only pdac]

The PDAC pair is the uniPort paper's case (Fig. 5): cancer clones should sit together in the
cancer region, ductal cells along the duct epithelium, acinar cells in the normal pancreas.
"""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import torch

torch.set_num_threads(1)  # shared 2-core machine

import anndata as ad  # noqa: E402
import pandas as pd  # noqa: E402

import scferry as sf  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("SCFERRY_SHARED_DATA", ROOT.parent / "shared" / "data"))
if not DATA.is_dir():
    DATA = Path("/work/shared/data")

# name -> (reference file, spots file, types drawn first, figure title)
CASES = {
    "pdac": ("pdac_a_scrna.h5ad", "pdac_a_st.h5ad",
             ["Cancer clone A", "Cancer clone B", "Ductal", "Acinar cells"],
             "PDAC-A: inDrop scRNA-seq -> ST (100 um spots)"),
    "lymphnode": ("visium_lymphnode_ref.h5ad", "visium_lymphnode_st.h5ad",
                  ["B", "T_CD4", "T_CD8", "B_Plasma"],
                  "human lymph node: scRNA-seq -> Visium"),
    "hippocampus": ("visium_hippocampus_ref.h5ad", "visium_hippocampus_st.h5ad",
                    ["CA1", "CA3", "Denate", "Oligodendrocyte"],
                    "mouse hippocampus: DropViz scRNA-seq -> Visium"),
}


def run(name: str, out: Path, max_iter: int | None, seed: int) -> dict:
    ref_file, st_file, first, title = CASES[name]
    ref, st = ad.read_h5ad(DATA / ref_file), ad.read_h5ad(DATA / st_file)
    t0 = time.perf_counter()
    model = sf.integrate({"ref": ref, "spots": st}, method="uniport", max_iter=max_iter, seed=seed,
                         progress=False)
    t1 = time.perf_counter()
    props = sf.deconvolve(model, reference="ref", spots="spots", label_key="cell_type")
    t2 = time.perf_counter()
    rest = list(props.mean().sort_values(ascending=False).index)
    types = [t for t in first if t in props.columns] + [t for t in rest if t not in first]
    sf.pl.spatial_proportions(st, out / f"{name}_proportions.png", types=types,
                              title=f"{title}: scferry uniPort OT-plan proportions "
                                    f"({model.train_params['iterations_run']} steps)")
    table = props.copy()
    table.insert(0, "x", st.obsm["spatial"][:, 0])
    table.insert(1, "y", st.obsm["spatial"][:, 1])
    table.to_csv(out / f"{name}_proportions.tsv", sep="\t", index_label="spot")
    top = props.idxmax(axis=1).value_counts()
    pd.DataFrame({"mean_proportion": props.mean(), "spots_most_abundant": top}).fillna(0) \
        .sort_values("mean_proportion", ascending=False) \
        .to_csv(out / f"{name}_summary.tsv", sep="\t", index_label="cell_type")
    return dict(dataset=name, cells=ref.n_obs, spots=st.n_obs,
                common_genes=len(model.preprocessing.common_genes),
                iterations=model.train_params["iterations_run"],
                train_seconds=round(t1 - t0, 1), deconvolve_seconds=round(t2 - t1, 3))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--max-iter", type=int, default=None, help="training steps (default: uniPort's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", nargs="*", choices=sorted(CASES), default=None)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "deconvolve")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for name in args.only or list(CASES):
        rows.append(run(name, args.out, args.max_iter, args.seed))
        print(rows[-1], flush=True)
    pd.DataFrame(rows).to_csv(args.out / "timing.tsv", sep="\t", index=False)


if __name__ == "__main__":
    main()
