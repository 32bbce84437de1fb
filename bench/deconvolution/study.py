#!/usr/bin/env python
"""Deconvolution study: synthetic spots from held-apart real cells, scored as Spotless
(Sang-aram et al., eLife 2024). One command (the venvs first, once):

    bash bench/venvs/setup_reference.sh && bash bench/venvs/setup_cell2location.sh
    OMP_NUM_THREADS=1 nice -n 5 ~/.virtualenvs/r-scferry/bin/python bench/deconvolution/study.py

Data (``--data-dir``): four references (spots.DATASETS): PDAC-A inDrop, DropViz hippocampus, lymph
node scRNA, MERFISH hypothalamus scRNA, each restricted to the genes it shares with its real spot
file (so the synthetic spots carry the genes a real section would). Types with fewer than
``--min-cells`` cells are dropped (listed in the output), as are MERFISH's Ambiguous/Unstable.
Per seed, each type's cells are split 50/50: one half is the labelled reference, the other is only
ever seen summed into spots (5-10 cells), in four designs (spots.compose): uniform, dominant, rare,
platform (uniform + a per-gene log-normal factor, sd 0.5, then Poisson counts).

Methods on the same reference half and spots:
- ``uniform``: 1/K everywhere; ``NNLS``: scipy.optimize.nnls of each spot's counts on the per-type
  mean count profiles of the reference half (spots.nnls_proportions);
- ``sf.deconvolve`` at its defaults (readout="counts"; run_scferry says how it is called);
- ``uniport 1.3``: its global OT plan (reference_uniport_deconvolve.py here, ``--uniport-iters``
  steps), read out as the per-type mean (uniPort's R tutorial ``mapCluster(balance=F)``);
- anchors in their own venvs (run_anchor.py): ``cell2location`` (``--c2l-ref-epochs`` /
  ``--c2l-epochs``, reduced for CPU) and ``Tangram`` (``--tangram-epochs``).
A method that fails or is missing is reported, not hidden. Finished runs are reused
(``--rerun`` redoes them). Writes ``OUT/scores.tsv`` (every dataset x design x seed x method) and
prints the markdown tables of RESULTS.md.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

HERE = Path(__file__).resolve().parent
BENCH = HERE.parent
sys.path[:0] = [str(HERE), str(BENCH / "common"), str(BENCH / "batch_integration")]
from procstat import status_mb  # noqa: E402
from datasets import shared_data_dir  # noqa: E402
from spots import DATASETS, DESIGNS, load_reference, make_spots, metrics, nnls_proportions, split_halves  # noqa: E402

VENV_VARS = {"uniport": "UNIPORT_VENV", "cell2location": "C2L_VENV", "tangram": "TG_VENV"}
VENVS = {m: Path(os.environ.get(v, str(BENCH / ".venvs" / m))) for m, v in VENV_VARS.items()}
LABELS = {"uniform": "uniform 1/K", "nnls": "NNLS", "scferry": "sf.deconvolve", "uniport": "uniport 1.3 (plan)",
          "cell2location": "cell2location", "tangram": "Tangram",
          "scferry_ml": "sf.deconvolve, prior_shape=None (ML)", "scferry_a1": "sf.deconvolve, prior_shape=1"}
METRICS = ["RMSE", "JSD", "AUPR", "r"]


def write_inputs(d: Path, X_ref, ref_labels, ref_names, Y, truth, types, genes) -> None:
    d.mkdir(parents=True, exist_ok=True)
    sp.save_npz(d / "ref.npz", X_ref)
    sp.save_npz(d / "spots.npz", Y)
    names = [f"spot{i}" for i in range(Y.shape[0])]
    (d / "spots.txt").write_text("\n".join(names) + "\n")
    (d / "genes.txt").write_text("\n".join(genes) + "\n")
    pd.DataFrame({"cell": ref_names, "cell_type": ref_labels}).to_csv(d / "ref_obs.tsv", sep="\t", index=False)
    pd.DataFrame(truth, index=names, columns=types).to_csv(d / "truth.tsv", sep="\t", index_label="spot")


def run_scferry(dirs: dict[str, Path], seed: int, name: str = "scferry", params: dict | None = None) -> None:
    """sf.deconvolve's default path (readout="counts", every other argument at its default) on the
    reference half and each design's spots; writes DIR/<name>/proportions.tsv + result.json.
    ``params`` overrides defaults (an ablation, ``--sf-variant``).

    The public call needs a fitted model only to find the datasets: readout="counts" reads their
    counts, never the embedding, so the study calls the function that sf.deconvolve runs for it
    (``_signature_fit``) on the same ``Dataset`` objects, without training a model it would not
    use on a shared 2-core machine (tests/test_deconvolve.py runs the public call end to end)."""
    import inspect
    import anndata as ad
    import scferry as sf
    from scferry.data import Dataset
    from scferry.tl.deconvolve import _signature_fit
    defaults = {k: v.default for k, v in inspect.signature(sf.deconvolve).parameters.items()
                if k in ("platform", "min_share", "prior_shape", "select_genes", "n_states", "min_state_cells",
                         "max_iter", "seed")}
    defaults.update(params or {})
    d0 = next(iter(dirs.values()))
    genes = pd.Index((d0 / "genes.txt").read_text().splitlines())
    obs = pd.read_csv(d0 / "ref_obs.tsv", sep="\t").set_index("cell")
    ref = Dataset("ref", ad.AnnData(sp.load_npz(d0 / "ref.npz").tocsr(), obs=obs, var=pd.DataFrame(index=genes)))
    for design, d in dirs.items():
        spots = Dataset(design, ad.AnnData(sp.load_npz(d / "spots.npz").tocsr(),
                                           obs=pd.DataFrame(index=(d / "spots.txt").read_text().splitlines()),
                                           var=pd.DataFrame(index=genes)))
        t1, c1 = time.perf_counter(), time.process_time()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            props, params, _ = _signature_fit(ref, spots, obs["cell_type"].astype(str), "ref", design,
                                           progress=False, **defaults)
        t2, c2 = time.perf_counter(), time.process_time()
        out = d / name
        out.mkdir(exist_ok=True)
        props.to_csv(out / "proportions.tsv", sep="\t", index_label="spot")
        json.dump({"time_s": t2 - t1, "cpu_s": c2 - c1, "peak_rss_mb": status_mb(), "params": params,
                   "warnings": sorted({str(w.message)[:200] for w in caught})},
                  open(out / "result.json", "w"), indent=1)


def external(method: str, d: Path, args) -> list[str]:
    py = str(VENVS[method] / "bin" / "python")
    if method == "uniport":
        return [py, str(HERE / "reference_uniport_deconvolve.py"), "--dir", str(d), "--iters",
                str(args.uniport_iters), "--seed", str(args._seed)]
    if method == "cell2location":
        return [py, str(HERE / "run_anchor.py"), "cell2location", "--dir", str(d), "--seed", str(args._seed),
                "--ref-epochs", str(args.c2l_ref_epochs), "--spatial-epochs", str(args.c2l_epochs)]
    return [py, str(HERE / "run_anchor.py"), "tangram", "--dir", str(d), "--seed", str(args._seed),
            "--epochs", str(args.tangram_epochs)]


def read_result(method: str, d: Path, ref_counts: pd.Series):
    """(proportions DataFrame, info) of a finished external run, or None."""
    sub = d / method
    if not (sub / "result.json").exists():
        return None
    info = json.load(open(sub / "result.json"))
    if method == "uniport":
        mass = pd.read_csv(sub / "type_mass.tsv", sep="\t", index_col=0)
        mean = mass / ref_counts[mass.columns].to_numpy()
        props = mean.div(mean.sum(axis=1), axis=0)
        info = {"time_s": info["train_s"] + info["deconvolve_s"], "cpu_s": info["cpu_s"],
                "peak_rss_mb": info["peak_rss_mb"]}
    else:
        props = pd.read_csv(sub / "proportions.tsv", sep="\t", index_col=0)
    return props, info


def mean_sd(v: pd.Series) -> str:
    v = v.dropna()
    if not len(v):
        return "n/a"
    return f"{v.mean():.3f} ± {v.std(ddof=1):.3f}" if len(v) > 1 else f"{v.mean():.3f}"


def tables(scores: pd.DataFrame) -> str:
    """Markdown: overall (mean over datasets x designs per seed, then mean ± sd over seeds), then
    per dataset and per design (mean ± sd over seeds)."""
    from bench_integration import markdown
    out = []
    ABSENT = [c for c in ("absent", "absent_med", "absent_gt05") if c in scores]
    per_seed = scores.groupby(["method", "seed"])[METRICS + ABSENT + ["cpu_s", "peak_rss_mb"]].mean()
    n_cells = scores.groupby(["method", "seed"]).size()
    full = n_cells.groupby("method").max() == n_cells.groupby("method").max().max()
    rows = []
    for m, g in per_seed.groupby("method"):
        rows.append({"method": LABELS.get(m, m), **{k: mean_sd(g[k]) for k in METRICS + ABSENT},
                     "CPU s / run": f"{g['cpu_s'].mean():.1f}" if g["cpu_s"].notna().any() else "",
                     "peak MiB": f"{scores.loc[scores.method == m, 'peak_rss_mb'].max():.0f}"
                     if scores.loc[scores.method == m, "peak_rss_mb"].notna().any() else "",
                     "runs": int(n_cells[m].sum()), "all cells": "yes" if full[m] else "no"})
    out.append("### Overall (mean over datasets x designs, mean ± sd over seeds)\n")
    out.append(markdown(pd.DataFrame(rows)))
    keys = ["dataset", "design", "seed"]
    done = scores.groupby("method").size()
    partial = [m for m in done.index if done[m] < done.max()]
    if partial:
        out.append("\n### Matched: each partly-run method against the others on its own runs only\n")
        rows = []
        for m in partial:
            runs = scores.loc[scores.method == m, keys].drop_duplicates()
            same = scores.merge(runs, on=keys)
            for other in [m] + [x for x in ("scferry", "nnls", "uniform") if x != m]:
                g = same[same.method == other]
                rows.append({"runs of": LABELS.get(m, m), "n": len(runs), "method": LABELS.get(other, other),
                             **{k: f"{g[k].mean():.3f}" for k in METRICS + ABSENT}})
        out.append(markdown(pd.DataFrame(rows)))
        out.append("\n### Matched, per dataset: each partly-run method against sf.deconvolve and NNLS on its own runs\n")
        rows = []
        for m in partial:
            runs = scores.loc[scores.method == m, keys].drop_duplicates()
            same = scores.merge(runs, on=keys)
            for ds, g0 in same.groupby("dataset"):
                for other in [m, "scferry", "nnls"]:
                    g = g0[g0.method == other]
                    rows.append({"runs of": LABELS.get(m, m), "dataset": ds,
                                 "n": len(runs[runs.dataset == ds]), "method": LABELS.get(other, other),
                                 **{k: f"{g[k].mean():.3f}" for k in METRICS + ABSENT[:1]}})
        out.append(markdown(pd.DataFrame(rows)))
        for m in [x for x in partial if x in ("cell2location", "tangram")]:
            out.append(f"\n### {LABELS[m]} and sf.deconvolve run by run ({LABELS[m]} / sf.deconvolve, "
                       "**bold** where sf.deconvolve is better)\n")
            pair = scores[scores.method.isin([m, "scferry"])].pivot_table(
                index=keys, columns="method", values=METRICS + ABSENT[:1])
            pair = pair.dropna(subset=[(k, m) for k in METRICS])
            rows = []
            for idx, r in pair.iterrows():
                row = dict(zip(keys, idx))
                for k in METRICS + ABSENT[:1]:
                    a, b = r[(k, m)], r[(k, "scferry")]
                    better = b < a if k in ("RMSE", "JSD", "absent") else b > a
                    row[k] = f"{a:.3f} / " + (f"**{b:.3f}**" if better else f"{b:.3f}")
                rows.append(row)
            out.append(markdown(pd.DataFrame(rows)))
    for key in ("dataset", "design"):
        out.append(f"\n### Per {key} (mean ± sd over seeds)\n")
        ps = scores.groupby([key, "method", "seed"])[METRICS].mean().reset_index()
        rows = []
        for (k, m), g in ps.groupby([key, "method"]):
            rows.append({key: k, "method": LABELS.get(m, m), **{x: mean_sd(g[x]) for x in METRICS}})
        out.append(markdown(pd.DataFrame(rows)))
    return "\n".join(out)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    p.add_argument("--designs", nargs="+", default=list(DESIGNS), choices=DESIGNS)
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--spots", type=int, default=100, help="spots per design")
    p.add_argument("--min-cells", type=int, default=20, help="types with fewer cells are dropped")
    p.add_argument("--methods", nargs="+", default=["uniform", "nnls", "scferry", "uniport", "cell2location", "tangram"],
                   choices=list(LABELS))
    p.add_argument("--uniport-iters", type=int, default=500)
    p.add_argument("--c2l-ref-epochs", type=int, default=100)
    p.add_argument("--c2l-epochs", type=int, default=1000)
    p.add_argument("--tangram-epochs", type=int, default=300)
    p.add_argument("--timeout", type=int, default=1800, help="seconds per external run")
    p.add_argument("--rerun", action="store_true")
    p.add_argument("--score-only", action="store_true", help="score the finished runs, start none")
    p.add_argument("--data-dir", type=Path, default=Path(shared_data_dir()))
    p.add_argument("--out", type=Path, default=BENCH / "out" / "deconvolution")
    p.add_argument("--venvs", type=Path, default=None,
                   help="folder holding the peer venvs uniport/, cell2location/, tangram/ (default: "
                        "$UNIPORT_VENV / $C2L_VENV / $TG_VENV each, else bench/.venvs/<method>)")
    p.add_argument("--sf-variant", action="append", default=[], metavar="NAME:KEY=VALUE[,KEY=VALUE]",
                   help="also run sf.deconvolve with these arguments changed (an ablation), scored as "
                        "method scferry_NAME; e.g. ml:prior_shape=None")
    args = p.parse_args()
    import ast
    variants = [(f"scferry_{v.split(':')[0]}",
                 {k: ast.literal_eval(x) for k, x in (kv.split("=") for kv in v.split(":", 1)[1].split(","))})
                for v in args.sf_variant]
    if args.venvs is not None:
        VENVS.update({m: args.venvs / m for m in VENVS})
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    rows, failures = [], []
    for ds in args.datasets:
        X, labels, genes, types, dropped = load_reference(args.data_dir, ds, args.min_cells)
        print(f"[{ds}] {len(labels)} cells, {len(types)} types, {len(genes)} genes shared with its spots; "
              f"dropped: {dropped or 'none'}", flush=True)
        for seed in args.seeds:
            ref_rows, _ = split_halves(labels, types, seed)
            ref_counts = pd.Series(labels[ref_rows]).value_counts()
            dirs = {design: args.out / ds / f"seed{seed}" / design for design in args.designs}
            for design, d in dirs.items():
                if args.rerun or not (d / "truth.tsv").exists():
                    Y, truth, rare = make_spots(X, labels, types, design, args.spots, seed)
                    write_inputs(d, X[ref_rows], labels[ref_rows], [f"cell{i}" for i in ref_rows], Y, truth, types, genes)
                    if rare:
                        (d / "rare.txt").write_text(rare + "\n")
            for name, params in [("scferry", {})] * ("scferry" in args.methods) + variants:
                if not args.score_only and (args.rerun or not all((d / name / "result.json").exists()
                                                                  for d in dirs.values())):
                    run_scferry(dirs, seed, name, params)
            for design, d in dirs.items():
                truth = pd.read_csv(d / "truth.tsv", sep="\t", index_col=0)
                Y = sp.load_npz(d / "spots.npz").tocsr()
                args._seed = seed
                for m in args.methods + [v for v, _ in variants]:
                    t0, c0 = time.perf_counter(), time.process_time()
                    if m == "uniform":
                        props, info = pd.DataFrame(1 / len(types), index=truth.index, columns=types), {}
                    elif m == "nnls":
                        from scferry.tl.deconvolve import type_signatures
                        S = type_signatures(X[ref_rows], labels[ref_rows], types)
                        props = pd.DataFrame(nnls_proportions(Y, S), index=truth.index, columns=types)
                        info = {"time_s": time.perf_counter() - t0, "cpu_s": time.process_time() - c0}
                    else:
                        internal = m.startswith("scferry")
                        if not internal and not (VENVS[m] / "bin" / "python").exists():
                            failures.append(f"{m}: venv {VENVS[m]} missing")
                            continue
                        res = None if (args.rerun and not internal) else read_result(m, d, ref_counts)
                        if res is None and not internal and not args.score_only \
                                and not (d / m / "failed.txt").exists():
                            log = d / f"{m}.log"
                            try:
                                with open(log, "w") as fh:
                                    rc = subprocess.run(external(m, d, args), stdout=fh, stderr=subprocess.STDOUT,
                                                        env=env, timeout=args.timeout).returncode
                            except subprocess.TimeoutExpired:
                                rc = f"timeout after {args.timeout} s"
                            if rc != 0:
                                (d / m).mkdir(exist_ok=True)
                                (d / m / "failed.txt").write_text(f"{rc}\n" + log.read_text()[-3000:])
                            res = read_result(m, d, ref_counts)
                        if res is None:
                            why = (d / m / "failed.txt")
                            failures.append(f"{m} on {ds}/seed{seed}/{design}: "
                                            + (why.read_text().splitlines()[0] if why.exists() else "not run"))
                            continue
                        props, info = res
                    P = props.reindex(index=truth.index, columns=truth.columns).fillna(0.0).to_numpy()
                    rows.append({"dataset": ds, "design": design, "seed": seed, "method": m,
                                 **metrics(P, truth.to_numpy()), "cpu_s": info.get("cpu_s", np.nan),
                                 "time_s": info.get("time_s", np.nan), "peak_rss_mb": info.get("peak_rss_mb", np.nan)})
                    print(f"  {ds} seed{seed} {design} {m}: " + ", ".join(f"{k} {rows[-1][k]:.3f}" for k in METRICS),
                          flush=True)
    scores = pd.DataFrame(rows)
    args.out.mkdir(parents=True, exist_ok=True)
    scores.to_csv(args.out / "scores.tsv", sep="\t", index=False)
    print(tables(scores))
    if failures:
        print("\nNot run / failed:\n" + "\n".join(f"- {f}" for f in failures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
