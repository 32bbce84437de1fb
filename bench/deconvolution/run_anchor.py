#!/usr/bin/env python
"""One anchor method on one study input directory, run INSIDE its own venv
(bench/venvs/setup_cell2location.sh):

    bench/.venvs/cell2location/bin/python bench/deconvolution/run_anchor.py cell2location --dir DIR \\
        --ref-epochs 100 --spatial-epochs 1000 --seed 0
    bench/.venvs/tangram/bin/python bench/deconvolution/run_anchor.py tangram --dir DIR --epochs 500 --seed 0

``DIR`` holds ref.npz, spots.npz, genes.txt, ref_obs.tsv (cell, cell_type), spots.txt (study.py).
Writes ``DIR/<method>/proportions.tsv`` (spots x types, rows sum to 1) and ``result.json``
(time s, CPU s, peak resident MiB, the epochs used).

- cell2location (Kleshchevnikov et al. 2022): its tutorial's steps at reduced epochs (CPU):
  ``filter_genes`` (cell_count_cutoff=5, cell_percentage_cutoff2=0.03, nonz_mean_cutoff=1.12),
  ``RegressionModel`` on the reference counts (labels = ``cell_type``), signatures = the
  posterior means of per-cluster mean expression; then ``Cell2location(N_cells_per_location=8,
  detection_alpha=20)`` on the spots; proportions = posterior mean abundances ``w_sf`` per spot,
  row-normalised.
- Tangram (Biancalani et al. 2021): ``map_cells_to_space(mode="cells")`` on the genes both share
  (its ``pp_adatas`` with all genes as training genes), then ``project_cell_annotations`` on
  ``cell_type``; proportions = the projected type scores, row-normalised.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent / "common")]
from bench_deconvolve import load_inputs  # noqa: E402
from procstat import status_mb  # noqa: E402


def cell2location(ref, spots, args) -> tuple[pd.DataFrame, dict]:
    import cell2location as c2l
    from cell2location.models import RegressionModel
    import matplotlib
    matplotlib.use("Agg")  # filter_genes draws its cut-offs
    import matplotlib.pyplot as plt
    from cell2location.utils.filtering import filter_genes
    # The reference signatures depend only on the reference half, the seed and the epochs, which
    # the four designs of a dataset x seed share: fitted once, kept beside the designs' folders
    # (keyed by a hash of ref.npz) and reused by the other designs.
    import hashlib
    key = hashlib.sha1((args.dir / "ref.npz").read_bytes()).hexdigest()[:12]
    cache = args.dir.parent / f"c2l_signatures_ref{args.ref_epochs}_seed{args.seed}_{key}.tsv"
    if cache.exists():
        sig = pd.read_csv(cache, sep="\t", index_col=0)
        types = list(sig.columns)
        args._cached = True
    else:
        # the tutorial's gene selection on the reference (its default cut-offs); all genes of the
        # small panels pass, PDAC keeps about half of its ~20,000
        ref = ref[:, filter_genes(ref, cell_count_cutoff=5, cell_percentage_cutoff2=0.03,
                                  nonz_mean_cutoff=1.12)].copy()
        plt.close("all")
        ref.obs["cell_type"] = ref.obs["cell_type"].astype(str)
        RegressionModel.setup_anndata(ref, labels_key="cell_type")
        reg = RegressionModel(ref)
        reg.train(max_epochs=args.ref_epochs, accelerator="cpu", batch_size=2500)
        ref = reg.export_posterior(ref, sample_kwargs={"num_samples": 200, "batch_size": 2500})
        types = list(ref.uns["mod"]["factor_names"])
        sig = ref.varm["means_per_cluster_mu_fg"][[f"means_per_cluster_mu_fg_{t}" for t in types]].copy()
        sig.columns = types
        sig.to_csv(cache, sep="\t")
        args._cached = False
    genes = spots.var_names.intersection(sig.index)
    spots = spots[:, genes].copy()
    sig = sig.loc[genes]
    c2l.models.Cell2location.setup_anndata(spots)
    mod = c2l.models.Cell2location(spots, cell_state_df=sig, N_cells_per_location=8, detection_alpha=20)
    done = 0
    for ep in sorted(set(args.checkpoints or []) | {args.spatial_epochs}):
        # a second train() call continues from the current variational parameters (the module's)
        mod.train(max_epochs=ep - done, batch_size=None, train_size=1, accelerator="cpu")
        done = ep
        post = mod.export_posterior(spots.copy(), sample_kwargs={"num_samples": 200, "batch_size": mod.adata.n_obs})
        w = post.obsm["means_cell_abundance_w_sf"]
        w.columns = [c.replace("meanscell_abundance_w_sf_", "") for c in w.columns]
        info = {"ref_epochs": args.ref_epochs, "spatial_epochs": ep, "reference_reused": args._cached}
        if ep < args.spatial_epochs:  # a convergence checkpoint: its own sub-directory
            write(w[types], info, args.dir / f"{args.name or 'cell2location'}_e{ep}", args._t0)
    return w[types], info


def tangram(ref, spots, args) -> tuple[pd.DataFrame, dict]:
    import tangram as tg
    genes = list(ref.var_names[np.asarray(ref.X.sum(axis=0)).ravel() > 0])
    tg.pp_adatas(ref, spots, genes=genes)
    amap = tg.map_cells_to_space(ref, spots, mode="cells", num_epochs=args.epochs, device="cpu",
                                 random_state=args.seed, verbose=False)
    tg.project_cell_annotations(amap, spots, annotation="cell_type")
    pred = spots.obsm["tangram_ct_pred"]
    return pred, {"epochs": args.epochs}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("method", choices=["cell2location", "tangram"])
    p.add_argument("--dir", type=Path, required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--ref-epochs", type=int, default=100)
    p.add_argument("--spatial-epochs", type=int, default=1000)
    p.add_argument("--epochs", type=int, default=500)
    p.add_argument("--checkpoints", type=int, nargs="*", default=None,
                   help="cell2location: also write the posterior after these many spatial epochs "
                        "(into <name>_e<epochs>/; a convergence measurement in one run)")
    p.add_argument("--name", default=None, help="output sub-directory (default: the method's name)")
    args = p.parse_args()
    import torch
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    ref, spots = load_inputs(args.dir)
    args._t0 = (time.perf_counter(), time.process_time())
    props, info = (cell2location if args.method == "cell2location" else tangram)(ref, spots, args)
    write(props, info, args.dir / (args.name or args.method), args._t0)
    return 0


def write(props: pd.DataFrame, info: dict, out: Path, t0: tuple[float, float]) -> None:
    """proportions.tsv (rows summed to 1) and result.json (time and CPU s since ``t0``, peak MiB)."""
    t1, c1 = time.perf_counter(), time.process_time()
    props = props.clip(lower=0)
    props = props.div(props.sum(axis=1), axis=0)
    out.mkdir(exist_ok=True)
    props.to_csv(out / "proportions.tsv", sep="\t", index_label="spot")
    json.dump({"time_s": t1 - t0[0], "cpu_s": c1 - t0[1], "peak_rss_mb": status_mb(), **info},
              open(out / "result.json", "w"), indent=1)


if __name__ == "__main__":
    sys.exit(main())
