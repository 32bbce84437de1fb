#!/usr/bin/env python
"""``tss="auto"`` (the default of ``method="gw"`` and of diagonal uniPort's GW guidance): RNA vs
ATAC peaks given nothing beside the data, the peaks read as the shipped assembly whose TSSs they
lie near, against ``tss=None`` (plain GW, the former behaviour when no table was passed). Datasets
with peaks (SNARE-seq cortex, mm10; sci-CAR A549, hg19), all cells, pairing only scores. One JSON
line per run, appended to ``--out``. ``cca``: the baseline, Seurat CCA of the RNA genes vs the
peaks' gene activity on the assembly ``tss="auto"`` picks (``tss`` setting ignored; run once).

    OMP_NUM_THREADS=1 PYTHONPATH=python ~/.virtualenvs/r-scferry/bin/python \\
        bench/diagonal/auto_tss.py --seeds 0 1 2 --out bench/out/diag10/auto_tss.jsonl
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import all_cells, append_row, fit_and_score  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--datasets", nargs="+", default=["snare_peaks", "scicar"])
    p.add_argument("--methods", nargs="+", default=["gw", "uniport"],
                   choices=["gw", "uniport", "cca"])
    p.add_argument("--tss", nargs="+", default=["auto", "none"])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--out", type=Path, default=Path("bench/out/diag10/auto_tss.jsonl"))
    args = p.parse_args()
    import scferry as sf
    for name, seed, rna0, oth0, other, paired in all_cells(args.datasets, args.seeds):
        for method in args.methods:
            for tss in (args.tss if method != "cca" else ["auto"]):
                rna, oth = rna0.copy(), oth0.copy()
                row = {"dataset": name, "seed": seed, "method": method, "tss": tss}
                if method == "cca":
                    append_row(args.out, {**row, **cca_baseline(rna, oth, seed)})
                    continue
                setting = {"tss": None if tss == "none" else tss}
                kw = dict(method="gw", **setting) if method == "gw" else dict(
                    method="uniport", mode="diagonal", gw_params=setting)
                fitted = {}
                scores = fit_and_score(lambda: fitted.setdefault("model", sf.integrate(
                    {"rna": rna, other: oth}, seed=seed, progress=False, **kw)),
                    rna, oth, paired)
                model = fitted["model"]
                choices = model.params["gw_record"]["choices"] if method == "uniport" else \
                    model.choices
                choice = choices.get("tss") or {}
                append_row(args.out, {**row, "tss_choice": choice.get("value"),
                                      "tss_reason": choice.get("reason"), **scores})
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
