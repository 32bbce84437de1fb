#!/usr/bin/env python
"""Cell states within types (sf.deconvolve's ``n_states``, BayesPrism's reference split: Chu et
al., Nat Cancer 2022) against the type-level fit, on the study's finished runs. The runs are made
by study.py as ``--sf-variant`` ablations (scored as ``scferry_<NAME>``), e.g.

    S="nice -n 5 ~/.virtualenvs/r-scferry/bin/python bench/deconvolution/study.py"
    $S --methods scferry --seeds 0 --sf-variant st3m10:n_states=3,min_state_cells=10 --sf-variant base:n_states=1
    nice -n 5 ~/.virtualenvs/r-scferry/bin/python bench/deconvolution/states.py --seeds 0 \\
        --methods scferry_base scferry_st3m10 --baseline scferry_base

    nice -n 5 ~/.virtualenvs/r-scferry/bin/python bench/deconvolution/states.py --seeds 0 \\
        --estimates mean1m10 map1m10 mean3m10 map3m10 --table states_map.tsv

``--estimates`` fits the listed estimates itself instead (``state_fits``: the posterior mean or
mode over the states, on variants.py's machinery). For each method directory
(``DIR/<dataset>/seed<k>/<design>/<method>/proportions.tsv``) it prints the Spotless metrics and
the absent-type mass (spots.metrics), the rare design's estimate of the rare type where it is
present (and the share of those spots where it gets < 0.01), CPU s and the process's peak memory
(result.json), as means over runs (mean ± sd over seeds), per dataset and per design, and how many
runs each method beats ``--baseline`` in (lower RMSE / JSD / absent, higher AUPR / r). Writes
``OUT/<--table>`` (one row per run x method).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE)]
from spots import metrics  # noqa: E402
from type_selection import rare_check  # noqa: E402
from variants import dec, fit, load, run_all, run_parser  # noqa: E402

COLS = ["RMSE", "JSD", "AUPR", "r", "absent", "absent_med", "absent_gt05"]
LOWER = {"RMSE", "JSD", "absent", "absent_med", "absent_gt05"}


def score(d: Path, method: str) -> dict | None:
    f = d / method / "proportions.tsv"
    if not f.exists():
        return None
    truth = pd.read_csv(d / "truth.tsv", sep="\t", index_col=0)
    P = pd.read_csv(f, sep="\t", index_col=0).reindex(index=truth.index, columns=truth.columns).fillna(0.0).to_numpy()
    P = P / np.maximum(P.sum(axis=1, keepdims=True), 1e-300)
    info = json.loads((d / method / "result.json").read_text()) if (d / method / "result.json").exists() else {}
    states = (info.get("params") or {}).get("states_per_type")
    return {**metrics(P, truth.to_numpy()), **rare_check(P, truth.to_numpy(), list(truth.columns), d),
            "cpu_s": info.get("cpu_s", np.nan), "peak_rss_mb": info.get("peak_rss_mb", np.nan),
            "n_states": float(sum(states.values())) / len(states) if states else np.nan}


def state_fits(d: Path, which) -> dict:
    """``--estimates``: the type-level default (posterior mean) and, on the state signatures
    (``dec.cell_states`` at ``n_states`` x ``min_state_cells``, written ``mean<n>m<c>`` /
    ``map<n>m<c>``; ``...k<kappa>``: each state's signature shrunk to its type's mean,
    ``(n_s mean_s + kappa mean_t) / (n_s + kappa)``), the posterior mean or the posterior MODE (MAP-EM, ``variants.fit``'s
    ``estimate="map"``: a state the spot's counts support with fewer than ``(1 - shape) phi``
    counts gets exactly 0), states summed to types. ``map1m10`` is the type-level mode."""
    _, Y, truth, Xg, labels = load(d, cells=True)
    types = sorted(set(labels))
    out = {}
    for v in which:
        kind = "map" if v.startswith("map") else "mean"
        rest, _, kappa = v[len(kind):].partition("k")
        n, m = (int(x) for x in rest.split("m"))
        state, owner = dec.cell_states(Xg, labels, types, n, m, 0)
        St = dec.type_signatures(Xg, state.astype(str), [str(i) for i in range(len(owner))])
        if kappa:  # each state's signature shrunk to its type's: (n_s mean_s + kappa mean_t) / (n_s + kappa)
            n_s = np.bincount(state, minlength=len(owner)).astype(float)[:, None]
            St = (n_s * St + float(kappa) * dec.type_signatures(Xg, labels, types)[owner]) / (n_s + float(kappa))
        scale = dec._platform_scale(Y, St, 100, dec.TOL, 0.0, dec.PRIOR_COUNTS)
        a_ml = dec._abundance_chunks(Y, St, scale, 500, dec.TOL, 0.0)
        shape, rate, phi = dec._abundance_prior(Y, St, scale, a_ml, dec.PRIOR_SHAPE, n_types=len(types))
        a = fit(Y, St, scale, (shape / np.bincount(owner)[owner], rate, phi), estimate=kind)
        a = a @ np.eye(len(types))[owner]
        P = a / np.maximum(a.sum(axis=1, keepdims=True), 1e-300)
        out[v] = {**metrics(P, truth), **rare_check(P, truth, types, d), "n_states": len(owner) / len(types)}
    return out


def main() -> int:
    p = run_parser(__doc__)
    p.add_argument("--estimates", nargs="+", default=None,
                   help="instead of scoring --methods: fit these (state_fits) and score them")
    p.add_argument("--methods", nargs="+", default=[])
    p.add_argument("--baseline", default="scferry")
    p.add_argument("--table", default="states.tsv")
    args = p.parse_args()
    if args.estimates:
        args.variants = args.estimates
        df = run_all(args, state_fits)
        pd.set_option("display.width", 250)
        for by in (["variant"], ["dataset", "variant"], ["design", "variant"]):
            print(df.groupby(by, sort=False)[COLS].mean().round(4).to_string(), "\n")
        rare = df[df.design == "rare"].groupby("variant", sort=False)[["rare_est", "rare_truth", "rare_lost"]].mean()
        print(rare.round(4).to_string())
        return 0
    rows = [{"dataset": ds, "seed": s, "design": des, "method": m, **r}
            for ds in args.datasets for s in args.seeds for des in args.designs for m in args.methods
            if (r := score(args.out / ds / f"seed{s}" / des, m)) is not None]
    df = pd.DataFrame(rows)
    df.to_csv(args.out / args.table, sep="\t", index=False)
    pd.set_option("display.width", 250)
    order = {m: i for i, m in enumerate(args.methods)}
    per_seed = df.groupby(["method", "seed"])[COLS + ["cpu_s"]].mean()
    mean, sd = per_seed.groupby("method").mean(), per_seed.groupby("method").std()
    runs = df.groupby("method").size()
    out = pd.DataFrame({c: [f"{mean.loc[m, c]:.4f} ± {0 if np.isnan(sd.loc[m, c]) else sd.loc[m, c]:.4f}"
                            for m in mean.index] for c in COLS}, index=mean.index)
    out["CPU s / run"] = mean["cpu_s"].round(2)
    out["peak MiB"] = df.groupby("method")["peak_rss_mb"].max().round(0)
    out["states / type"] = df.groupby("method")["n_states"].mean().round(2)
    out["runs"] = runs
    print("Overall (mean over runs; ± sd over seeds):")
    print(out.sort_index(key=lambda i: i.map(order)).to_string(), "\n")
    for by in ("dataset", "design"):
        print(df.groupby([by, "method"], sort=False)[COLS].mean().round(4).to_string(), "\n")
    rare = df[df.design == "rare"].groupby("method", sort=False)[["rare_est", "rare_truth", "rare_lost"]].mean()
    print("Rare design, where the rare type is present:\n" + rare.round(4).to_string(), "\n")
    base = df[df.method == args.baseline].set_index(["dataset", "seed", "design"])
    wins = {}
    for m in args.methods:
        if m == args.baseline:
            continue
        o = df[df.method == m].set_index(["dataset", "seed", "design"]).reindex(base.index)
        wins[m] = {c: f"{int(((o[c] < base[c]) if c in LOWER else (o[c] > base[c])).sum())}/{int(o[c].notna().sum())}"
                   for c in COLS}
        ds_mean, b_mean = o.groupby("dataset")[COLS].mean(), base.groupby("dataset")[COLS].mean()
        wins[m].update({f"{c} datasets": int(((ds_mean[c] < b_mean[c]) if c in LOWER else (ds_mean[c] > b_mean[c])).sum())
                        for c in ("RMSE", "JSD", "AUPR", "r", "absent")})
    if wins:
        print(f"Runs (and dataset means) better than {args.baseline}:\n" + pd.DataFrame(wins).T.to_string())
    return 0


if __name__ == "__main__":
    sys.exit(main())
