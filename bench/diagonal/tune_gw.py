#!/usr/bin/env python
"""Grid over scferry.gw's settings on every dataset of the study (one seed, subsampled): the
evidence for the defaults in scferry.gw.DEFAULTS. Writes tune.tsv in --out.

    OMP_NUM_THREADS=1 nice -n 5 ~/.virtualenvs/r-scferry/bin/python bench/diagonal/tune_gw.py --max-cells 3000
"""
from __future__ import annotations

import argparse
import itertools
import sys
import time
import warnings
from pathlib import Path

import pandas as pd

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from common import SETS, load, score  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--max-cells", type=int, default=3000)
    p.add_argument("--datasets", nargs="+", default=list(SETS))
    p.add_argument("--epsilon", nargs="+", type=float, default=[1e-3, 5e-3])
    p.add_argument("--n-metacells", nargs="+", type=int, default=[300, 600])
    p.add_argument("--k", nargs="+", type=int, default=[10, 30])
    p.add_argument("--n-starts", nargs="+", type=int, default=[10])
    p.add_argument("--seeds", nargs="+", type=int, default=[0])
    p.add_argument("--out", type=Path, default=HERE.parent / "out" / "diagonal")
    args = p.parse_args()
    import scferry as sf
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for name, seed in itertools.product(args.datasets, args.seeds):
        rna, oth, other, paired = load(name, args.max_cells, seed)
        for eps, m, k, ns in itertools.product(args.epsilon, args.n_metacells, args.k, args.n_starts):
            if k != args.k[0] and m != args.n_metacells[0]:
                continue  # k varied at the first metacell count only
            t = time.process_time()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                model = sf.integrate({"rna": rna, other: oth}, method="gw", epsilon=eps, n_metacells=m,
                                     k=k, n_starts=ns, seed=seed, progress=False)
            cpu = time.process_time() - t
            s = score(rna.obsm["X_scferry"], oth.obsm["X_scferry"], rna.obs["cell_type"],
                      oth.obs["cell_type"], paired)
            rows.append({"dataset": name, "seed": seed, "epsilon": eps, "n_metacells": m, "k": k,
                         "n_starts": ns, **s, "gw_cost": model.alignment.gw_distance,
                         "chosen": model.params["start_chosen"], "cpu_s": cpu})
            print(rows[-1], flush=True)
            pd.DataFrame(rows).to_csv(args.out / "tune.tsv", sep="\t", index=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
