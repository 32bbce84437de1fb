#!/usr/bin/env python
"""scIB-style benchmark of embedding refinement: ``sf.refine`` against the published scBIOT
(scbiot 1.2.1, its own venv), on unintegrated PCA, Harmony, and scferry's uniport and davae
embeddings of real data.

    bash bench/venvs/setup_integration.sh harmony       # once: bench/.venvs/harmony
    bash bench/venvs/setup_scbiot.sh                    # once: bench/.venvs/scbiot
    PY=~/.virtualenvs/r-scferry/bin/python
    $PY bench/refine/bench_refine.py                             # symphony + PDAC, every row
    $PY bench/refine/bench_refine.py --datasets symphony --rows pca harmony refine_pca scbiot_pca
    $PY bench/refine/bench_refine.py --score-only                # rescore finished runs
    $PY bench/refine/bench_refine.py --keep pca harmony uniport davae   # rerun all but these
    $PY bench/refine/bench_refine.py --million                   # 10^6-cell timing only

Rows: ``pca``, ``harmony``, ``uniport``, ``davae`` (made by bench_integration.py's runners, same
input, same defaults), ``refine_X`` (``sf.refine`` on X's embedding, defaults) and ``scbiot_X``
(``scbiot.ot.integrate`` on X's embedding, defaults, no labels: bench/refine/reference_scbiot.py).
Every row runs in its own process with one thread (torch, BLAS, OpenMP) and writes
``embedding.npy`` and ``timing.json`` (``run_seconds`` of the step itself, ``peak_rss_mb`` =
VmHWM of that process, imports included).

Scores (all ``scferry.metrics``; label metrics over the labelled cells, batch metrics over all):

- bio conservation: ``silhouette`` (cell-type ASW, scaled), ``ari`` / ``nmi`` (best Leiden
  clustering over resolutions 0.2-2.0; mean over Leiden seeds 0-4), ``clisi`` (scaled, 1 =
  pure), ``isolated`` (scIB isolated-label ASW; only when the labelled cells span >= 2 batches, i.e. not on PDAC);
- batch correction: ``batch_entropy`` (SCALEX, 1 = mixed), ``ilisi`` (scaled), ``kbet``
  (acceptance rate), ``graph_conn`` (scIB graph connectivity of each cell type's kNN subgraph,
  over the labelled cells);
- ``bio`` and ``batch`` = the mean of their metrics; ``total`` = 0.6 bio + 0.4 batch (scIB).

``--million``: symphony's 50-d PCA resampled to 10^6 cells (with replacement, plus Gaussian
jitter of 0.1 x each PC's standard deviation so that no two cells coincide), batches carried over;
each refiner runs once under a wall-clock cap (``--cap``, default 600 s) and is timed.

Outputs in ``--out`` (default bench/out/refine): ``DATASET/seedS/ROW/``, ``DATASET/seedS/ROW.log``
(``bench_integration.py``'s layout, whose runners make the base rows),
``scores.tsv``, ``table.md``; ``million/`` (``resampled_N/`` with ``--n-cells N``) with
``timing.tsv`` (``run_cpu_s``/``process_cpu_s``: CPU seconds, the fair figure on a loaded
machine; ``last_log``: where a killed run had got to).
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
BENCH = HERE.parent  # bench/: shared helpers in common/, venvs in .venvs/, outputs in out/
sys.path[:0] = [str(HERE), str(BENCH / "common"), str(BENCH / "batch_integration")]
from procstat import status_mb  # noqa: E402
import bench_integration as bi  # noqa: E402  (input preparation and the base-embedding runners)

BASES = ["pca", "harmony", "uniport", "davae"]
LEIDEN_SEEDS = 5
ROWS = ["pca", "harmony", "uniport", "davae", "refine_pca", "scbiot_pca",
        "refine_harmony", "scbiot_harmony", "refine_uniport", "scbiot_uniport",
        "refine_davae", "scbiot_davae"]
LABELS = {"pca": "PCA (unintegrated)", "harmony": "Harmony", "uniport": "scferry uniport",
          "davae": "scferry davae", "refine": "sf.refine", "scbiot": "scBIOT 1.2.1"}
BIO = ["silhouette", "ari", "nmi", "clisi", "isolated"]
BATCH = ["batch_entropy", "ilisi", "kbet", "graph_conn"]


def label(row: str) -> str:
    tool, _, base = row.partition("_")
    return f"{LABELS[tool]} on {LABELS[base]}" if base else LABELS[row]


def _env(threads: int) -> dict:
    return {**os.environ, "OMP_NUM_THREADS": str(threads), "OPENBLAS_NUM_THREADS": str(threads),
            "MKL_NUM_THREADS": str(threads), "NUMBA_NUM_THREADS": str(threads),
            "PYTHONUNBUFFERED": "1"}  # a killed run's log still shows how far it got


def run_capped(cmd: list, log: Path, threads: int, cap: float | None, cwd: Path) -> dict:
    """Run cmd (its own process group, killed at ``cap`` seconds). Returns ``rc`` (None if
    killed), ``wall`` and ``cpu`` seconds of the child, and for a killed run its peak memory so
    far (``peak_rss_mb_at_kill``, VmHWM read just before the kill)."""
    import resource
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu0 = ru.ru_utime + ru.ru_stime
    t = time.perf_counter()
    res = {}
    with open(log, "w") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=_env(threads),
                                cwd=cwd, start_new_session=True)
        try:
            res["rc"] = proc.wait(timeout=cap)
        except subprocess.TimeoutExpired:
            with open(f"/proc/{proc.pid}/status") as st:
                hwm = [x for x in st if x.startswith("VmHWM:")]
            res["peak_rss_mb_at_kill"] = int(hwm[0].split()[1]) / 1024 if hwm else np.nan
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            res["rc"] = None
    res["wall"] = time.perf_counter() - t
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    res["cpu"] = ru.ru_utime + ru.ru_stime - cpu0
    return res


def refine_cmd(tool: str, emb: Path, obs: Path, out: Path, seed: int, threads: int,
               progress: bool = False) -> list:
    if tool == "scbiot":
        return bi.scbiot_cmd(BENCH / ".venvs", emb, obs, out, seed, threads)
    return [sys.executable, __file__, "--_child", str(emb), str(obs), str(out),
            "--seed", str(seed), "--threads", str(threads)] + (["--progress"] if progress else [])


def child(emb: Path, obs_path: Path, out: Path, seed: int, threads: int, progress: bool) -> None:
    """sf.refine on a saved embedding, with its defaults; writes embedding.npy + timing.json."""
    t0 = time.perf_counter()
    import torch
    torch.set_num_threads(threads)
    import anndata as ad
    import scferry as sf
    obs = pd.read_csv(obs_path, sep="\t", keep_default_na=False, dtype=str)
    adata = ad.AnnData(obs=pd.DataFrame({"batch": pd.Categorical(obs["batch"])},
                                        index=[str(i) for i in range(len(obs))]))
    adata.obsm["X_in"] = np.load(emb).astype(np.float32)
    t1, c1 = time.perf_counter(), time.process_time()
    rec = sf.refine(adata, basis="X_in", batch_key="batch", key_added="X_refined", seed=seed,
                    progress=progress)
    run_s, cpu_s = time.perf_counter() - t1, time.process_time() - c1
    out.mkdir(parents=True, exist_ok=True)
    np.save(out / "embedding.npy", np.asarray(adata.obsm["X_refined"], dtype=np.float32))
    keep = {k: float(v) for k, v in rec.items() if np.ndim(v) == 0 and isinstance(v, (int, float, np.number))}
    json.dump({"run_seconds": run_s, "run_cpu_seconds": cpu_s,
               "total_seconds": time.perf_counter() - t0,
               "peak_rss_mb": status_mb("VmHWM"), "n_cells": adata.n_obs,
               "torch_threads": torch.get_num_threads(), "record": keep},
              open(out / "timing.json", "w"), indent=1)
    print(f"refine: {adata.n_obs} cells, {run_s:.1f} s, peak {status_mb('VmHWM'):.0f} MiB")


# ------------------------------------------------------------------ scoring
def score(emb: np.ndarray, obs: pd.DataFrame, seed: int = 0) -> dict:
    from scferry import metrics as M
    X = np.asarray(emb, dtype=np.float64)
    lab = (obs["cell_type"] != "").to_numpy()
    Xl, y, b = X[lab], obs["cell_type"][lab].to_numpy(), obs["batch"].to_numpy()
    out = {"silhouette": M.silhouette(Xl, y, seed=seed)}
    # Leiden's partition of a few large types flips with its seed (PDAC: ARI 0.85 with one seed,
    # 0.46-0.47 with four others, on the same embedding), so ARI/NMI are means over 5 seeds.
    clus = [M.leiden_ari_nmi(Xl, y, seed=seed + s) for s in range(LEIDEN_SEEDS)]
    out["ari"] = float(np.mean([c["ari"] for c in clus]))
    out["nmi"] = float(np.mean([c["nmi"] for c in clus]))
    out["clisi"] = M.clisi(Xl, y, scaled=True, seed=seed)
    # isolated labels need labelled cells from >= 2 batches (PDAC: only the scRNA cells)
    out["isolated"] = (M.isolated_labels(Xl, y, b[lab], seed=seed)
                       if len(np.unique(b[lab])) >= 2 else np.nan)
    out["batch_entropy"] = M.batch_entropy(X, b, seed=seed)
    out["ilisi"] = M.ilisi(X, b, scaled=True, seed=seed)
    out["kbet"] = M.kbet(X, b, seed=seed)
    out["graph_conn"] = M.graph_connectivity(Xl, y, seed=seed)
    out["bio"] = float(np.nanmean([out[k] for k in BIO]))
    out["batch"] = float(np.mean([out[k] for k in BATCH]))
    out["total"] = 0.6 * out["bio"] + 0.4 * out["batch"]
    return out


def markdown(table: pd.DataFrame) -> str:
    def cell(v):
        if isinstance(v, float):
            return "-" if np.isnan(v) else (f"{v:.0f}" if abs(v) >= 100 else f"{v:.3f}")
        return str(v)
    lines = ["| " + " | ".join(table.columns) + " |", "|" + "---|" * table.shape[1]]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in table.itertuples(index=False)]
    return "\n".join(lines)


def run_row(row: str, ddir: Path, seed: int, threads: int, cap: float | None) -> None:
    if row in BASES:
        bi.run_method(row, ddir, seed, threads, BENCH / ".venvs")  # harmony: .venvs/scvi or /harmony
        return
    tool, base = row.split("_", 1)
    rdir = ddir / f"seed{seed}"  # bench_integration's layout: DATASET/seedS/ROW
    emb = rdir / base / "embedding.npy"
    if not emb.exists():
        run_row(base, ddir, seed, threads, cap)
    cmd = refine_cmd(tool, emb, ddir / "input" / "obs.tsv", rdir / row, seed, threads)
    rc = run_capped(cmd, rdir / f"{row}.log", threads, cap, ddir)["rc"]
    if rc != 0:
        raise RuntimeError(f"{row} {'timed out' if rc is None else f'failed (exit {rc})'}; "
                           f"see {rdir / f'{row}.log'}")


# ------------------------------------------------------------------ 10^6 cells
def _last_line(log: Path) -> str:
    """Where a run got to: the last non-empty line (or progress-bar frame) of its log."""
    text = log.read_text(errors="replace").replace("\r", "\n")
    lines = [x.strip() for x in text.splitlines() if x.strip()]
    return lines[-1][:160] if lines else ""


def million(out: Path, seed: int, threads: int, cap: float, n: int, tools: list) -> None:
    src = out / "symphony"
    if not (src / f"seed{seed}" / "pca" / "embedding.npy").exists():
        run_row("pca", src, seed, threads, None)
    pca = np.load(src / f"seed{seed}" / "pca" / "embedding.npy")
    obs = pd.read_csv(src / "input" / "obs.tsv", sep="\t", keep_default_na=False, dtype=str)
    mdir = out / ("million" if n == 1_000_000 else f"resampled_{n}")
    mdir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    pick = rng.integers(0, len(obs), size=n)
    X = pca[pick] + 0.1 * pca.std(0) * rng.standard_normal((n, pca.shape[1])).astype(np.float32)
    np.save(mdir / "embedding.npy", X.astype(np.float32))
    obs.iloc[pick][["batch", "cell_type"]].to_csv(mdir / "obs.tsv", sep="\t", index=False)
    del X
    old = mdir / "timing.tsv"
    rows = [r for r in (pd.read_csv(old, sep="\t").to_dict("records") if old.exists() else [])
            if r["refiner"] not in {LABELS[t] for t in tools}]
    for tool in tools:
        print(f"[{mdir.name}] {tool} on {n:,} cells (cap {cap:.0f} s) ...", flush=True)
        cmd = refine_cmd(tool, mdir / "embedding.npy", mdir / "obs.tsv", mdir / tool, seed, threads,
                         progress=True)
        (mdir / tool).mkdir(exist_ok=True)
        (mdir / tool / "timing.json").unlink(missing_ok=True)
        load = os.getloadavg()[0]
        res = run_capped(cmd, mdir / f"{tool}.log", threads, cap, mdir)
        rc = res["rc"]
        t = json.load(open(mdir / tool / "timing.json")) if rc == 0 else {}
        rows.append({"refiner": LABELS[tool], "cells": n, "finished": rc == 0,
                     "status": "ok" if rc == 0 else ("killed at cap" if rc is None else f"exit {rc}"),
                     "run_s": t.get("run_seconds", np.nan),
                     "run_cpu_s": t.get("run_cpu_seconds", np.nan), "process_s": res["wall"],
                     "process_cpu_s": res["cpu"],
                     "peak_rss_mb": t.get("peak_rss_mb", res.get("peak_rss_mb_at_kill", np.nan)),
                     "load": max(load, os.getloadavg()[0]),
                     "last_log": _last_line(mdir / f"{tool}.log")})
        print("   ", rows[-1], flush=True)
    table = pd.DataFrame(rows)
    table.to_csv(mdir / "timing.tsv", sep="\t", index=False)
    print(markdown(table))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--datasets", nargs="+", default=["symphony", "pdac"], choices=["symphony", "pdac"])
    p.add_argument("--rows", nargs="+", default=ROWS, choices=ROWS)
    p.add_argument("--data-dir", default=str(BENCH.parents[1] / "shared" / "data"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=BENCH / "out" / "refine")
    p.add_argument("--score-only", action="store_true", help="rescore finished runs")
    p.add_argument("--keep", nargs="*", default=[], choices=ROWS,
                   help="rows not to rerun when their outputs exist (e.g. the slow bases)")
    p.add_argument("--million", action="store_true", help="only the 10^6-cell timing")
    p.add_argument("--n-cells", type=int, default=1_000_000, help="cells for --million")
    p.add_argument("--cap", type=float, default=600.0, help="seconds per refiner for --million")
    p.add_argument("--million-tools", nargs="+", default=["refine", "scbiot"],
                   choices=["refine", "scbiot"], help="refiners to (re)time with --million")
    p.add_argument("--_child", nargs=3, help=argparse.SUPPRESS)
    p.add_argument("--progress", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    args.out = args.out.resolve()
    if args._child:
        child(*map(Path, args._child), args.seed, args.threads, args.progress)
        return 0

    import torch
    torch.set_num_threads(args.threads)
    if args.million:
        million(args.out, args.seed, args.threads, args.cap, args.n_cells, args.million_tools)
        return 0
    rows = []
    for dataset in args.datasets:
        ddir = args.out / dataset
        if not args.score_only and not (ddir / "input" / "obs.tsv").exists():
            bi.prepare(dataset, args.data_dir, ddir / "input")
        obs = pd.read_csv(ddir / "input" / "obs.tsv", sep="\t", keep_default_na=False, dtype=str)
        rdir = ddir / f"seed{args.seed}"
        for row in [r for r in ROWS if r in args.rows]:
            done = (rdir / row / "timing.json").exists()
            if not args.score_only and not (row in args.keep and done):
                print(f"[{dataset}] {row} ...", flush=True)
                load = os.getloadavg()[0]
                if row == "harmony" and not (rdir / "pca" / "embedding.npy").exists():
                    run_row("pca", ddir, args.seed, args.threads, None)
                run_row(row, ddir, args.seed, args.threads, None)
                json.dump({"loadavg_1min": [load, os.getloadavg()[0]]},
                          open(rdir / row / "load.json", "w"))
            timing = json.load(open(rdir / row / "timing.json"))
            load = json.load(open(rdir / row / "load.json")) if (rdir / row / "load.json").exists() else {}
            rec = {"dataset": dataset, "embedding": label(row),
                   **score(np.load(rdir / row / "embedding.npy"), obs, args.seed),
                   "run_s": timing["run_seconds"], "peak_rss_mb": timing["peak_rss_mb"],
                   "load": max(load.get("loadavg_1min", [np.nan]))}
            rows.append(rec)
            print("   ", {k: round(v, 3) if isinstance(v, float) else v for k, v in rec.items()}, flush=True)
    table = pd.DataFrame(rows)
    args.out.mkdir(parents=True, exist_ok=True)
    name = "scores" if set(args.datasets) == {"symphony", "pdac"} and args.rows == ROWS else "scores_partial"
    table.to_csv(args.out / f"{name}.tsv", sep="\t", index=False)
    md = markdown(table)
    (args.out / f"{name.replace('scores', 'table')}.md").write_text(md + "\n")
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
