"""uniPort vertical and diagonal modes on real paired and unpaired data (issue 4, items 4-5).

    python bench/multiome/bench_uniport_modes.py [--quick] [--only snare_atac,scicar,...]

Rows: SNARE-seq cortex (RNA + ATAC peaks; RNA + ATAC gene activity), sci-CAR A549 (RNA + ATAC
peaks), Pamona PBMC (RNA + ATAC, 50 unrelated features each; unpaired). For each: vertical mode
(paired data only), diagonal mode, and diagonal mode with the prior cell-type correspondence
(label_key; this uses the ATAC labels in training, so its transfer accuracy is not a blind figure).

Vertical mode is trained on 90% of the cells; the held-apart 10% are embedded afterwards, each
modality through its own encoder (scferry.project), and scored there too: on training cells the
pairing loss makes FOSCTTM close to 0 by construction. FOSCTTM: 0 = every cell's partner is its
nearest cell, 0.5 = random. Transfer: kNN (k=30) of RNA labels onto ATAC cells in the joint
space, accuracy over ATAC cells whose label is known ("Mis" excluded) and, for Pamona, of a type
the RNA data has. One torch thread, CPU.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import anndata as ad
import numpy as np
import torch

import scferry as sf
from scferry.metrics import foscttm, knn_label_transfer

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "common"))
from datasets import shared_data_dir  # noqa: E402

DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
if not DATA.is_dir():
    DATA = Path(shared_data_dir())


def load(prefix, kinds):
    return [ad.read_h5ad(DATA / f"{prefix}_{k}.h5ad") for k in kinds]


def accuracy(X_src, lab_src, X_tgt, lab_tgt):
    lab_src, lab_tgt = np.asarray(lab_src, str), np.asarray(lab_tgt, str)
    keep = (lab_tgt != "Mis") & np.isin(lab_tgt, lab_src)
    pred, _ = knn_label_transfer(X_src, lab_src, X_tgt[keep], k=30)
    return float((np.asarray(pred) == lab_tgt[keep]).mean())


def run(name, rna, atac, mode, max_iter, prior=False, preprocess=True, paired=True, seed=0):
    rng = np.random.default_rng(seed)
    n = rna.n_obs
    if mode == "vertical":
        test = np.zeros(n, bool)
        test[rng.choice(n, n // 10, replace=False)] = True
        tr_r, tr_a, te_r, te_a = rna[~test].copy(), atac[~test].copy(), rna[test].copy(), atac[test].copy()
    else:
        tr_r, tr_a = rna.copy(), atac.copy()
    t0 = time.time()
    model = sf.integrate({"rna": tr_r, "atac": tr_a}, method="uniport", mode=mode, seed=seed,
                         max_iter=max_iter, progress=False, preprocess=preprocess,
                         label_key="cell_type" if prior else None)
    dt = time.time() - t0
    Xr, Xa = tr_r.obsm["X_scferry"], tr_a.obsm["X_scferry"]
    row = dict(data=name, mode=mode + ("+prior" if prior else ""), cells=f"{tr_r.n_obs}+{tr_a.n_obs}",
               iters=model.train_params["iterations_run"], time_s=round(dt),
               foscttm=foscttm(Xr, Xa) if paired else float("nan"),
               acc=accuracy(Xr, tr_r.obs["cell_type"], Xa, tr_a.obs["cell_type"]))
    if mode != "vertical":  # transfer through the kept global OT plan (uniPort's label transfer)
        probs = sf.transfer_labels(model, "rna", "atac", "cell_type", method="plan")
        lab = tr_a.obs["cell_type"].astype(str).to_numpy()
        keep = (lab != "Mis") & np.isin(lab, tr_r.obs["cell_type"].astype(str).to_numpy())
        row["acc_plan"] = float((probs.idxmax(axis=1).to_numpy()[keep] == lab[keep]).mean())
    if mode == "vertical":
        Pr = sf.project(model, te_r, "rna")
        Pa = sf.project(model, te_a, "atac")
        row["foscttm_heldout"] = foscttm(Pr, Pa)
        row["acc_heldout"] = accuracy(Xr, tr_r.obs["cell_type"], Pa, te_a.obs["cell_type"])
    print(" | ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()),
          flush=True)
    return row


def main(argv=None):
    torch.set_num_threads(1)
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="1,000 cells, 300 steps")
    ap.add_argument("--iters", type=int, default=1000)
    ap.add_argument("--only", default="")
    args = ap.parse_args(argv)
    iters = 300 if args.quick else args.iters
    sub = 1000 if args.quick else None

    def subset(ads, paired=True):
        if sub is None:
            return ads
        rng = np.random.default_rng(0)
        if paired:
            idx = np.sort(rng.choice(ads[0].n_obs, min(sub, ads[0].n_obs), replace=False))
            return [a[idx].copy() for a in ads]
        return [a[np.sort(rng.choice(a.n_obs, min(sub, a.n_obs), replace=False))].copy() for a in ads]

    def pamona():
        out = []
        for a in load("pamona_pbmc", ("rna", "atac")):  # real-valued features: shift to >= 0
            X = np.asarray(a.X, np.float32)
            a = ad.AnnData(X - X.min(axis=0), obs=a.obs.copy(), var=a.var.copy())
            out.append(a)
        return out

    jobs = {
        "snare_atac": lambda: [("SNARE cortex RNA+peaks", *subset(load("snare_cortex", ("rna", "atac"))), True, True)],
        "snare_gene": lambda: [("SNARE cortex RNA+gene activity", *subset(load("snare_cortex", ("rna", "atac_gene"))), True, True)],
        "scicar": lambda: [("sci-CAR A549 RNA+peaks", *subset(load("scicar_a549", ("rna", "atac"))), True, True)],
        "pamona": lambda: [("Pamona PBMC (unpaired)", *subset(pamona(), paired=False), False, False)],
    }
    only = [j for j in args.only.split(",") if j] or ["snare_atac", "scicar", "pamona", "snare_gene"]
    for key in only:
        for name, rna, atac, paired, preprocess in jobs[key]():
            modes = [("vertical", False)] if paired else []
            modes += [("diagonal", False), ("diagonal", True)]
            for mode, prior in modes:
                run(name, rna, atac, mode, iters, prior=prior, preprocess=preprocess, paired=paired)


if __name__ == "__main__":
    sys.exit(main())
