#!/usr/bin/env python
"""Scores of ``reference_glue.py``'s embeddings with the study's ``common.score`` (FOSCTTM, kNN
transfer RNA -> other), in the scferry env; one markdown row per (dataset, seed) and the mean.

    PYTHONPATH=python ~/.virtualenvs/r-scferry/bin/python bench/diagonal/score_glue.py --out bench/out/diag8/glue
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import load, score  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--max-cells", type=int, default=2000)
    args = p.parse_args()
    rows = []
    for f in sorted(args.out.glob("*__*.json")):
        name, seed = f.stem.split("__")
        rna, oth, _, paired = load(name, args.max_cells, int(seed))
        zr, zo = (np.load(args.out / f"{f.stem}_{s}.npy") for s in ("rna", "oth"))
        s = score(zr, zo, rna.obs["cell_type"], oth.obs["cell_type"], paired)
        rows.append({"dataset": name, "seed": int(seed), **s, **json.loads(f.read_text())})
        r = rows[-1]
        print(f"| {name} | {seed} | {r['foscttm']:.3f} | {r['transfer']:.3f} | {r['cpu_s']:.0f} |")
    for name in sorted({r["dataset"] for r in rows}):
        sel = [r for r in rows if r["dataset"] == name]
        f_, t_ = np.array([r["foscttm"] for r in sel]), np.array([r["transfer"] for r in sel])
        print(f"| {name} | mean of {len(sel)} | {f_.mean():.3f} ± {f_.std(ddof=1) if len(sel) > 1 else 0:.3f} | "
              f"{t_.mean():.3f} | {np.mean([r['cpu_s'] for r in sel]):.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
