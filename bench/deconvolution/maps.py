#!/usr/bin/env python
"""Real-section maps: sf.deconvolve (defaults) and NNLS on the same spots, PDAC-A ST, Visium
hippocampus and Visium lymph node, drawn with sf.pl.spatial_proportions.

    OMP_NUM_THREADS=1 nice -n 5 ~/.virtualenvs/r-scferry/bin/python bench/deconvolution/maps.py

Per dataset: the whole reference (every type with at least ``--min-cells`` cells), the real spots,
``sf.integrate`` (uniPort, ``--sf-iters`` steps: the default readout reads the counts, not the
embedding) then ``sf.deconvolve`` at its defaults (on the shared genes that mark a type,
``select_genes``); NNLS (spots.nnls_proportions) of the same spots' counts on the reference's
per-type mean counts over every shared gene the reference expresses (the study's NNLS). Writes under
``bench/out/deconvolution/maps/``: ``<name>_sf.png``, ``<name>_nnls.png`` (types in the same
order), ``<name>_summary.tsv`` (per type: mean proportion, spots where dominant, Moran's I on the 6
nearest spots, for both methods, and their per-type correlation).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from spots import nnls_proportions  # noqa: E402
sys.path.insert(0, str(HERE.parent / "common"))
from datasets import shared_data_dir  # noqa: E402

PAIRS = {"pdac": ("pdac_a_scrna.h5ad", "pdac_a_st.h5ad"),
         "hippocampus": ("visium_hippocampus_ref.h5ad", "visium_hippocampus_st.h5ad"),
         "lymph_node": ("visium_lymphnode_ref.h5ad", "visium_lymphnode_st.h5ad")}


def morans_i(values: np.ndarray, xy: np.ndarray, k: int = 6) -> float:
    """Moran's I of one value per spot, weights 1/k on each spot's k nearest spots."""
    from scipy.spatial import cKDTree
    nn = cKDTree(xy).query(xy, k=k + 1)[1][:, 1:]
    z = values - values.mean()
    denom = (z ** 2).sum()
    return float((z[:, None] * z[nn]).sum() / k / denom) if denom > 0 else np.nan


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", nargs="+", default=list(PAIRS), choices=list(PAIRS))
    p.add_argument("--min-cells", type=int, default=20)
    p.add_argument("--sf-iters", type=int, default=200)
    p.add_argument("--data-dir", type=Path, default=Path(shared_data_dir()))
    p.add_argument("--out", type=Path, default=HERE.parent / "out" / "deconvolution" / "maps")
    args = p.parse_args()
    import anndata as ad
    import torch
    torch.set_num_threads(1)
    import scferry as sf
    from scferry.tl.deconvolve import type_signatures
    args.out.mkdir(parents=True, exist_ok=True)
    for name in args.only:
        ref = ad.read_h5ad(args.data_dir / PAIRS[name][0])
        st = ad.read_h5ad(args.data_dir / PAIRS[name][1])
        n = ref.obs["cell_type"].value_counts()
        ref = ref[ref.obs["cell_type"].isin(n.index[n >= args.min_cells])].copy()
        ref.obs["cell_type"] = ref.obs["cell_type"].astype(str)
        model = sf.integrate({"ref": ref, "spots": st}, method="uniport", max_iter=args.sf_iters,
                             patience=None, seed=0, progress=False)
        props = sf.deconvolve(model, reference="ref", spots="spots", label_key="cell_type", progress=False)
        types = list(props.mean().sort_values(ascending=False).index)
        sf.pl.spatial_proportions(st, args.out / f"{name}_sf.png", types=types,
                                  title=f"{name}: sf.deconvolve (defaults), {st.n_obs} spots")
        genes = ref.var_names.intersection(st.var_names)
        S = type_signatures(ref[:, genes].X, ref.obs["cell_type"].to_numpy(), list(props.columns))
        used = S.sum(axis=0) > 0
        Y = st[:, genes].X
        nn = pd.DataFrame(nnls_proportions(Y.tocsr()[:, np.flatnonzero(used)], S[:, used]),
                          index=st.obs_names, columns=props.columns)
        other = st.copy()
        other.obsm["scferry_proportions"] = nn.to_numpy(np.float32)
        sf.pl.spatial_proportions(other, args.out / f"{name}_nnls.png", types=types,
                                  title=f"{name}: NNLS on the same spots, every shared gene")
        xy = np.asarray(st.obsm["spatial"], dtype=float)[:, :2]
        rows = []
        for t in types:
            rows.append({"cell_type": t, "sf mean": props[t].mean(), "NNLS mean": nn[t].mean(),
                         "sf dominant": int((props.idxmax(axis=1) == t).sum()),
                         "NNLS dominant": int((nn.idxmax(axis=1) == t).sum()),
                         "sf Moran I": morans_i(props[t].to_numpy(), xy),
                         "NNLS Moran I": morans_i(nn[t].to_numpy(), xy),
                         "r(sf, NNLS)": float(np.corrcoef(props[t], nn[t])[0, 1])})
        summary = pd.DataFrame(rows)
        summary.to_csv(args.out / f"{name}_summary.tsv", sep="\t", index=False)
        print(f"[{name}] {st.n_obs} spots, {int(used.sum())} genes, params {st.uns['scferry_proportions_params']}")
        print(summary.round(3).to_string(index=False), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
