#!/usr/bin/env python
"""Grid over scferry.gw's settings on the datasets of the study (subsampled, seeded): the evidence
for the defaults in scferry.gw.DEFAULTS. Any parameter of ``method="gw"`` is varied with
``--set name=v1,v2,...`` (the grid is the product of all --set lists). CITE-seq is aligned with its
gene-protein table as linked features and SNARE peaks with the TSS table (as in study.py;
``--plain``: without them). Writes --out/tune.tsv (appending rows
to an existing one).

    OMP_NUM_THREADS=1 nice -n 12 ~/.virtualenvs/r-scferry/bin/python bench/diagonal/tune_gw.py \
        --max-cells 2000 --datasets pamona --seeds 0 --set mass=1,0.8 k=10
"""
from __future__ import annotations

import argparse
import ast
import itertools
import sys
import time
import warnings
from pathlib import Path

import pandas as pd

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from common import SETS, load, score, user_inputs  # noqa: E402


def _value(text: str):
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--max-cells", type=int, default=2000)
    p.add_argument("--datasets", nargs="+", default=list(SETS))
    p.add_argument("--seeds", nargs="+", type=int, default=[0])
    p.add_argument("--set", nargs="*", default=[], help="name=v1,v2,... (method='gw' parameters)")
    p.add_argument("--plain", action="store_true",
                   help="no user inputs (CITE-seq's gene-protein table, SNARE peaks' TSS table)")
    p.add_argument("--tag", default="")
    p.add_argument("--out", type=Path, default=HERE.parent / "out" / "diagonal")
    args = p.parse_args()
    import scferry as sf
    grid = {}
    for item in args.set:
        key, vals = item.split("=", 1)
        grid[key] = [_value(v) for v in vals.split(",")]
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "tune.tsv"
    rows = pd.read_csv(path, sep="\t").to_dict("records") if path.exists() else []
    for name, seed in itertools.product(args.datasets, args.seeds):
        rna, oth, other, paired = load(name, args.max_cells, seed)
        extra = {} if args.plain else user_inputs(name, rna, oth, other)
        for combo in itertools.product(*grid.values()):
            hp = dict(zip(grid, combo))
            t = time.process_time()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                model = sf.integrate({"rna": rna, other: oth}, method="gw", seed=seed, progress=False,
                                     **hp, **extra)
            cpu = time.process_time() - t
            s = score(rna.obsm["X_scferry"], oth.obsm["X_scferry"], rna.obs["cell_type"],
                      oth.obs["cell_type"], paired)
            rows.append({"tag": args.tag, "dataset": name, "seed": seed, **hp, **s,
                         "gw_cost": model.alignment.gw_distance, "fused": model.params["fused"],
                         "chosen": model.params["start_chosen"], "cpu_s": round(cpu, 1)})
            print({k: (round(v, 4) if isinstance(v, float) else v) for k, v in rows[-1].items()}, flush=True)
            pd.DataFrame(rows).to_csv(path, sep="\t", index=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
