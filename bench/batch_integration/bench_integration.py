#!/usr/bin/env python
"""Multi-batch integration benchmark: scferry (uniport, davae) against Harmony, the published
DAVAE (scbean 0.5.6) and an unintegrated PCA, on real data, scored with one definition.

    bash bench/venvs/setup_integration.sh                  # once: bench/.venvs/harmony and scbean
    ~/.virtualenvs/r-scferry/bin/python bench/batch_integration/bench_integration.py            # everything
    ... bench_integration.py --datasets symphony --methods pca davae --threads 1

Every method runs in its own process (its interpreter: the main venv for pca/uniport/davae,
bench/.venvs/harmony for Harmony, bench/.venvs/scbean for scbean) with the same thread count for
torch, TensorFlow, BLAS and OpenMP, and writes ``embedding.npy`` (rows in ``obs.tsv`` order) and
``timing.json`` (``run_seconds``: preprocessing + training + embedding; ``peak_rss_mb``: the
process's peak resident memory, VmHWM, imports included). Scores (``scferry.metrics``):

- batch_entropy, ilisi (scaled, 1 = fully mixed) over all cells;
- silhouette (cell type, scaled to [0, 1]), ari / nmi (best Leiden clustering over resolutions
  0.2-2.0 against cell types), over the labelled cells;
- transfer: leave-one-batch-out kNN (k = 30) label transfer accuracy, mean over held-out
  batches; only where every batch is labelled (symphony; PDAC's ST spots have no labels).

Outputs in ``--out`` (default bench/out/integration): ``DATASET/input/`` (the raw counts given
to every method), ``DATASET/METHOD/``, ``DATASET/METHOD.log``, ``scores.tsv``, ``table.md``.
"""
from __future__ import annotations

import argparse
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
sys.path[:0] = [str(HERE), str(BENCH / "common")]
from procstat import status_mb  # noqa: E402

MAIN_PY = sys.executable
VENV_PY = {"harmony": BENCH / ".venvs" / "harmony" / "bin" / "python",
           "scbean": BENCH / ".venvs" / "scbean" / "bin" / "python"}
RUNNERS = {"harmony": HERE / "reference_harmony.py", "scbean": HERE / "reference_davae.py"}
DEFAULT_STEPS = 3000  # scferry davae's default budget, given to scbean as whole epochs
METHODS = ["pca", "harmony", "uniport", "davae", "davae_refbudget", "scbean", "scbean_3000"]
LABELS = {"pca": "PCA (unintegrated)", "harmony": "Harmony (harmonypy, on the PCA)",
          "uniport": "scferry uniport", "davae": "scferry davae",
          "davae_refbudget": "scferry davae, scbean's step count", "scbean": "scbean DAVAE 0.5.6",
          "scbean_3000": "scbean DAVAE 0.5.6, ~3,000 steps"}
SCBEAN = dict(epochs=25, batch_size=128)  # as in the paper's scripts (scbean.fit_integration)


# ------------------------------------------------------------------ input, shared by all methods
def prepare(dataset: str, data_dir: str, out: Path) -> None:
    """Raw counts of all datasets on their shared genes (CSR, datasets stacked in load order),
    ``obs.tsv`` (cell, batch, cell_type: '' where unknown) and ``genes.txt``."""
    from datasets import load_datasets
    parts = load_datasets(dataset, data_dir)
    genes = parts[0][1].var_names
    for _, a in parts[1:]:
        genes = genes[genes.isin(a.var_names)]
    X = sp.vstack([sp.csr_matrix(a[:, genes].X, dtype=np.float32) for _, a in parts]).tocsr()
    obs = pd.concat([pd.DataFrame({
        "cell": a.obs_names.astype(str), "batch": name,
        "cell_type": a.obs["cell_type"].astype(str).to_numpy() if "cell_type" in a.obs else ""})
        for name, a in parts], ignore_index=True)
    out.mkdir(parents=True, exist_ok=True)
    sp.save_npz(out / "counts.npz", X)
    obs.to_csv(out / "obs.tsv", sep="\t", index=False)
    (out / "genes.txt").write_text("\n".join(genes) + "\n")


def read_input(inp: Path):
    import anndata as ad
    X = sp.load_npz(inp / "counts.npz").tocsr()
    obs = pd.read_csv(inp / "obs.tsv", sep="\t", keep_default_na=False, dtype=str)
    genes = (inp / "genes.txt").read_text().split()
    adata = ad.AnnData(X, obs=obs.set_index("cell"), var=pd.DataFrame(index=genes))
    return adata, obs


def write_result(out: Path, emb: np.ndarray, run_s: float, t0: float, **extra) -> None:
    out.mkdir(parents=True, exist_ok=True)
    np.save(out / "embedding.npy", np.asarray(emb, dtype=np.float32))
    json.dump({"run_seconds": run_s, "total_seconds": time.perf_counter() - t0,
               "peak_rss_mb": status_mb("VmHWM"), **extra}, open(out / "timing.json", "w"), indent=1)


# ------------------------------------------------------------------ children in the main venv
def child(method: str, ddir: Path, seed: int, threads: int) -> None:
    t0 = time.perf_counter()
    import torch
    torch.set_num_threads(threads)
    adata, obs = read_input(ddir / "input")
    names = list(dict.fromkeys(obs["batch"]))
    if method == "pca":
        import scanpy as sc
        t1 = time.perf_counter()
        sc.pp.normalize_total(adata, target_sum=1e4)
        sc.pp.log1p(adata)
        sc.pp.highly_variable_genes(adata, n_top_genes=2000, batch_key="batch", flavor="seurat",
                                    subset=True)
        sc.pp.scale(adata, max_value=10)
        sc.tl.pca(adata, n_comps=50, random_state=seed)
        write_result(ddir / method, adata.obsm["X_pca"], time.perf_counter() - t1, t0)
        return
    import scferry as sf
    datasets = {n: adata[(obs["batch"] == n).to_numpy()].copy() for n in names}
    kw = dict(seed=seed, progress=False)
    if method == "davae_refbudget":  # the number of optimiser steps scbean takes
        steps = SCBEAN["epochs"] * int(np.ceil(adata.n_obs / SCBEAN["batch_size"]))
        kw.update(max_iter=steps, patience=None)
    t1 = time.perf_counter()
    model = sf.integrate(datasets, method=method.split("_")[0], **kw)
    run_s = time.perf_counter() - t1
    emb = np.vstack([datasets[n].obsm["X_scferry"] for n in names])  # obs order: stacked by batch
    write_result(ddir / method, emb, run_s, t0, iterations=model.train_params["iterations_run"],
                 params={k: v for k, v in model.params.items() if not isinstance(v, tuple)})


def run_method(method: str, ddir: Path, seed: int, threads: int) -> float:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "OPENBLAS_NUM_THREADS": str(threads),
           "MKL_NUM_THREADS": str(threads), "TF_CPP_MIN_LOG_LEVEL": "2"}
    tool = method.split("_")[0]
    if tool in RUNNERS:
        if not VENV_PY[tool].exists():
            raise FileNotFoundError(f"{VENV_PY[tool]} missing: run bash bench/venvs/setup_integration.sh")
        cmd = [str(VENV_PY[tool]), str(RUNNERS[tool]), str(ddir), "--seed", str(seed),
               "--threads", str(threads), "--name", method]
        if method == "scbean_3000":
            cmd += ["--steps", str(DEFAULT_STEPS)]
    else:
        cmd = [MAIN_PY, __file__, "--_child", method, str(ddir), "--seed", str(seed),
               "--threads", str(threads)]
    t = time.perf_counter()
    with open(ddir / f"{method}.log", "w") as log:
        rc = subprocess.call(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ddir)
    if rc != 0:
        raise RuntimeError(f"{method} failed (exit {rc}); see {ddir / f'{method}.log'}")
    return time.perf_counter() - t


# ------------------------------------------------------------------ scoring
def score(emb: np.ndarray, obs: pd.DataFrame, seed: int = 0) -> dict:
    from scferry import metrics
    ok = np.isfinite(emb).all(axis=1)  # scbean may filter cells; they are scored as missing
    X, obs = emb[ok], obs[ok].reset_index(drop=True)
    labelled = (obs["cell_type"] != "").to_numpy()
    s = metrics.evaluate(X, labels=obs["cell_type"].where(labelled), batches=obs["batch"],
                         label_mask=labelled, seed=seed)
    out = {k: s[k] for k in ("batch_entropy", "ilisi", "silhouette", "ari", "nmi")}
    batches = obs["batch"].unique()
    if len(batches) >= 3 and labelled.all():
        acc = []
        for b in batches:
            held = (obs["batch"] == b).to_numpy()
            pred, _ = metrics.knn_label_transfer(X[~held], obs["cell_type"][~held], X[held], k=30)
            acc.append(metrics.transfer_accuracy(obs["cell_type"][held], pred))
        out["transfer"] = float(np.mean(acc))
    out["cells_scored"] = int(ok.sum())
    return out


def markdown(table: pd.DataFrame) -> str:
    """A pipe table (pandas' to_markdown needs tabulate, which the main venv does not have)."""
    cell = lambda v: f"{v:.3f}" if isinstance(v, float) else str(v)  # noqa: E731
    lines = ["| " + " | ".join(table.columns) + " |", "|" + "---|" * table.shape[1]]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in table.itertuples(index=False)]
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--datasets", nargs="+", default=["symphony", "pdac"], choices=["symphony", "pdac"])
    p.add_argument("--methods", nargs="+", default=METHODS, choices=METHODS)
    p.add_argument("--data-dir", default=str(BENCH.parents[1] / "shared" / "data"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=BENCH / "out" / "integration")
    p.add_argument("--score-only", action="store_true", help="rescore finished runs")
    p.add_argument("--_child", nargs=2, help=argparse.SUPPRESS)
    args = p.parse_args()
    args.out = args.out.resolve()  # children run inside their dataset folder
    if args._child:
        child(args._child[0], Path(args._child[1]), args.seed, args.threads)
        return 0

    import torch
    torch.set_num_threads(args.threads)
    rows = []
    for dataset in args.datasets:
        ddir = args.out / dataset
        if not args.score_only:
            prepare(dataset, args.data_dir, ddir / "input")
        obs = pd.read_csv(ddir / "input" / "obs.tsv", sep="\t", keep_default_na=False, dtype=str)
        methods = [m for m in METHODS if m in args.methods]
        if "harmony" in methods and "pca" not in methods and not (ddir / "pca").exists():
            methods.insert(0, "pca")  # Harmony corrects the PCA
        for method in methods:
            if not args.score_only:
                print(f"[{dataset}] {method} ...", flush=True)
                load = os.getloadavg()[0]
                process_s = run_method(method, ddir, args.seed, args.threads)
                json.dump({"process_seconds": process_s, "loadavg_1min": [load, os.getloadavg()[0]]},
                          open(ddir / method / "process.json", "w"))
            timing = json.load(open(ddir / method / "timing.json"))
            process = json.load(open(ddir / method / "process.json"))
            row = {"dataset": dataset, "method": LABELS[method],
                   **score(np.load(ddir / method / "embedding.npy"), obs, args.seed),
                   "run_s": timing["run_seconds"], "process_s": process["process_seconds"],
                   "peak_rss_mb": timing["peak_rss_mb"], "steps": timing.get("iterations", ""),
                   "load": max(process.get("loadavg_1min", [np.nan]))}
            rows.append(row)
            print("   ", {k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()}, flush=True)
    table = pd.DataFrame(rows)
    args.out.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.out / "scores.tsv", sep="\t", index=False)
    md = markdown(table)
    (args.out / "table.md").write_text(md + "\n")
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
