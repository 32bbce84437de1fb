#!/usr/bin/env python
"""Scale: scferry davae on 10^4 / 10^5 / 10^6 cells resampled from real data, one epoch each.

    ~/.virtualenvs/r-scferry/bin/python bench/scale/bench_scale.py                  # 1e4 1e5 1e6
    ~/.virtualenvs/r-scferry/bin/python bench/scale/bench_scale.py --cells 100000 --threads 1

Cells are drawn with replacement from symphony_pbmc.h5ad (1,200 real PBMCs, 3 chemistries,
1,767 genes; sparse counts, ~205 non-zeros per cell), keeping each cell's batch, as one
CSR AnnData with a batch column. Each size runs in its own process: ``sf.integrate(...,
method="davae", max_iter=ceil(n / 128), patience=None)``, i.e. one pass over the cells at the
default 128 cells per step. Printed per size:

- input_mb: the CSR count matrix (data + indices + indptr);
- prep_s: validation + preprocessing (normalise, log1p, HVGs), until training starts;
- epoch_s, ms_per_step: the shared training loop (``scferry.train.fit``) alone;
- train_growth_mb: resident memory added while training (peak during ``fit`` minus resident at
  its start): the sampler densifies only each step's rows, so this stays flat in cells;
- peak_rss_mb: the process's peak (VmHWM), dominated by the input and preprocessing copies,
  which are sparse and so grow with the non-zeros, not with cells x genes.
"""
from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
BENCH = HERE.parent  # bench/: shared helpers in common/, venvs in .venvs/, outputs in out/
sys.path[:0] = [str(HERE), str(BENCH / "common"), str(BENCH / "batch_integration")]
from procstat import status_mb  # noqa: E402


class RssSampler:
    """Largest VmRSS seen while active (sampled every 20 ms in a thread)."""

    def __init__(self):
        self.start = status_mb("VmRSS")
        self.peak = self.start
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, status_mb("VmRSS"))

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, status_mb("VmRSS"))
        return self.peak - self.start


def child(n_cells: int, data_dir: str, threads: int, seed: int) -> dict:
    t0 = time.perf_counter()
    import numpy as np
    import torch
    torch.set_num_threads(threads)
    import anndata as ad
    import pandas as pd
    import scferry as sf
    integ = sys.modules["scferry.integrate"]  # the module (sf.integrate is the function)

    real = ad.read_h5ad(Path(data_dir) / "symphony_pbmc.h5ad")
    rows = np.random.default_rng(seed).integers(0, real.n_obs, n_cells)
    X = real.X[rows].tocsr()
    adata = ad.AnnData(X, obs=pd.DataFrame({"batch": real.obs["batch"].to_numpy()[rows]},
                                           index=[f"c{i}" for i in range(n_cells)]),
                       var=pd.DataFrame(index=real.var_names))
    del real
    input_mb = (X.data.nbytes + X.indices.nbytes + X.indptr.nbytes) / 2 ** 20

    timing = {}
    shared_fit = integ.fit

    def timed_fit(*args, **kwargs):  # the shared loop, measured alone
        timing["prep_s"] = time.perf_counter() - timing["t_call"]
        sampler = RssSampler()
        t = time.perf_counter()
        history = shared_fit(*args, **kwargs)
        timing["fit_s"] = time.perf_counter() - t
        timing["train_growth_mb"] = sampler.stop()
        timing["rss_at_fit_start_mb"] = sampler.start
        return history

    integ.fit = timed_fit
    steps = math.ceil(n_cells / 128)
    timing["t_call"] = time.perf_counter()
    model = sf.integrate(adata, method="davae", batch_key="batch", max_iter=steps, patience=None,
                         seed=seed, progress=False)
    total_s = time.perf_counter() - timing.pop("t_call")
    assert np.isfinite(adata.obsm["X_scferry"]).all()
    return {"cells": n_cells, "genes": int(X.shape[1]), "nnz_per_cell": X.nnz / n_cells,
            "input_mb": input_mb, "steps": model.train_params["iterations_run"],
            "prep_s": timing["prep_s"], "epoch_s": timing["fit_s"],
            "ms_per_step": 1000 * timing["fit_s"] / steps,
            "integrate_s": total_s, "rss_at_fit_start_mb": timing["rss_at_fit_start_mb"],
            "train_growth_mb": timing["train_growth_mb"], "peak_rss_mb": status_mb("VmHWM"),
            "process_s": time.perf_counter() - t0, "threads": threads}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cells", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    p.add_argument("--data-dir", default=str(BENCH.parents[1] / "shared" / "data"))
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=BENCH / "out" / "scale.tsv")
    p.add_argument("--_child", type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args._child:
        print(json.dumps(child(args._child, args.data_dir, args.threads, args.seed)))
        return 0

    import pandas as pd
    rows = []
    for n in args.cells:
        cmd = [sys.executable, __file__, "--_child", str(n), "--data-dir", args.data_dir,
               "--threads", str(args.threads), "--seed", str(args.seed)]
        res = subprocess.run(cmd, capture_output=True, text=True,
                             env={**__import__("os").environ, "OMP_NUM_THREADS": str(args.threads)})
        if res.returncode != 0:
            sys.stderr.write(res.stderr)
            raise RuntimeError(f"{n} cells failed (exit {res.returncode})")
        rows.append(json.loads(res.stdout.strip().splitlines()[-1]))
        print({k: round(v, 3) if isinstance(v, float) else v for k, v in rows[-1].items()}, flush=True)
    table = pd.DataFrame(rows)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.out, sep="\t", index=False)
    from bench_integration import markdown
    print(markdown(table.round(1)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
