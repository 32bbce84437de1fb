#!/usr/bin/env python
"""Spot deconvolution on pseudo-spots of known composition: scferry vs uniport 1.3's OT plan.

    bash bench/venvs/setup_reference.sh                                   # once: the reference's venv
    ~/.virtualenvs/r-scferry/bin/python bench/deconvolution/bench_deconvolve.py --threads 1
    ~/.virtualenvs/r-scferry/bin/python bench/deconvolution/bench_deconvolve.py --designs random --iters 1000

Data: the PDAC-A inDrop scRNA-seq cells (real counts). Every type with at least 20 cells is split
in two halves (seeded): one half is the labelled reference, the other half is held apart and only
ever seen summed into pseudo-spots of 5-10 cells (counts added), so every spot's true composition
is known. Two designs, ``--spots`` spots each:
- ``dominant``: one type makes 40-100% of the spot's cells, the rest come from up to two others;
- ``random``: the spot's type probabilities are drawn from a flat Dirichlet over all types, then
  its cells are drawn from them (many spots mix 3-6 types).

Methods, each in its own process (all started at once; logs in ``OUT/<design>/<method>.log``)
with the same torch thread count and seed, on the same files:
- scferry: ``sf.integrate({"ref": ref, "spots": spots}, method="uniport")`` with the same step
  budget as the reference (``--iters``, no early stopping), then ``sf.deconvolve(...,
  readout="mass")`` (the other read-outs follow from it exactly);
- uniport 1.3: ``uniport.Run(adatas=[spots, ref], mode='h', iteration=N, save_OT=True)`` (its PDAC
  tutorial: spots first, scRNA the reference) in its own venv (bench/deconvolution/reference_uniport_deconvolve.py),
  which returns its dense global plan; the plan summed over each type's cells is the spot's mass.
Both sides' plan mass is read out three ways (``normalisations``): ``plan mass`` (divided by the
spot's total: ``sf.deconvolve(readout="mass")``), ``per-type mean`` (first divided by the type's
number of reference cells, as ``mapCluster(balance=F)`` in uniPort's R tutorial ``R process/spot/
spatial_function.R`` does: ``sf.deconvolve``'s default ``readout="type_mean"``) and ``tutorial`` (per-type mean with ``min_cut=0.25``, as its
``PDAC_SPOT.R``: entries below 0.25 x the spot's maximum set to 0, then row-normalised);
- baselines without any model: ``uniform`` (1/K for every type) and ``global`` (every spot gets
  the reference's type frequencies).

Scores, per design, against the true fractions (only the K types the spots are made of; every
method spreads mass only over the same K reference types): Pearson r and RMSE per type (the
table shows their means, min r and max RMSE; ``--per-type`` prints every type), dominant type
recovered (argmax of the estimate = argmax of the truth, ties in the truth broken by type order),
time (training + deconvolution, wall seconds, without interpreter start-up and data loading),
CPU seconds of the same span (less sensitive than wall time to other jobs on a shared machine)
and peak resident memory of the process (VmHWM, MiB).

Writes ``OUT/<design>/``: the input (``ref.npz``, ``spots.npz``, ``genes.txt``, ``ref_obs.tsv``,
``spots.txt``, ``truth.tsv``), ``scferry/`` and ``uniport/`` (``proportions*.tsv``, ``result.json``), and
``OUT/scores.tsv`` + ``OUT/per_type.tsv``.
"""
from __future__ import annotations

import argparse
import ast
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

HERE = Path(__file__).resolve().parent
BENCH = HERE.parent  # bench/: shared helpers in common/, venvs in .venvs/, outputs in out/
REF_PY = BENCH / ".venvs" / "uniport" / "bin" / "python"
sys.path[:0] = [str(HERE), str(BENCH / "common"), str(BENCH / "batch_integration")]
from spots import split_halves  # noqa: E402

DESIGNS = ("dominant", "random")


# ------------------------------------------------------------------------------ pseudo-spots
def split_and_mix(X: sp.csr_matrix, labels: np.ndarray, types: list[str], design: str, n_spots: int,
                  seed: int):
    """Each type's cells split in halves (seeded, the same split for both designs): the first half
    is the reference, the second the pool that ``n_spots`` pseudo-spots (sums of 5-10 cells,
    ``design`` as in the module docstring) are drawn from. Returns the sorted reference rows, the
    spots (CSR, spots x genes) and the true fractions (spots x types)."""
    ref_rows, pool = split_halves(labels, types, seed)
    rng = np.random.default_rng([seed, DESIGNS.index(design)])
    K = len(types)
    truth, rows = np.zeros((n_spots, K)), []
    for s in range(n_spots):
        n = int(rng.integers(5, 11))
        if design == "dominant":
            dom = int(rng.integers(K))
            others = rng.choice([i for i in range(K) if i != dom], size=2, replace=False)
            n_dom = max(1, int(round(n * rng.uniform(0.4, 1.0))))
            n_first = int(rng.integers(0, n - n_dom + 1))
            per_type = {dom: n_dom, int(others[0]): n_first, int(others[1]): n - n_dom - n_first}
        else:
            drawn = rng.choice(K, size=n, p=rng.dirichlet(np.ones(K)))
            per_type = {int(t): int((drawn == t).sum()) for t in np.unique(drawn)}
        cells = []
        for ti, c in per_type.items():
            cells += list(rng.choice(pool[types[ti]], size=c, replace=False))
            truth[s, ti] += c / n
        rows.append(sp.csr_matrix(X[cells].sum(axis=0)))
    return np.sort(ref_rows), sp.vstack(rows).tocsr(), truth


def make_inputs(rna_path: Path, design: str, n_spots: int, seed: int, min_cells: int, out: Path) -> None:
    """Reference half / held-apart half per type, and ``n_spots`` sums of 5-10 held-apart cells."""
    import anndata as ad
    rna = ad.read_h5ad(rna_path)
    labels = rna.obs["cell_type"].astype(str).to_numpy()
    counts = pd.Series(labels).value_counts()
    types = sorted(counts.index[counts >= min_cells])
    X = rna.X.tocsr().astype(np.float32)
    ref_rows, spots, truth = split_and_mix(X, labels, types, design, n_spots, seed)
    out.mkdir(parents=True, exist_ok=True)
    spot_names = [f"spot{i}" for i in range(n_spots)]
    sp.save_npz(out / "ref.npz", X[ref_rows])
    sp.save_npz(out / "spots.npz", spots)
    (out / "spots.txt").write_text("\n".join(spot_names) + "\n")
    (out / "genes.txt").write_text("\n".join(rna.var_names) + "\n")
    pd.DataFrame({"cell": rna.obs_names[ref_rows], "cell_type": labels[ref_rows]}) \
        .to_csv(out / "ref_obs.tsv", sep="\t", index=False)
    pd.DataFrame(truth, index=spot_names, columns=types).to_csv(out / "truth.tsv", sep="\t", index_label="spot")


def integrate_params(items: list[str]) -> dict:
    """``KEY=VALUE`` strings (VALUE a Python literal) as ``sf.integrate`` parameters."""
    return {k: ast.literal_eval(v) for k, v in (x.split("=", 1) for x in items)}


def load_inputs(d: Path):
    """(ref, spots) AnnData with raw counts from ``ref.npz``, ``spots.npz`` (CSR), ``genes.txt``,
    ``ref_obs.tsv`` (cell, cell_type) and ``spots.txt``; both sides (and bench_plan_scale.py)
    read them this way."""
    import anndata as ad
    genes = pd.Index((d / "genes.txt").read_text().splitlines())
    obs = pd.read_csv(d / "ref_obs.tsv", sep="\t").set_index("cell")
    ref = ad.AnnData(sp.load_npz(d / "ref.npz").tocsr(), obs=obs, var=pd.DataFrame(index=genes))
    spots = ad.AnnData(sp.load_npz(d / "spots.npz").tocsr(),
                       obs=pd.DataFrame(index=(d / "spots.txt").read_text().splitlines()),
                       var=pd.DataFrame(index=genes))
    return ref, spots


# ------------------------------------------------------------------------------ scferry side
def run_ours(d: Path, iters: int, seed: int, threads: int, params: dict | None = None) -> None:
    """Child process: sf.integrate + sf.deconvolve, writes scferry/proportions.tsv + result.json."""
    import torch
    torch.set_num_threads(threads)
    import scferry as sf
    from procstat import status_mb
    ref, spots = load_inputs(d)
    t0, c0 = time.perf_counter(), time.process_time()
    model = sf.integrate({"ref": ref, "spots": spots}, method="uniport", max_iter=iters,
                         patience=None, seed=seed, progress=False, **(params or {}))
    t1 = time.perf_counter()
    # readout="mass": the other read-outs are computed from it when scoring (normalisations)
    props = sf.deconvolve(model, reference="ref", spots="spots", label_key="cell_type", readout="mass")
    t2, c2 = time.perf_counter(), time.process_time()
    out = d / "scferry"
    out.mkdir(exist_ok=True)
    props.to_csv(out / "proportions.tsv", sep="\t", index_label="spot")
    json.dump({"train_s": t1 - t0, "deconvolve_s": t2 - t1, "cpu_s": c2 - c0, "peak_rss_mb": status_mb("VmHWM"),
               "iterations": model.train_params["iterations_run"], "threads": torch.get_num_threads()},
              open(out / "result.json", "w"), indent=1)


# ------------------------------------------------------------------------------ scoring
def normalisations(mass: pd.DataFrame, n_cells: pd.Series) -> dict[str, pd.DataFrame]:
    """Spots x types plan mass (any positive row scale) -> the three read-outs compared: ``plan
    mass`` (row-normalised: sf.deconvolve(readout="mass")), ``per-type mean`` (divided by the type's
    number of reference cells first, as uniport's R tutorial ``mapCluster(balance=F)`` does:
    sf.deconvolve(readout="type_mean"), its default) and
    ``tutorial`` (per-type mean, entries below 0.25 x the spot's maximum set to 0: ``min_cut=0.25``
    of its PDAC script, then row-normalised as its plots do)."""
    row = lambda df: df.div(df.sum(axis=1), axis=0)  # noqa: E731
    mean = mass / n_cells[mass.columns].to_numpy()
    cut = mean.where(mean >= 0.25 * mean.max(axis=1).to_numpy()[:, None], 0.0)
    return {"plan mass": row(mass), "per-type mean": row(mean), "tutorial": row(cut)}


def score(pred: pd.DataFrame, truth: pd.DataFrame) -> tuple[dict, pd.DataFrame]:
    P = pred.reindex(index=truth.index, columns=truth.columns).fillna(0.0).to_numpy()
    T = truth.to_numpy()
    with np.errstate(invalid="ignore", divide="ignore"):
        r = np.array([np.corrcoef(P[:, i], T[:, i])[0, 1] if P[:, i].std() > 0 else np.nan
                      for i in range(T.shape[1])])
    rmse = np.sqrt(((P - T) ** 2).mean(axis=0))
    per_type = pd.DataFrame({"pearson_r": r, "rmse": rmse}, index=truth.columns)
    summary = {"mean r": np.nanmean(r) if np.isfinite(r).any() else np.nan,
               "min r": np.nanmin(r) if np.isfinite(r).any() else np.nan,
               "mean RMSE": rmse.mean(), "max RMSE": rmse.max(),
               "dominant acc.": float((P.argmax(axis=1) == T.argmax(axis=1)).mean())}
    return summary, per_type


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--designs", nargs="+", default=list(DESIGNS), choices=DESIGNS)
    p.add_argument("--spots", type=int, default=300, help="pseudo-spots per design")
    p.add_argument("--min-cells", type=int, default=20, help="types with fewer cells are left out")
    p.add_argument("--iters", type=int, default=2000, help="training steps, both sides (no early stop)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--data-dir", default=str(BENCH.parents[1] / "shared" / "data"))
    p.add_argument("--methods", nargs="+", default=["scferry", "uniport"], choices=["scferry", "uniport"])
    p.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                   help="an sf.integrate parameter for scferry, e.g. plan_eps=0.1 or plan_k=916 (repeatable)")
    p.add_argument("--reuse", action="store_true", help="score finished runs, do not rerun them")
    p.add_argument("--per-type", action="store_true", help="also print per-type r / RMSE")
    p.add_argument("--out", type=Path, default=BENCH / "out" / "deconvolve_bench")
    p.add_argument("--_child", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args._child:
        run_ours(args._child, args.iters, args.seed, args.threads,
                 integrate_params(args.param))
        return 0

    from bench_integration import markdown
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)}
    rows, per_type_rows, jobs = [], [], []
    for design in args.designs:
        d = args.out / design
        if not (args.reuse and (d / "truth.tsv").exists()):
            make_inputs(Path(args.data_dir) / "pdac_a_scrna.h5ad", design, args.spots, args.seed,
                        args.min_cells, d)
        truth = pd.read_csv(d / "truth.tsv", sep="\t", index_col=0)
        n_ref = len(pd.read_csv(d / "ref_obs.tsv", sep="\t"))
        print(f"[{design}] {len(truth)} spots of {truth.shape[1]} types; reference {n_ref} cells", flush=True)
        runs = {
            "scferry": [sys.executable, __file__, "--_child", str(d), "--iters", str(args.iters),
                        "--seed", str(args.seed), "--threads", str(args.threads)]
                       + [a for x in args.param for a in ("--param", x)],
            "uniport": [str(REF_PY), str(HERE / "reference_uniport_deconvolve.py"), "--dir", str(d),
                        "--iters", str(args.iters), "--seed", str(args.seed), "--threads", str(args.threads)],
        }
        for m in args.methods:
            if args.reuse and (d / m / "result.json").exists():
                continue
            if m == "uniport" and not REF_PY.exists():
                raise SystemExit(f"{REF_PY} is missing: run bash bench/venvs/setup_reference.sh first.")
            log = open(d / f"{m}.log", "w")
            jobs.append((design, m, log, subprocess.Popen(runs[m], stdout=log, stderr=subprocess.STDOUT, env=env)))
    for design, m, log, job in jobs:  # all runs at once: the shared machine gives each process a share
        job.wait()
        log.close()
        if job.returncode != 0:
            sys.stderr.write((args.out / design / f"{m}.log").read_text()[-5000:])
            raise SystemExit(f"{m} on {design} failed (exit {job.returncode})")
        print(f"  {m} on {design} done", flush=True)

    for design in args.designs:
        d = args.out / design
        truth = pd.read_csv(d / "truth.tsv", sep="\t", index_col=0)

        estimates: dict[str, tuple[pd.DataFrame, dict]] = {}
        n_cells = pd.read_csv(d / "ref_obs.tsv", sep="\t")["cell_type"].value_counts()
        # sf.deconvolve(readout="mass") is the plan mass row-normalised; the per-type read-outs
        # only rescale its columns, so they follow from it exactly.
        sides = {"scferry": ("proportions.tsv", "scferry"), "uniport": ("type_mass.tsv", "uniport 1.3")}
        for m, (file, label) in sides.items():
            if (d / m / "result.json").exists():
                info = json.load(open(d / m / "result.json"))
                mass = pd.read_csv(d / m / file, sep="\t", index_col=0)
                for name, props in normalisations(mass, n_cells).items():
                    estimates[f"{label}, {name}"] = (props, info)
        ref_freq = n_cells / n_cells.sum()
        estimates["uniform 1/K"] = (pd.DataFrame(1 / truth.shape[1], index=truth.index, columns=truth.columns), {})
        estimates["global (reference frequencies)"] = (
            pd.DataFrame(np.tile(ref_freq[truth.columns].to_numpy(), (len(truth), 1)),
                         index=truth.index, columns=truth.columns), {})
        for name, (props, info) in estimates.items():
            summary, per_type = score(props, truth)
            rows.append({"design": design, "method": name, **summary,
                         "steps": info.get("iterations", ""),
                         "time s": info["train_s"] + info["deconvolve_s"] if info else np.nan,
                         "CPU s": info.get("cpu_s", np.nan),
                         "peak MiB": info.get("peak_rss_mb", np.nan)})
            per_type_rows.append(per_type.assign(design=design, method=name))
    table = pd.DataFrame(rows)
    args.out.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.out / "scores.tsv", sep="\t", index=False)
    per_type = pd.concat(per_type_rows).rename_axis("cell_type").reset_index()
    per_type.to_csv(args.out / "per_type.tsv", sep="\t", index=False)
    shown = table.copy()
    shown["time s"] = shown["time s"].map(lambda v: "" if pd.isna(v) else f"{v:.0f}")
    shown["CPU s"] = shown["CPU s"].map(lambda v: "" if pd.isna(v) else f"{v:.0f}")
    shown["peak MiB"] = shown["peak MiB"].map(lambda v: "" if pd.isna(v) else f"{v:.0f}")
    print(markdown(shown))
    if args.per_type:
        wide = per_type.pivot_table(index=["design", "cell_type"], columns="method", values=["pearson_r", "rmse"])
        print(wide.round(3).to_string())
    return 0


if __name__ == "__main__":
    sys.exit(main())
