#!/usr/bin/env python
"""Ours vs the reference uniPort (uniport 1.3 from PyPI, own venv) on the same real data and
iteration budget; prints one table (wall time, peak RSS, silhouette, batch entropy, transfer).

    bash bench/venvs/setup_reference.sh                       # once: the reference's venv
    python bench/uniport_reference/bench_uniport.py --dataset pdac --iters 2000
    python bench/uniport_reference/bench_uniport.py --dataset pdac --iters 2000 --ours-defaults   # + our default budget
    python bench/uniport_reference/bench_uniport.py --dataset symphony --iters 2000 --threads 1

Each side runs in its own process (peak RSS is that process's ru_maxrss) with the same torch
thread count; both embeddings are scored by bench/common/score_embedding.py with one definition.
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

HERE = Path(__file__).resolve().parent
BENCH = HERE.parent  # bench/: shared helpers in common/, venvs in .venvs/, outputs in out/
REF_PY = BENCH / ".venvs" / "uniport" / "bin" / "python"
sys.path[:0] = [str(HERE), str(BENCH / "common")]


def run_ours(dataset: str, data_dir: str, iters: int | None, seed: int, out: Path, threads: int | None) -> None:
    """Runs in a child process: our uniPort, writing the same files as reference_uniport.py."""
    import torch
    if threads:
        torch.set_num_threads(threads)
    import anndata as ad
    import scferry as sf
    from datasets import load_datasets  # same data loading and dataset order as the reference
    from procstat import status_mb
    t0 = time.perf_counter()
    datasets = dict(load_datasets(dataset, data_dir))
    kw = dict(seed=seed, progress=False)
    if iters is not None:  # same budget as the reference: no early stopping
        kw.update(max_iter=iters, patience=None)
    t1 = time.perf_counter()
    model = sf.integrate(datasets, **kw)
    run_s = time.perf_counter() - t1
    out.mkdir(parents=True, exist_ok=True)
    emb = np.vstack([a.obsm["X_scferry"] for a in datasets.values()])
    np.save(out / "embedding.npy", emb)
    obs = pd.concat([pd.DataFrame({"cell": a.obs_names, "dataset": name,
                                   "cell_type": a.obs["cell_type"].astype(str) if "cell_type" in a.obs else ""})
                     for name, a in datasets.items()])
    obs.to_csv(out / "obs.tsv", sep="\t", index=False)
    json.dump({"run_seconds": run_s, "total_seconds": time.perf_counter() - t0,
               "peak_rss_mb": status_mb("VmHWM"),
               "iterations": model.train_params["iterations_run"]}, open(out / "timing.json", "w"))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", choices=["pdac", "symphony"], default="pdac")
    p.add_argument("--data-dir", default=str(BENCH.parents[1] / "shared" / "data"))
    p.add_argument("--iters", type=int, default=2000, help="the shared iteration budget")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="torch threads on both sides")
    p.add_argument("--ours-defaults", action="store_true", help="also run ours with its default budget")
    p.add_argument("--reuse-reference", action="store_true", help="reuse a finished reference run")
    p.add_argument("--out", type=Path, default=BENCH / "out")
    p.add_argument("--_child", nargs=2, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args._child:
        run_ours(args.dataset, args.data_dir, None if args._child[0] == "default" else int(args._child[0]),
                 args.seed, Path(args._child[1]), args.threads)
        return 0

    from score_embedding import score
    threads = ["--threads", str(args.threads)] if args.threads else []
    rows = []
    ref_dir = args.out / (f"ref_{args.dataset}_{args.iters}" + (f"_t{args.threads}" if args.threads else ""))
    if not (args.reuse_reference and (ref_dir / "timing.json").exists()):
        if not REF_PY.exists():
            sys.exit("reference venv missing: run `bash bench/venvs/setup_reference.sh` first")
        subprocess.run([str(REF_PY), str(HERE / "reference_uniport.py"), "--dataset", args.dataset,
                        "--data-dir", args.data_dir, "--iters", str(args.iters), "--seed", str(args.seed),
                        "--out", str(ref_dir), *threads], check=True)
    t = json.load(open(ref_dir / "timing.json"))
    obs = pd.read_csv(ref_dir / "obs.tsv", sep="\t", keep_default_na=False)
    for name, f in (("uniport 1.3 (as returned)", "embedding_as_returned.npy"),
                    ("uniport 1.3 (running BN stats)", "embedding_running_stats.npy")):
        rows.append({"method": name, **t, **score(np.load(ref_dir / f), obs)})

    budgets = [str(args.iters)] + (["default"] if args.ours_defaults else [])
    for b in budgets:
        d = args.out / f"ours_{args.dataset}_{b}"
        subprocess.run([sys.executable, __file__, "--dataset", args.dataset, "--data-dir", args.data_dir,
                        "--seed", str(args.seed), *threads, "--_child", b, str(d)], check=True)
        t = json.load(open(d / "timing.json"))
        obs = pd.read_csv(d / "obs.tsv", sep="\t", keep_default_na=False)
        rows.append({"method": f"scferry ({'defaults' if b == 'default' else 'same budget'})", **t,
                     **score(np.load(d / "embedding.npy"), obs)})

    cols = ["method", "iterations", "run_seconds", "peak_rss_mb", "silhouette", "batch_entropy", "transfer_accuracy"]
    table = pd.DataFrame(rows).reindex(columns=cols)
    print(f"\n{args.dataset}, seed {args.seed}, threads {args.threads or 'torch default'}")
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    table.to_csv(args.out / f"table_{args.dataset}_{args.iters}.tsv", sep="\t", index=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
