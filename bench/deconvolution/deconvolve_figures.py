"""Spatial deconvolution figures: uniPort's OT-plan cell-type proportions on real spot data.

Runs, for each pair of a labelled scRNA-seq reference and spatial spots in ../shared/data (see
MANIFEST.md there), ``sf.integrate`` (uniPort) then ``sf.deconvolve``, and writes under
``bench/out/deconvolve/`` (git-ignored):
  <name>_proportions.png   most abundant type + one panel per cell type on the spot coordinates
                           (sf.deconvolve with --readout, default "type_mean")
  <name>_proportions.tsv   spots x cell types (rows sum to 1), with the spot coordinates
  <name>_mass.tsv          the same with readout="mass" (what --reuse reads back)
  <name>_nnls.png          the NNLS check (below) drawn the same way, types in the same order
  <name>_split_test.tsv    --split-test: pseudo-spots from half of the reference (split_test)
  <name>_summary.tsv       per type: mean proportion, spots where it is the most abundant,
                           Moran's I of the proportion (spatial structure), and the same for a
                           model-free check (NNLS, below) with its correlation to scferry's
  timing.tsv               training and deconvolution seconds per dataset

    ~/.virtualenvs/r-scferry/bin/python bench/deconvolution/deconvolve_figures.py [--max-iter N] [--only pdac]
    ~/.virtualenvs/r-scferry/bin/python bench/deconvolution/deconvolve_figures.py --only lymphnode \
        --param ot_eps=0.005 --param reference="'ref'" --tag eps0005     # any sf.integrate parameter
    ~/.virtualenvs/r-scferry/bin/python bench/deconvolution/deconvolve_figures.py --reuse --readout mass  # redraw, no training
    ~/.virtualenvs/r-scferry/bin/python bench/deconvolution/deconvolve_figures.py --only lymphnode --split-test

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
from scferry.tl import per_type_mean  # noqa: E402
from bench_deconvolve import integrate_params, split_and_mix  # noqa: E402
from datasets import shared_data_dir  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
DATA = Path(os.environ.get("SCFERRY_SHARED_DATA", ROOT.parent / "shared" / "data"))
if not DATA.is_dir():
    DATA = Path(shared_data_dir())

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


def split_test(name: str, out: Path, max_iter: int, seed: int, n_spots: int = 200) -> pd.DataFrame:
    """Do the reference genes the spots share carry cell-type signal? Each type's reference cells
    are split in two halves (seeded); ``n_spots`` pseudo-spots sum 5-10 cells of the second half
    (one type 40-100% of the cells, the rest from up to two others: the ``dominant`` design of
    bench_deconvolve.py's ``split_and_mix``), the first half is the labelled reference.
    Deconvolved (scferry uniPort at ``max_iter`` steps, no early stop, plan mass and per-type mean; and NNLS on the types' mean
    profiles) twice: on the genes the real spots share with the reference, and on all reference
    genes. Writes ``<name>_split_test.tsv`` (per type: Pearson r and RMSE against the truth)."""
    ref_file, st_file, _, _ = CASES[name]
    ref, st = ad.read_h5ad(DATA / ref_file), ad.read_h5ad(DATA / st_file)
    labels = ref.obs["cell_type"].astype(str).to_numpy()
    types = sorted(set(labels))
    K = len(types)
    ref_rows, spots, truth = split_and_mix(sp.csr_matrix(ref.X, dtype=np.float32), labels, types,
                                           "dominant", n_spots, seed)
    names = [f"spot{i}" for i in range(n_spots)]
    spots_all = ad.AnnData(spots, obs=pd.DataFrame(index=names), var=ref.var[[]].copy())
    ref_all = ref[ref_rows].copy()
    truth = pd.DataFrame(truth, index=names, columns=types)
    shared = st.var_names.intersection(ref.var_names)
    results = []
    for gene_set, genes in ((f"shared with spots ({len(shared)})", shared),
                            (f"all reference ({ref.n_vars})", ref.var_names)):
        r_ad, s_ad = ref_all[:, genes].copy(), spots_all[:, genes].copy()
        estimates = {"NNLS": nnls_proportions(r_ad, s_ad, types)}
        t0 = time.process_time()
        model = sf.integrate({"ref": r_ad, "spots": s_ad}, method="uniport", max_iter=max_iter,
                             patience=None, seed=seed, progress=False)
        for readout in ("mass", "type_mean"):
            estimates[f"scferry {readout}"] = sf.deconvolve(model, "ref", "spots", "cell_type", readout=readout)
        cpu = time.process_time() - t0
        for method, est in estimates.items():
            P, T = est[types].to_numpy(), truth.to_numpy()
            for i, t in enumerate(types):
                r = np.corrcoef(P[:, i], T[:, i])[0, 1] if P[:, i].std() > 0 else np.nan
                results.append(dict(gene_set=gene_set, method=method, cell_type=t, pearson_r=r,
                                    rmse=np.sqrt(((P[:, i] - T[:, i]) ** 2).mean()),
                                    dominant_acc=(P.argmax(1) == T.argmax(1)).mean(),
                                    steps=max_iter if method != "NNLS" else "", scferry_cpu_s=round(cpu, 1)))
        rmse_u = np.sqrt(((1 / K - truth.to_numpy()) ** 2).mean(axis=0))
        for i, t in enumerate(types):
            results.append(dict(gene_set=gene_set, method="uniform 1/K", cell_type=t, pearson_r=np.nan,
                                rmse=rmse_u[i], dominant_acc=np.nan, steps="", scferry_cpu_s=np.nan))
        print(f"[{name} split test] {gene_set} done ({cpu:.0f} CPU s)", flush=True)
    table = pd.DataFrame(results)
    table.to_csv(out / f"{name}_split_test.tsv", sep="\t", index=False)
    wide = table.pivot_table(index="cell_type", columns=["gene_set", "method"], values="pearson_r")
    print("Pearson r per type:\n" + wide.round(3).to_string())
    summ = table.groupby(["gene_set", "method"], sort=False).agg(
        mean_r=("pearson_r", "mean"), min_r=("pearson_r", "min"), mean_rmse=("rmse", "mean"),
        dominant_acc=("dominant_acc", "first"))
    print(summ.round(3).to_string(), flush=True)
    return table


def run(name: str, out: Path, max_iter: int | None, seed: int, params: dict, tag: str, readout: str,
        reuse: bool) -> dict:
    """Train (or, with ``reuse``, read the plan-mass table ``<name>_mass.tsv`` a previous run
    wrote), read out ``readout``, draw the map and the NNLS map, write the tables."""
    ref_file, st_file, first, title = CASES[name]
    ref, st = ad.read_h5ad(DATA / ref_file), ad.read_h5ad(DATA / st_file)
    name = name + (f"_{tag}" if tag else "")
    shown = ", ".join(f"{k}={v}" for k, v in params.items())
    labels = ref.obs["cell_type"].astype(str).to_numpy()
    if reuse:
        mass = pd.read_csv(out / f"{name}_mass.tsv", sep="\t", index_col=0).drop(columns=["x", "y"])
        mass = mass.loc[st.obs_names]
        props = mass if readout == "mass" else per_type_mean(mass, labels)
        st.obsm["scferry_proportions"] = props.to_numpy(np.float32)
        st.uns["scferry_proportions_columns"] = list(props.columns)
        old = pd.read_csv(out / "timing.tsv", sep="\t").set_index("dataset").loc[name]
        steps, common = int(old["iterations"]), int(old["common_genes"])
        t_train, t_dec = float(old["train_seconds"]), float(old["deconvolve_seconds"])
    else:
        t0 = time.perf_counter()
        model = sf.integrate({"ref": ref, "spots": st}, method="uniport", max_iter=max_iter, seed=seed,
                             progress=False, **params)
        t1 = time.perf_counter()
        mass = sf.deconvolve(model, reference="ref", spots="spots", label_key="cell_type", readout="mass")
        props = sf.deconvolve(model, reference="ref", spots="spots", label_key="cell_type", readout=readout)
        t2 = time.perf_counter()
        steps, common = model.train_params["iterations_run"], len(model.preprocessing.common_genes)
        t_train, t_dec = round(t1 - t0, 1), round(t2 - t1, 3)
    coords = np.asarray(st.obsm["spatial"])[:, :2]
    for what, table in (("proportions", props), ("mass", mass)):
        table = table.copy()
        table.insert(0, "x", coords[:, 0])
        table.insert(1, "y", coords[:, 1])
        table.to_csv(out / f"{name}_{what}.tsv", sep="\t", index_label="spot")
    rest = list(props.mean().sort_values(ascending=False).index)
    types = [t for t in first if t in props.columns] + [t for t in rest if t not in first]
    sf.pl.spatial_proportions(st, out / f"{name}_proportions.png", types=types,
                              title=f"{title}: scferry uniPort OT-plan proportions, readout={readout!r} "
                                    f"({steps} steps{', ' + shown if shown else ''})")
    nnls = nnls_proportions(ref, st, list(props.columns))
    st.obsm["nnls_proportions"] = nnls.to_numpy()
    st.uns["nnls_proportions_columns"] = list(nnls.columns)
    n_shared = len(st.var_names.intersection(ref.var_names))
    sf.pl.spatial_proportions(st, out / f"{name}_nnls.png", key="nnls_proportions", types=types,
                              title=f"{title}: model-free check, NNLS on the reference types' mean "
                                    f"profiles ({n_shared} shared genes)")
    top = props.idxmax(axis=1).value_counts()
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
    return dict(dataset=name, params=shown, cells=ref.n_obs, spots=st.n_obs, common_genes=common,
                iterations=steps, train_seconds=t_train, deconvolve_seconds=t_dec, readout=readout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--max-iter", type=int, default=None, help="training steps (default: uniPort's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", nargs="*", choices=sorted(CASES), default=None)
    parser.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                        help="extra sf.integrate parameter (VALUE as a Python literal); repeatable")
    parser.add_argument("--tag", default="", help="suffix of the output names (for --param runs)")
    parser.add_argument("--readout", default="type_mean", choices=["type_mean", "mass"],
                        help="sf.deconvolve's readout")
    parser.add_argument("--reuse", action="store_true",
                        help="no training: read out <name>_mass.tsv of an earlier run again")
    parser.add_argument("--split-test", action="store_true",
                        help="only the split-reference test (see split_test) of the --only datasets")
    parser.add_argument("--split-iters", type=int, default=500, help="scferry steps of the split test")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "deconvolve")
    args = parser.parse_args()
    params = integrate_params(args.param)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.split_test:
        for name in args.only or list(CASES):
            split_test(name, args.out, args.split_iters, args.seed)
        return
    rows = []
    for name in args.only or list(CASES):
        rows.append(run(name, args.out, args.max_iter, args.seed, params, args.tag, args.readout, args.reuse))
        print(rows[-1], flush=True)
    timing = args.out / "timing.tsv"
    old = pd.read_csv(timing, sep="\t") if timing.exists() else pd.DataFrame()
    new = pd.DataFrame(rows)
    if len(old):
        old = old[~old["dataset"].isin(new["dataset"])]
    pd.concat([old, new]).to_csv(timing, sep="\t", index=False)


if __name__ == "__main__":
    main()
