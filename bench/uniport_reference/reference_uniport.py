#!/usr/bin/env python
"""Run the published uniPort (``uniport==1.3`` from PyPI) on a benchmark dataset.

Runs INSIDE the venv made by ``bench/venvs/setup_reference.sh``::

    bench/.venvs/uniport/bin/python bench/uniport_reference/reference_uniport.py \
        --dataset pdac --data-dir ../shared/data --iters 2000 --seed 0 --out bench/out/ref_pdac

Preprocessing is uniPort's own, as in its horizontal-integration tutorials (PDAC_integration,
MERFISH_and_scRNA): concatenate the datasets on their common genes (``AnnData.concatenate``,
``join='inner'``, ``batch_key='domain_id'``), then ``normalize_total`` -> ``log1p`` ->
``highly_variable_genes(n_top_genes=2000, batch_key='domain_id', subset=True)`` ->
``uniport.batch_scale`` on the common-gene object, and the same (without batch_key) on every dataset
for its dataset-specific genes. Then ``uniport.Run(adatas=[...], adata_cm=adata_cm, mode='h',
iteration=N, seed=S)`` with every other argument at its default (reference = last dataset).

One deviation forced by newer scanpy: the tutorials call ``highly_variable_genes(...,
inplace=False, subset=True)``; scanpy < 1.9 subset the AnnData anyway (the tutorials' printed
objects have 2,000 genes), scanpy 1.11 only returns a table and leaves the object untouched. We call
it with ``inplace=True, subset=True``, which gives what the tutorials got.

Writes to ``--out``:
  embedding_as_returned.npy     latent uniport.Run returns (adata_cm.obsm['latent']): mu of the
                                encoder, computed with its BatchNorm in TRAINING mode over batches of
                                256 cells in file order, so each dataset is mostly normalised with its
                                own statistics. Rows: dataset 1 cells, then dataset 2, ...
  embedding_running_stats.npy   the same cells through the same trained encoder in eval mode
                                (BatchNorm running statistics, as left by training; snapshotted right
                                after fit, before Run's own train-mode inference pass moves them).
  obs.tsv                       cell, dataset, cell_type (empty where unknown), in the same row order.
  timing.json                   run_seconds, total_seconds, peak_rss_mb, iterations, early stopping...
  uniport_output/               uniport's own outdir (log.txt, checkpoint/model.pt, config.pt).
"""
from __future__ import annotations

import time

T_START = time.perf_counter()  # "total" starts before the heavy imports

import argparse
import copy
import json
import os
import platform
import sys
import warnings

import numpy

# uniport 1.3 (or its old dependants) may reach for np.warnings, removed in numpy 1.24. Shim it
# here, before importing uniport; site-packages stays untouched.
if not hasattr(numpy, "warnings"):
    numpy.warnings = warnings

np = numpy
import pandas as pd
import scanpy as sc
import torch
from anndata import AnnData
from importlib.metadata import version as pkg_version

import uniport as up

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "common"))
from datasets import load_datasets, shared_data_dir  # noqa: E402
from procstat import status_mb  # noqa: E402
import uniport.function as up_function

warnings.filterwarnings("ignore", category=FutureWarning)
warnings.filterwarnings("ignore", category=UserWarning)
try:
    from scipy.sparse import SparseEfficiencyWarning
    warnings.filterwarnings("ignore", category=SparseEfficiencyWarning)
except ImportError:  # pragma: no cover
    pass

N_TOP_GENES = 2000  # the tutorials' value, for both common and dataset-specific genes


def peak_rss_mb() -> float:
    return status_mb("VmHWM")


class Tee:
    """Copy writes to a stream and keep them (to read uniport's 'EarlyStopping: run N epoch')."""

    def __init__(self, stream):
        self.stream, self.chunks = stream, []

    def write(self, s):
        self.chunks.append(s)
        return self.stream.write(s)

    def flush(self):
        self.stream.flush()

    def __getattr__(self, name):
        return getattr(self.stream, name)

    def text(self) -> str:
        return "".join(self.chunks)


# ---- record the model object uniport.Run builds (Run does not return it) ---------------------
CAPTURED: dict = {}


class RecordingVAE(up_function.VAE):
    """uniport's VAE, unchanged, except that it remembers itself and its post-fit state."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        CAPTURED["model"] = self

    def fit(self, dataloader, *args, **kwargs):
        CAPTURED["iters_per_epoch"] = len(dataloader)
        t0 = time.perf_counter()
        out = super().fit(dataloader, *args, **kwargs)
        CAPTURED["fit_seconds"] = time.perf_counter() - t0
        # Weights + BatchNorm running stats exactly as training left them (after early stopping's
        # reload of the best checkpoint, if it fired), before Run's train-mode encodeBatch pass.
        CAPTURED["state_after_fit"] = copy.deepcopy(self.state_dict())
        return out


up_function.VAE = RecordingVAE


# ---- data: bench/common/datasets.py (shared with the scferry side) -------------------------------


def preprocess(datasets: list[tuple[str, AnnData]]):
    """uniPort's tutorial preprocessing (PDAC_integration.ipynb / MERFISH_and_scRNA.ipynb)."""
    adatas = []
    for i, (label, a) in enumerate(datasets):
        a = a.copy()
        if "cell_type" not in a.obs:
            a.obs["cell_type"] = np.nan
        a.obs = a.obs[["cell_type"]].copy()
        a.obs["cell_type"] = a.obs["cell_type"].astype(object)
        a.obs["domain_id"] = i
        a.obs["domain_id"] = a.obs["domain_id"].astype("category")
        a.obs["source"] = label
        adatas.append(a)

    # common genes: concatenate (inner join), normalise, batch-aware HVG, per-source MaxAbs
    adata_cm = adatas[0].concatenate(*adatas[1:], join="inner", batch_key="domain_id")
    sc.pp.normalize_total(adata_cm)
    sc.pp.log1p(adata_cm)
    sc.pp.highly_variable_genes(adata_cm, n_top_genes=N_TOP_GENES, batch_key="domain_id",
                                inplace=True, subset=True)
    up.batch_scale(adata_cm)

    # dataset-specific genes
    for a in adatas:
        sc.pp.normalize_total(a)
        sc.pp.log1p(a)
        sc.pp.highly_variable_genes(a, n_top_genes=N_TOP_GENES, inplace=True, subset=True)
        up.batch_scale(a)
    return adatas, adata_cm


# ---- re-encoding --------------------------------------------------------------------------------
@torch.no_grad()
def encode_mu(model, X: np.ndarray, train_mode: bool, batch_size: int = 256) -> np.ndarray:
    """mu of uniport's encoder for rows of X, in order, in chunks of batch_size (like encodeBatch)."""
    model.train(train_mode)
    out = []
    for s in range(0, X.shape[0], batch_size):
        x = torch.from_numpy(np.ascontiguousarray(X[s:s + batch_size], dtype=np.float32))
        out.append(model.encoder(x, 0)[1].cpu().numpy())
    return np.concatenate(out).astype(np.float64)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dataset", choices=["pdac", "symphony"], required=True)
    p.add_argument("--data-dir", default=shared_data_dir())
    p.add_argument("--iters", type=int, default=30000,
                   help="uniport.Run(iteration=N); uniport rounds up to whole epochs")
    p.add_argument("--seed", type=int, default=0, help="uniport.Run(seed=S) (uniport's default: 124)")
    p.add_argument("--out", required=True)
    p.add_argument("--threads", type=int, default=None,
                   help="torch.set_num_threads (default: leave torch's default, = CPU cores)")
    args = p.parse_args(argv)

    os.makedirs(args.out, exist_ok=True)
    if args.threads:
        torch.set_num_threads(args.threads)
    load_start = os.getloadavg()

    datasets = load_datasets(args.dataset, args.data_dir)
    names = [label for label, _ in datasets]
    cell_names = [a.obs_names.to_numpy() for _, a in datasets]
    cell_types = [a.obs["cell_type"].astype(object).to_numpy() if "cell_type" in a.obs
                  else np.full(a.n_obs, np.nan, dtype=object) for _, a in datasets]

    t_pp = time.perf_counter()
    adatas, adata_cm = preprocess(datasets)
    pp_seconds = time.perf_counter() - t_pp
    rss_before_run = peak_rss_mb()

    # use_rep: Run indexes it once per dataset even in mode 'h'; its default ['X', 'X'] only covers
    # two datasets, so it is spelled out (same value as the default for the PDAC pair).
    run_kwargs = dict(adatas=adatas, adata_cm=adata_cm, mode="h", iteration=args.iters,
                      seed=args.seed, use_rep=["X"] * len(adatas),
                      outdir=os.path.join(args.out, "uniport_output"))
    tee = Tee(sys.stdout)
    sys.stdout = tee
    try:
        t_run, c_run = time.perf_counter(), time.process_time()
        result = up.Run(**run_kwargs)
        run_seconds = time.perf_counter() - t_run
        run_cpu_seconds = time.process_time() - c_run
    finally:
        sys.stdout = tee.stream
    rss_after_run = peak_rss_mb()

    emb_returned = np.asarray(result.obsm["latent"], dtype=np.float64)
    model = CAPTURED["model"]
    x_c = adata_cm.X.toarray() if hasattr(adata_cm.X, "toarray") else np.asarray(adata_cm.X)

    # eval mode = BatchNorm running stats (as training left them)
    model.load_state_dict(CAPTURED["state_after_fit"])
    emb_running = encode_mu(model, x_c, train_mode=False)
    # check: train-mode re-encoding in file order reproduces what Run returned
    model.load_state_dict(CAPTURED["state_after_fit"])
    emb_check = encode_mu(model, x_c, train_mode=True)
    reproduce_max_abs_diff = float(np.max(np.abs(emb_check - emb_returned)))

    # row order check: Run's adata_cm rows = dataset 1 cells, then dataset 2, ...
    expected_rows = np.concatenate([np.full(len(c), i) for i, c in enumerate(cell_names)])
    assert np.array_equal(result.obs["domain_id"].astype(int).to_numpy(), expected_rows), \
        "adata_cm rows are not in dataset order"
    assert emb_returned.shape == emb_running.shape == (len(expected_rows), model.z_dim)

    np.save(os.path.join(args.out, "embedding_as_returned.npy"), emb_returned)
    np.save(os.path.join(args.out, "embedding_running_stats.npy"), emb_running)
    obs = pd.DataFrame({
        "cell": np.concatenate(cell_names),
        "dataset": np.concatenate([np.full(len(c), n, dtype=object) for n, c in zip(names, cell_names)]),
        "cell_type": np.concatenate(cell_types),
    })
    obs.to_csv(os.path.join(args.out, "obs.tsv"), sep="\t", index=False, na_rep="")

    log_text = tee.text()
    early = None
    for line in log_text.splitlines():
        if line.startswith("EarlyStopping: run"):
            early = int(line.split()[2])
    ipe = CAPTURED["iters_per_epoch"]
    n_epoch_max = int(np.ceil(args.iters / ipe))
    epochs_run = early if early is not None else n_epoch_max
    total_seconds = time.perf_counter() - T_START

    timing = {
        "implementation": "uniport (reference, PyPI)",
        "uniport_version": pkg_version("uniport"),
        "dataset": args.dataset,
        "datasets": [{"name": n, "n_cells": int(len(c))} for n, c in zip(names, cell_names)],
        "reference_dataset": names[-1],
        "n_common_genes": int(adata_cm.n_vars),
        "n_specific_genes": [int(a.n_vars) for a in adatas],
        "seed": args.seed,
        "iterations_requested": args.iters,
        "iters_per_epoch": ipe,
        "epochs_max": n_epoch_max,
        "epochs_run": epochs_run,
        "iterations": epochs_run * ipe,
        "early_stopping_fired": early is not None,
        "early_stopping_patience_epochs": 30,
        "run_seconds": run_seconds,
        "run_cpu_seconds": run_cpu_seconds,
        "fit_seconds": CAPTURED["fit_seconds"],
        "preprocess_seconds": pp_seconds,
        "total_seconds": total_seconds,
        "peak_rss_mb": peak_rss_mb(),
        "peak_rss_mb_before_run": rss_before_run,
        "peak_rss_mb_after_run": rss_after_run,
        "run_kwargs": {k: v for k, v in run_kwargs.items() if k not in ("adatas", "adata_cm")},
        "check_train_mode_reencode_max_abs_diff": reproduce_max_abs_diff,
        "embedding_shape": list(emb_returned.shape),
        "finite": bool(np.isfinite(emb_returned).all() and np.isfinite(emb_running).all()),
        "torch_threads": torch.get_num_threads(),
        "loadavg_at_start": list(load_start),
        "loadavg_at_end": list(os.getloadavg()),
        "versions": {k: pkg_version(k) for k in ("torch", "numpy", "pandas", "scanpy", "anndata",
                                                  "scikit-learn")},
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
    }
    with open(os.path.join(args.out, "timing.json"), "w") as fh:
        json.dump(timing, fh, indent=2)
    print(json.dumps({k: timing[k] for k in ("dataset", "iterations", "early_stopping_fired",
                                               "run_seconds", "total_seconds", "peak_rss_mb",
                                               "check_train_mode_reencode_max_abs_diff", "finite")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
