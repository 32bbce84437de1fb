"""Spatial deconvolution figures: uniPort's OT-plan cell-type proportions on real spot data.

Runs, for each pair of a labelled scRNA-seq reference and spatial spots in ../shared/data (see
MANIFEST.md there), ``sf.integrate`` (uniPort) then ``sf.deconvolve``, and writes under
``bench/out/deconvolve/`` (git-ignored):
  <name>_proportions.png   most abundant type + one panel per cell type on the spot coordinates
  <name>_proportions.tsv   spots x cell types (rows sum to 1), with the spot coordinates
  <name>_summary.tsv       per type: mean proportion, spots where it is the most abundant,
                           Moran's I of the proportion (spatial structure), and the same for a
                           model-free check (NNLS, below) with its correlation to scferry's
  timing.tsv               training and deconvolution seconds per dataset

    ~/.virtualenvs/r-scferry/bin/python bench/deconvolve_figures.py [--max-iter N] [--only pdac]
    ~/.virtualenvs/r-scferry/bin/python bench/deconvolve_figures.py --only lymphnode \
        --param ot_eps=0.005 --param reference="'ref'" --tag eps0005     # any sf.integrate parameter

Moran's I: each spot's 6 nearest spots (row-normalised weights); about 0 for a map without spatial
structure (noise or uniform), towards 1 for smooth domains. NNLS: each spot's counts per 10,000
on the genes it shares with the reference, fitted as a non-negative mix of the reference types'
mean profiles (counts per 10,000), weights scaled to sum to 1; it uses no model, so it tells
whether the shared genes carry the cell-type signal at all.

The PDAC pair is the uniPort paper's case (Fig. 5): cancer clones should sit together in the
cancer region, ductal cells along the duct epithelium, acinar cells in the normal pancreas.
"""
from __future__ import annotations

import argparse
import ast
import os
import time
from pathlib import Path

import torch

torch.set_num_threads(1)  # shared 2-core machine

import anndata as ad  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import scipy.sparse as sp  # noqa: E402

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


def morans_i(values: np.ndarray, coords: np.ndarray, k: int = 6) -> np.ndarray:
    """Moran's I of each column of ``values`` on the k-nearest-spot graph (row-normalised)."""
    from sklearn.neighbors import NearestNeighbors
    nb = NearestNeighbors(n_neighbors=k + 1).fit(coords).kneighbors(coords, return_distance=False)[:, 1:]
    z = values - values.mean(axis=0)
    lag = z[nb].mean(axis=1)  # row-normalised weights: the neighbours' mean
    with np.errstate(invalid="ignore", divide="ignore"):
        return (z * lag).sum(axis=0) / (z ** 2).sum(axis=0)


def nnls_proportions(ref: ad.AnnData, st: ad.AnnData, types: list[str]) -> pd.DataFrame:
    """Model-free check: spots (CP10k on the shared genes) as NNLS mixes of type mean profiles."""
    from scipy.optimize import nnls
    genes = st.var_names.intersection(ref.var_names)

    def cp10k(a):
        X = sp.csr_matrix(a[:, genes].X, dtype=np.float64)
        tot = np.asarray(X.sum(axis=1)).ravel()
        return np.asarray(sp.diags(1e4 / np.maximum(tot, 1)) @ X.toarray())

    R, S = cp10k(ref), cp10k(st)
    labels = ref.obs["cell_type"].astype(str).to_numpy()
    sig = np.stack([R[labels == t].mean(axis=0) for t in types], axis=1)  # genes x types
    W = np.stack([nnls(sig, s)[0] for s in S])
    W = W / np.maximum(W.sum(axis=1, keepdims=True), 1e-12)
    return pd.DataFrame(W, index=st.obs_names, columns=types)


def run(name: str, out: Path, max_iter: int | None, seed: int, params: dict, tag: str) -> dict:
    ref_file, st_file, first, title = CASES[name]
    ref, st = ad.read_h5ad(DATA / ref_file), ad.read_h5ad(DATA / st_file)
    t0 = time.perf_counter()
    model = sf.integrate({"ref": ref, "spots": st}, method="uniport", max_iter=max_iter, seed=seed,
                         progress=False, **params)
    t1 = time.perf_counter()
    props = sf.deconvolve(model, reference="ref", spots="spots", label_key="cell_type")
    t2 = time.perf_counter()
    rest = list(props.mean().sort_values(ascending=False).index)
    types = [t for t in first if t in props.columns] + [t for t in rest if t not in first]
    name = name + (f"_{tag}" if tag else "")
    shown = ", ".join(f"{k}={v}" for k, v in params.items())
    sf.pl.spatial_proportions(st, out / f"{name}_proportions.png", types=types,
                              title=f"{title}: scferry uniPort OT-plan proportions "
                                    f"({model.train_params['iterations_run']} steps{', ' + shown if shown else ''})")
    table = props.copy()
    table.insert(0, "x", st.obsm["spatial"][:, 0])
    table.insert(1, "y", st.obsm["spatial"][:, 1])
    table.to_csv(out / f"{name}_proportions.tsv", sep="\t", index_label="spot")
    top = props.idxmax(axis=1).value_counts()
    coords = np.asarray(st.obsm["spatial"])[:, :2]
    nnls = nnls_proportions(ref, st, list(props.columns))
    r_nnls = [np.corrcoef(props[t], nnls[t])[0, 1] if props[t].std() > 0 and nnls[t].std() > 0 else np.nan
              for t in props.columns]
    summary = pd.DataFrame({"mean_proportion": props.mean(), "spots_most_abundant": top,
                            "sd_over_spots": props.std(), "morans_i": morans_i(props.to_numpy(), coords),
                            "nnls_mean": nnls.mean(), "nnls_morans_i": morans_i(nnls.to_numpy(), coords),
                            "r_vs_nnls": r_nnls})
    summary["spots_most_abundant"] = summary["spots_most_abundant"].fillna(0).astype(int)
    summary.sort_values("mean_proportion", ascending=False).round(4) \
        .to_csv(out / f"{name}_summary.tsv", sep="\t", index_label="cell_type")
    print(summary.sort_values("mean_proportion", ascending=False).round(3).to_string(), flush=True)
    return dict(dataset=name, params=shown, cells=ref.n_obs, spots=st.n_obs,
                common_genes=len(model.preprocessing.common_genes),
                iterations=model.train_params["iterations_run"],
                train_seconds=round(t1 - t0, 1), deconvolve_seconds=round(t2 - t1, 3))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--max-iter", type=int, default=None, help="training steps (default: uniPort's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", nargs="*", choices=sorted(CASES), default=None)
    parser.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                        help="extra sf.integrate parameter (VALUE as a Python literal); repeatable")
    parser.add_argument("--tag", default="", help="suffix of the output names (for --param runs)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "deconvolve")
    args = parser.parse_args()
    params = {}
    for item in args.param:
        key, _, value = item.partition("=")
        params[key] = ast.literal_eval(value)
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for name in args.only or list(CASES):
        rows.append(run(name, args.out, args.max_iter, args.seed, params, args.tag))
        print(rows[-1], flush=True)
    timing = args.out / "timing.tsv"
    old = pd.read_csv(timing, sep="\t") if timing.exists() else pd.DataFrame()
    new = pd.DataFrame(rows)
    if len(old):
        old = old[~old["dataset"].isin(new["dataset"])]
    pd.concat([old, new]).to_csv(timing, sep="\t", index=False)


if __name__ == "__main__":
    main()
