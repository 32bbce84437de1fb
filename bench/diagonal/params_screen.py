#!/usr/bin/env python
"""``method="gw"``'s settings that earlier rounds did not vary with the current pipeline (metacells,
the fused cost's alpha, the smoothing of the linked space): one full fit per setting at the
package defaults otherwise, on the same cells, scored by FOSCTTM / transfer RNA -> other
(issue 17; SNARE gene activity is the goal this screens for).

    OMP_NUM_THREADS=1 nice -n 5 ~/.virtualenvs/r-scferry/bin/python bench/diagonal/params_screen.py \
        --datasets snare_gene --seeds 0
"""
from __future__ import annotations

import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from common import load, score, screen_args, user_inputs  # noqa: E402

VARIANTS = {"default": {}, "nm150": {"n_metacells": 150}, "nm600": {"n_metacells": 600},
            "nm1000": {"n_metacells": 1000}, "fa03": {"fused_alpha": 0.3}, "fa07": {"fused_alpha": 0.7},
            "ns20": {"n_smooth": 20}, "ns80": {"n_smooth": 80}}


def main() -> int:
    args = screen_args(["snare_gene"], "variants", list(VARIANTS), HERE.parent / "out" / "diagonal_params")
    import scferry as sf
    with open(args.out / "params.jsonl", "a") as fh:
        for name in args.datasets:
            for seed in args.seeds:
                rna, oth, other, paired = load(name, args.max_cells, seed)
                for v in args.variants:
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        t = time.process_time()
                        sf.integrate({"rna": rna, other: oth}, method="gw", seed=seed, progress=False,
                                     **user_inputs(name, rna, oth, other), **VARIANTS[v])
                        cpu = time.process_time() - t
                    s = score(np.asarray(rna.obsm["X_scferry"]), np.asarray(oth.obsm["X_scferry"]),
                              rna.obs["cell_type"], oth.obs["cell_type"], paired)
                    rec = {"dataset": name, "seed": seed, "variant": v, **s, "cpu_s": round(cpu, 1)}
                    print(json.dumps(rec), flush=True)
                    fh.write(json.dumps(rec) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
