#!/usr/bin/env python
"""``tss="auto"`` (the default of ``method="gw"`` and of diagonal uniPort's GW guidance): RNA vs
ATAC peaks given nothing beside the data, the peaks read as the shipped assembly whose TSSs they
lie near, against ``tss=None`` (plain GW, the former behaviour when no table was passed). Datasets
with peaks (SNARE-seq cortex, mm10; sci-CAR A549, hg19), all cells, pairing only scores. One JSON
line per run, appended to ``--out``. ``cca``: the baseline, Seurat CCA of the RNA genes vs the
peaks' gene activity on the assembly ``tss="auto"`` picks (``tss`` setting ignored; run once).

    OMP_NUM_THREADS=1 PYTHONPATH=python ~/.virtualenvs/r-scferry/bin/python \\
        bench/diagonal/auto_tss.py --methods gw uniport --seeds 0 1 2 --out bench/out/diag10/auto_tss.jsonl
"""
from __future__ import annotations

import argparse
import json
import resource
import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import load, score  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--datasets", nargs="+", default=["snare_peaks", "scicar"])
    p.add_argument("--methods", nargs="+", default=["gw", "uniport"], choices=["gw", "uniport", "cca"])
    p.add_argument("--tss", nargs="+", default=["auto", "none"])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--out", type=Path, default=Path("bench/out/diag10/auto_tss.jsonl"))
    args = p.parse_args()
    import scferry as sf
    args.out.parent.mkdir(parents=True, exist_ok=True)
    for name in args.datasets:
        for seed in args.seeds:
            rna0, oth0, other, paired = load(name, 0, seed)
            for method in args.methods:
                for tss in (args.tss if method != "cca" else ["auto"]):
                    rna, oth = rna0.copy(), oth0.copy()
                    if method == "cca":
                        row = {"dataset": name, "seed": seed, "method": method, "tss": tss,
                               **cca_baseline(rna, oth, seed)}
                        print(json.dumps(row), flush=True)
                        with open(args.out, "a") as f:
                            f.write(json.dumps(row) + "\n")
                        continue
                    setting = {"tss": None if tss == "none" else tss}
                    kw = dict(method="gw", **setting) if method == "gw" else dict(
                        method="uniport", mode="diagonal", gw_params=setting)
                    t = time.process_time()
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        model = sf.integrate({"rna": rna, other: oth}, seed=seed, progress=False, **kw)
                    cpu = time.process_time() - t
                    choices = model.params["gw_record"]["choices"] if method == "uniport" else \
                        model.choices
                    row = {"dataset": name, "seed": seed, "method": method, "tss": tss,
                           "tss_choice": (choices.get("tss") or {}).get("value"),
                           "tss_reason": (choices.get("tss") or {}).get("reason"),
                           **score(np.asarray(rna.obsm["X_scferry"]), np.asarray(oth.obsm["X_scferry"]),
                                   rna.obs["cell_type"], oth.obs["cell_type"], paired),
                           "cpu_s": cpu,
                           "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
                    print(json.dumps(row), flush=True)
                    with open(args.out, "a") as f:
                        f.write(json.dumps(row) + "\n")
    return 0


def cca_baseline(rna, atac, seed: int) -> dict:
    """Seurat CCA (20 components) of the log-normalised RNA genes vs the peaks' gene activity on
    the shipped assembly the peaks lie nearest to (as ``tss="auto"`` chooses it)."""
    import scferry as sf
    from scferry.methods.scmodal_cca import seurat_cca
    from scferry.metrics import foscttm
    from scferry.pp import normalize_log1p
    frac = sf.tl.promoter_fractions(atac)
    genome = max(frac, key=frac.get)
    t = time.process_time()
    ga = sf.tl.gene_activity(atac, sf.tl.tss_table(genome))
    genes = [g for g in rna.var_names if g in ga.var_names]
    z = seurat_cca(normalize_log1p(rna[:, genes].X), normalize_log1p(ga[:, genes].X),
                   n_components=20, seed=seed)
    return {"tss_choice": genome, "genes": len(genes), "foscttm": foscttm(*z),
            "cpu_s": time.process_time() - t}


if __name__ == "__main__":
    raise SystemExit(main())
