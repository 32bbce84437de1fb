"""A batch that holds only one cell type beside a batch that holds them all (a sorted population,
or a sample that lost a type): does a refinement keep that batch's cells with their own type?

From the study's saved symphony PCA (``OUT/symphony/seedS/pca``, written by ``bench_integration.py
--methods pca``): every cell of the chemistry ``--full`` (all types) plus the cells of one type
from one other chemistry, the PCA rows of those cells as they are. Each subset is refined by
``sf.refine`` at its defaults, by ``sf.refine(prealign_shift="ot")`` (the pre-alignment's
shift by unbalanced OT), by ``sf.refine(prealign="none")`` and by scBIOT 1.2.1's OT
refinement (``bench/refine/reference_scbiot.py`` in ``bench/.venvs/scbiot``, every argument at its
default). Scores: the one-type batch's kNN label transfer (k = 15) from the full chemistry (1 on
the PCA: the two are close but apart) and the batch entropy of all cells (``scferry.metrics``).
Labels are used for scoring only. Prints one markdown table (mean over ``--seeds``)::

    P=~/.virtualenvs/r-scferry/bin/python
    $P bench/batch_integration/composition_shift.py --out /work/out/int --seeds 0 1
"""
from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
import warnings
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd

import bench_integration as bi


def transfer(X: np.ndarray, query: np.ndarray, types: np.ndarray) -> float:
    from scferry import metrics
    pred, _ = metrics.knn_label_transfer(X[~query], types[~query], X[query], k=15)
    return metrics.transfer_accuracy(types[query], pred)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="bench/out/integration")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--full", default="10x_3p_v1", help="the chemistry kept whole")
    ap.add_argument("--types", nargs="+", default=["B", "Mono_CD14", "NK", "T_CD8"])
    ap.add_argument("--venvs", default=str(bi.BENCH / ".venvs"))
    a = ap.parse_args()
    import scferry as sf
    from scferry import metrics
    ddir = Path(a.out) / "symphony"
    obs = pd.read_csv(ddir / "input" / "obs.tsv", sep="\t", keep_default_na=False, dtype=str)
    batch, types = obs["batch"].to_numpy(), obs["cell_type"].to_numpy()
    others = [b for b in sorted(set(batch)) if b != a.full]
    print("| one-type batch | cells | input mixing | PCA (input) | sf.refine | sf.refine, "
          "prealign_shift=\"ot\" | sf.refine, prealign=\"none\" | scBIOT 1.2.1 OT |\n"
          "|---|---|---|---|---|---|---|---|")
    for ty in a.types:
        for other in others:
            keep = (batch == a.full) | ((batch == other) & (types == ty))
            sub = obs[keep].reset_index(drop=True)
            query, t, b = (sub["batch"] == other).to_numpy(), sub["cell_type"].to_numpy(), sub["batch"].to_numpy()
            rows: dict[str, list] = {k: [] for k in ("input", "refine", "ot", "none", "scbiot")}
            mixing = []
            for seed in a.seeds:
                X = np.load(ddir / f"seed{seed}" / "pca" / "embedding.npy")[keep]
                outs = {"input": X}
                for name, kw in (("refine", {}), ("ot", {"prealign_shift": "ot"}),
                                 ("none", {"prealign": "none"})):
                    A = ad.AnnData(obs=sub.set_index("cell"))
                    A.obsm["X_in"] = X
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore", sf.ScferryWarning)
                        rec = sf.refine(A, basis="X_in", seed=seed, device="cpu", progress=False, **kw)
                    outs[name] = A.obsm["X_scferry_refined"]
                    if name == "refine":
                        mixing.append(rec["input_mixing"])
                with tempfile.TemporaryDirectory() as tmp:
                    emb, obs_path, res = Path(tmp) / "emb.npy", Path(tmp) / "obs.tsv", Path(tmp) / "out"
                    np.save(emb, X)
                    sub.to_csv(obs_path, sep="\t", index=False)
                    subprocess.run(bi.scbiot_cmd(Path(a.venvs), emb, obs_path, res, seed, 1), check=True,
                                   capture_output=True)
                    outs["scbiot"] = np.load(res / "embedding.npy")
                for name, Z in outs.items():
                    rows[name].append((transfer(Z, query, t), metrics.batch_entropy(Z, b, seed=seed)))
            cells = " | ".join(f"{np.mean([r[0] for r in rows[k]]):.3f} / {np.mean([r[1] for r in rows[k]]):.3f}"
                               for k in rows)
            print(f"| {ty} from {other} | {int(query.sum())} | {np.mean(mixing):.2f} | {cells} |", flush=True)
    print(json.dumps({"seeds": a.seeds, "full": a.full, "cells": "transfer / batch entropy"}))


if __name__ == "__main__":
    main()
