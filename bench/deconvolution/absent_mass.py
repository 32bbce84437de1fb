#!/usr/bin/env python
"""Where sf.deconvolve's mass on absent types goes, on the study's inputs (study.py writes them):

    OMP_NUM_THREADS=1 nice -n 12 ~/.virtualenvs/r-scferry/bin/python bench/deconvolution/absent_mass.py \\
        --datasets hippocampus merfish_hypothalamus lymph_node pdac --seeds 0 1 2

For every spot x absent type (truth 0) of the default estimate (posterior mean under Gamma(0.5,
rate), the study's defaults) it records:
- the estimate (a proportion of the spot);
- its prior part: the posterior mean a type gets with no counts attributed to it,
  ``shape / (rate + c_k / phi)``, over the spot's total (the floor every type gets from the prior);
  the rest is the data part (counts the E-step attributes to the type);
- ``affinity``: the largest Bhattacharyya coefficient between the absent type's signature and the
  signature of a type present in the spot (signatures as gene distributions, ``sum_g sqrt(p_g q_g)``:
  1 for proportional signatures, the Poisson likelihood cannot tell them apart), and its rank among
  the absent type's affinities to every other type.
Prints the share of the absent mass by affinity bin and by prior / data part, pooled over runs and
per dataset, and the metrics of an oracle that zeroes exactly the absent types of the default
estimate (renormalised): what perfect type selection would gain; writes ``OUT/absent_mass.tsv``
(one row per run x absent entry).
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE)]
from spots import metrics  # noqa: E402
from variants import dec, fit, load, run_parser  # noqa: E402


def affinity(S: np.ndarray) -> np.ndarray:
    """Types x types Bhattacharyya coefficients of the signatures as gene distributions."""
    P = S / S.sum(axis=1, keepdims=True)
    R = np.sqrt(P)
    return R @ R.T


def run(d: Path) -> pd.DataFrame:
    S, Y, truth = load(d)
    scale = dec._platform_scale(Y, S, 100, dec.TOL, 0.0, dec.PRIOR_COUNTS)
    a_ml = dec._abundance_chunks(Y, S, scale, 500, dec.TOL, 0.0)
    shape, rate, phi = dec._abundance_prior(Y, S, scale, a_ml, dec.PRIOR_SHAPE)
    a = fit(Y, S, scale, (shape, rate, phi))
    c = (S * scale[None, :]).sum(axis=1)
    floor = shape / (rate + c / phi)                          # K: posterior mean with no counts
    tot = a.sum(axis=1, keepdims=True)
    P = a / tot
    prior_part = np.minimum(floor[None, :] / tot, P)
    B = affinity(S * scale[None, :])
    np.fill_diagonal(B, -np.inf)
    rows = []
    for s, k in zip(*np.nonzero(truth == 0)):
        present = np.flatnonzero(truth[s] > 0)
        best = present[np.argmax(B[k, present])]
        rank = int((B[k] > B[k, best]).sum()) + 1            # 1: the absent type's closest type is present
        rows.append({"spot": s, "type": k, "est": P[s, k], "prior_part": prior_part[s, k],
                     "affinity": B[k, best], "rank": rank, "true_of_closest": truth[s, best]})
    oracle = P * (truth > 0)
    return pd.DataFrame(rows), {"default": metrics(P, truth),
                                "oracle": metrics(oracle / oracle.sum(axis=1, keepdims=True), truth)}


def summary(df: pd.DataFrame) -> pd.DataFrame:
    bins = pd.cut(df["affinity"], [0, 0.8, 0.9, 0.95, 1.0], include_lowest=True)
    g = df.groupby(bins, observed=True)
    tot = df["est"].sum()
    return pd.DataFrame({"entries": g.size() / len(df), "absent mass": g["est"].sum() / tot,
                         "mean est": g["est"].mean(), "median est": g["est"].median(),
                         "prior part of it": g["prior_part"].sum() / g["est"].sum()}).round(3)


def main() -> int:
    args = run_parser(__doc__).parse_args()
    parts, scores = [], []
    for ds in args.datasets:
        for seed in args.seeds:
            for design in args.designs:
                df, sc = run(args.out / ds / f"seed{seed}" / design)
                parts.append(df.assign(dataset=ds, seed=seed, design=design))
                scores += [{"dataset": ds, "seed": seed, "design": design, "estimate": k, **v} for k, v in sc.items()]
                print(f"{ds} seed{seed} {design}: absent mean {df['est'].mean():.4f}", flush=True)
    df = pd.concat(parts, ignore_index=True)
    df.to_csv(args.out / "absent_mass.tsv", sep="\t", index=False)
    pd.set_option("display.width", 200)
    print("\nPooled over runs, by affinity of the absent type to the closest present type:")
    print(summary(df).to_string())
    print(f"\nprior part of the whole absent mass: {df['prior_part'].sum() / df['est'].sum():.3f}; "
          f"entries > 0.05: {(df['est'] > 0.05).mean():.3f} carrying {df.loc[df['est'] > 0.05, 'est'].sum() / df['est'].sum():.3f} "
          f"of the mass; their closest type present (rank 1) in {(df.loc[df['est'] > 0.05, 'rank'] == 1).mean():.3f} "
          f"(all absent entries: {(df['rank'] == 1).mean():.3f})")
    sc = pd.DataFrame(scores)
    cols = ["RMSE", "JSD", "AUPR", "r", "absent"]
    print("\nThe default against an oracle that zeroes exactly the absent types (renormalised):")
    print(sc.groupby("estimate")[cols].mean().round(4).to_string())
    print(sc.groupby(["dataset", "estimate"])[cols].mean().round(4).to_string())
    for ds, g in df.groupby("dataset"):
        print(f"\n{ds}: absent mean {g['est'].mean():.4f}, prior part {g['prior_part'].sum() / g['est'].sum():.3f}")
        print(summary(g).to_string())
    return 0


if __name__ == "__main__":
    sys.exit(main())
