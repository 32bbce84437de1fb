#!/usr/bin/env python
"""Diagonal uniPort's GW guidance (issue 17): its weight in the minibatch OT cost (``gw_weight``)
and which `gw` embedding guides it (``refine`` 0: GW's joint embedding; 1: refined, as
``method="gw"`` returns it), on every diagonal set at full size, the guidance given what ``gw`` is
given beside the data (``common.user_inputs``: SNARE peaks' TSS table, CITE-seq's gene-protein
table). Pairing and labels only score. One JSON line per run, appended to ``--out``.

    OMP_NUM_THREADS=1 PYTHONPATH=python ~/.virtualenvs/r-scferry/bin/python \\
        bench/diagonal/uniport_guidance.py --datasets snare_gene pamona --seeds 0 1 2 \\
        --settings 0:1 1:10 --out bench/out/diag9/uniport_guidance.jsonl
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import all_cells, append_row, fit_and_score, user_inputs  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--datasets", nargs="+", default=["snare_gene", "snare_peaks", "pamona", "cite"])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--settings", nargs="+", default=["0:1", "1:10"], help="refine:gw_weight pairs")
    p.add_argument("--max-iter", type=int, default=2000)
    p.add_argument("--params", type=json.loads, default={},
                   help="other settings of the fits, as JSON, e.g. '{\"gw_fit_weight\": 1}'")
    p.add_argument("--out", type=Path, default=Path("bench/out/diag9/uniport_guidance.jsonl"))
    args = p.parse_args()
    import scferry as sf
    for name, seed, rna0, oth0, other, paired in all_cells(args.datasets, args.seeds):
        for setting in args.settings:
            refine, weight = setting.split(":")
            rna, oth = rna0.copy(), oth0.copy()  # each fit writes its embedding into obsm
            given = {"refine": int(refine), **user_inputs(name, rna, oth, other)}
            scores = fit_and_score(lambda: sf.integrate(
                {"rna": rna, other: oth}, method="uniport", mode="diagonal", gw_params=given,
                gw_weight=float(weight), max_iter=args.max_iter, seed=seed, progress=False,
                **args.params), rna, oth, paired)
            append_row(args.out, {"dataset": name, "seed": seed, "refine": int(refine),
                                  "gw_weight": float(weight), **args.params, **scores})
    return 0


if __name__ == "__main__":
    sys.exit(main())
