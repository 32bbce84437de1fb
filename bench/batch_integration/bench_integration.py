#!/usr/bin/env python
"""Multi-batch integration study (issue 16): scferry (davae, uniport, scbiot_vae, sf.refine on the
PCA) against Harmony, scVI and an unintegrated PCA, over every multi-batch dataset in shared data,
3 seeds each, every method in its own process, all scored by ``scferry.metrics``.

    bash bench/venvs/setup_scvi.sh                          # once: bench/.venvs/scvi (scvi-tools, harmonypy)
    P=~/.virtualenvs/r-scferry/bin/python
    OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 nice -n 5 $P bench/batch_integration/bench_integration.py
    $P bench/batch_integration/bench_integration.py --datasets symphony --methods pca davae --seeds 0
    $P bench/batch_integration/bench_integration.py --score-only --umap   # rescore, table, UMAP grid

Datasets (``--datasets``): symphony (3 10x chemistries, 1,200 PBMCs), kang (8 donors, 12,261
PBMCs; weak batch effect, the over-correction control), pdac (ST spots + inDrop scRNA; spots
unlabelled); not in the default run, the deconvolution study's other spatial pairs, scored as
PDAC: merfish (MERFISH cells + scRNA, 134 genes), hippocampus (Visium + scRNA, 124 shared
genes), lymph_node (Visium + scRNA, 558 shared genes). Methods (``--methods``): pca, harmony,
scvi, davae, uniport, scbiot_vae, refine (``sf.refine`` on the seed's PCA), scbiot_ot (its
peer, scbiot 1.2.1's ``scb.ot.integrate`` on the same PCA, ``bench/refine/reference_scbiot.py``;
bench/venvs/setup_scbiot.sh) and, with bench/.venvs/scbean, the published DAVAE (scbean,
scbean_3000). Every method runs with one thread (``--threads``) in its own process (its
interpreter: the main venv for scferry and the PCA, ``--venvs``/scvi for scVI and Harmony,
``--venvs``/scbiot for scBIOT, ``--venvs``/scbean for scbean) and writes ``embedding.npy`` (rows in ``obs.tsv`` order) and
``timing.json`` (``cpu_seconds``: process CPU time of preprocessing + fit + embedding;
``peak_rss_mb``: the process's peak resident memory, VmHWM, imports and input included).

Variants (``--tag NAME --params JSON``, written to ``METHOD@NAME/``): keyword arguments of
``sf.integrate`` / ``sf.refine`` for the scferry methods. When every key is ``n_comps`` (50) or
``scale`` (True: genes scaled to unit variance, clipped at 10), a variant of the PCA instead, which
``harmony`` in the same call corrects (``--methods pca harmony --tag u16 --params '{"n_comps": 16,
"scale": false}'``); other keys leave the PCA, and Harmony on it, as they are.

Scores (``score``; ``scferry.metrics``, one definition for every method):
- transfer: leave-one-batch-out kNN (k = 15, :func:`scferry.metrics.knn_label_transfer`, the other
  batches as reference) accuracy, mean over held-out batches; only where every batch is labelled
  (symphony, kang; PDAC's ST spots have no labels);
- batch_entropy (SCALEX form, 1 = mixed) and ilisi (scaled, 1 = mixed) over all cells;
- silhouette (cell type, scaled to [0, 1]) and ari / nmi (best Leiden clustering over resolutions
  0.2-2.0, mean over ``--leiden-seeds`` Leiden seeds) over the labelled cells.
``table.md``: mean ± sd over seeds per dataset and method, and the issue's goals checked per
dataset; ``umap.png``: UMAPs of seed 0 (methods x datasets, coloured by batch and cell type).
Outputs in ``--out`` (default bench/out/integration): ``DATASET/input/`` (raw counts given to every
method), ``DATASET/seedS/METHOD/``, ``DATASET/seedS/METHOD.log``, ``scores.tsv``, ``table.md``.
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
RUNNERS = {"harmony": HERE / "reference_harmony.py", "scbean": HERE / "reference_davae.py",
           "scvi": HERE / "reference_scvi.py"}
DEFAULT_STEPS = 3000  # scbean_3000: ~3,000 optimiser steps, given to scbean as whole epochs
DATASETS = ["symphony", "kang", "pdac"]
# the deconvolution study's spatial pairs, PDAC-like (unlabelled spatial data + labelled scRNA);
# not in the default run: a generality check of sf.refine (RESULTS.md)
EXTRA_DATASETS = ["merfish", "hippocampus", "lymph_node"]
METHODS = ["pca", "harmony", "scvi", "davae", "uniport", "scbiot_vae", "refine", "scbiot_ot",
           "scbean", "scbean_3000"]
DEFAULT_METHODS = METHODS[:8]
LABELS = {"pca": "PCA (unintegrated)", "harmony": "Harmony (on the PCA)", "scvi": "scVI 1.4.2",
          "uniport": "scferry uniport", "davae": "scferry davae", "scbiot_vae": "scferry scbiot_vae",
          "refine": "sf.refine (on the PCA)", "scbiot_ot": "scBIOT 1.2.1 OT (on the PCA)",
          "scbean": "scbean DAVAE 0.5.6",
          "scbean_3000": "scbean DAVAE 0.5.6, ~3,000 steps"}
TUNABLE = ("davae", "uniport", "scbiot_vae", "refine")  # --params: sf.integrate / sf.refine kwargs
# The PCA baseline's variants: a --tag whose --params are all among these keys makes pca@TAG, and
# harmony in the same call corrects it (harmony@TAG); any other --params leave the PCA as it is.
PCA_DEFAULTS = {"n_comps": 50, "scale": True}
VARIANTS = TUNABLE + ("pca", "harmony")
SCVI_MAX_STEPS = 4000  # cap on scVI's epoch heuristic, in optimiser steps (RESULTS.md: why)


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
    # cells with no counts on the shared genes cannot be normalised (scferry refuses them;
    # MERFISH's reference has 4 of 1,308); none in symphony, kang or PDAC
    keep = np.asarray(X.sum(axis=1)).ravel() > 0
    if not keep.all():
        print(f"[{dataset}] {int((~keep).sum())} cells without counts on the shared genes dropped")
        X, obs = X[keep], obs[keep].reset_index(drop=True)
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


def write_result(out: Path, emb: np.ndarray, run_s: float, cpu_s: float, t0: float, **extra) -> None:
    out.mkdir(parents=True, exist_ok=True)
    np.save(out / "embedding.npy", np.asarray(emb, dtype=np.float32))
    json.dump({"run_seconds": run_s, "cpu_seconds": cpu_s, "total_seconds": time.perf_counter() - t0,
               "peak_rss_mb": status_mb("VmHWM"), **extra}, open(out / "timing.json", "w"), indent=1)


# ------------------------------------------------------------------ children in the main venv
def study_pca(adata, n_comps: int = 50, scale: bool = True, seed: int = 0) -> np.ndarray:
    """The PCA baseline, as scanpy's tutorials make it: counts per 10,000, log1p, 2,000 HVGs
    (seurat flavour, per batch) where there are more genes, genes scaled (clipped at 10) unless
    ``scale`` is False, ``n_comps`` components. ``adata`` (raw counts, obs "batch") is changed."""
    import scanpy as sc
    sc.pp.normalize_total(adata, target_sum=1e4)
    sc.pp.log1p(adata)
    if adata.n_vars > 2000:
        sc.pp.highly_variable_genes(adata, n_top_genes=2000, batch_key="batch",
                                    flavor="seurat", subset=True)
    if scale:
        sc.pp.scale(adata, max_value=10)
    sc.tl.pca(adata, n_comps=n_comps, random_state=seed)
    return adata.obsm["X_pca"]


def child(method: str, ddir: Path, out: Path, seed: int, threads: int, params: dict | None = None) -> None:
    t0 = time.perf_counter()
    import torch
    torch.set_num_threads(threads)
    adata, obs = read_input(ddir / "input")
    names = list(dict.fromkeys(obs["batch"]))
    if method == "pca":  # variants (--params): n_comps (50), scale (True: genes scaled to unit variance)
        __import__("scanpy")  # imported before the clock starts
        pp = {**PCA_DEFAULTS, **(params or {})}
        if set(pp) - set(PCA_DEFAULTS):
            raise ValueError(f"pca takes --params {sorted(PCA_DEFAULTS)}; got {sorted(params)}")
        c1, t1 = time.process_time(), time.perf_counter()
        emb = study_pca(adata, int(pp["n_comps"]), pp["scale"], seed)
        write_result(out, emb, time.perf_counter() - t1, time.process_time() - c1, t0)
        return
    import scferry as sf
    if method == "refine":  # sf.refine at its defaults on this seed's PCA
        adata.obsm["X_pca"] = np.load(out.parent / "pca" / "embedding.npy")
        c1, t1 = time.process_time(), time.perf_counter()
        rec = sf.refine(adata, basis="X_pca", batch_key="batch", seed=seed, device="cpu",
                        progress=False, **(params or {}))
        write_result(out, adata.obsm["X_scferry_refined"], time.perf_counter() - t1,
                     time.process_time() - c1, t0, iterations=int(rec["n_iter"]),
                     best_iter=int(rec["best_iter"]), prealign=float(rec["prealign_strength"]))
        return
    datasets = {n: adata[(obs["batch"] == n).to_numpy()].copy() for n in names}
    c1, t1 = time.process_time(), time.perf_counter()
    model = sf.integrate(datasets, method=method, seed=seed, device="cpu", progress=False, **(params or {}))
    run_s, cpu_s = time.perf_counter() - t1, time.process_time() - c1
    emb = np.vstack([datasets[n].obsm["X_scferry"] for n in names])  # obs order: stacked by batch
    write_result(out, emb, run_s, cpu_s, t0, iterations=model.train_params["iterations_run"],
                 params={k: v for k, v in model.params.items()
                         if isinstance(v, (int, float, str, bool, type(None)))})
    json.dump(model.history, open(out / "history.json", "w"))  # epoch-mean loss terms, for diagnosis


def scbiot_cmd(venvs: Path, emb: Path, obs: Path, out: Path, seed: int, threads: int) -> list:
    """The command that runs scbiot 1.2.1's OT refinement (``bench/refine/reference_scbiot.py``,
    in ``venvs``/scbiot) on a saved embedding; also ``bench/refine``'s scBIOT rows."""
    py = venvs / "scbiot" / "bin" / "python"
    if not py.exists():
        raise FileNotFoundError(f"{py} missing: run bash bench/venvs/setup_scbiot.sh")
    return [str(py), str(BENCH / "refine" / "reference_scbiot.py"), str(emb), str(obs), str(out),
            "--seed", str(seed), "--threads", str(threads)]


def run_method(method: str, ddir: Path, seed: int, threads: int, venvs: Path,
               params: dict | None = None, tag: str = "") -> float:
    """Run ``method`` on seed ``seed`` in its own process; ``params``: keyword arguments of
    ``sf.integrate`` (``sf.refine``) for a variant of a scferry method, or the PCA's
    ``PCA_DEFAULTS`` keys for a variant of the PCA, written to ``METHOD@TAG/``; ``harmony`` with a
    ``tag`` corrects ``pca@TAG``."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "OPENBLAS_NUM_THREADS": str(threads),
           "MKL_NUM_THREADS": str(threads), "TF_CPP_MIN_LOG_LEVEL": "2"}
    tool = method.split("_")[0]
    name = f"{method}@{tag}" if tag else method
    out = ddir / f"seed{seed}" / name
    out.parent.mkdir(parents=True, exist_ok=True)
    if params and method not in VARIANTS:
        raise ValueError(f"--params applies to {', '.join(VARIANTS)} only")
    if method == "scbiot_ot":  # the published refinement (sf.refine's peer) on this seed's PCA
        pca = ddir / f"seed{seed}" / "pca" / "embedding.npy"
        if not pca.exists():
            raise FileNotFoundError(f"{pca} missing: run --methods pca first")
        cmd = scbiot_cmd(venvs, pca, ddir / "input" / "obs.tsv", out, seed, threads)
    elif tool in RUNNERS:
        vname = {"harmony": "scvi"}.get(tool, tool)
        py = venvs / vname / "bin" / "python"
        if tool == "harmony" and not py.exists():
            py = venvs / "harmony" / "bin" / "python"  # bench/venvs/setup_integration.sh's
        if not py.exists():
            raise FileNotFoundError(f"{py} missing: run bash bench/venvs/setup_"
                                    f"{'integration' if tool == 'scbean' else 'scvi'}.sh")
        cmd = [str(py), str(RUNNERS[tool]), str(ddir), "--seed", str(seed), "--threads", str(threads)]
        if tool == "scbean":
            cmd += ["--name", f"seed{seed}/{method}"]
            if method == "scbean_3000":
                cmd += ["--steps", str(DEFAULT_STEPS)]
        else:
            cmd += ["--out", str(out)]
        if tool == "harmony" and tag:  # the PCA variant of the same tag
            cmd += ["--pca", f"pca@{tag}"]
        if tool == "scvi":
            cmd += ["--max-steps", str(SCVI_MAX_STEPS)]
    else:
        cmd = [MAIN_PY, __file__, "--_child", method, str(ddir), str(out), "--seed", str(seed),
               "--threads", str(threads), "--params", json.dumps(params or {})]
    t = time.perf_counter()
    with open(out.parent / f"{name}.log", "w") as log:
        rc = subprocess.call(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ddir)
    if rc != 0:
        raise RuntimeError(f"{name} failed (exit {rc}); see {out.parent / f'{name}.log'}")
    return time.perf_counter() - t


# ------------------------------------------------------------------ scoring
def score(emb: np.ndarray, obs: pd.DataFrame, seed: int = 0, leiden_seeds: int = 1) -> dict:
    """The study's scores of one embedding (rows in ``obs`` order); module docstring.
    ``leiden_seeds=0``: no ARI / NMI (screening variants: the Leiden sweep is most of the cost)."""
    from scferry import metrics
    ok = np.isfinite(emb).all(axis=1)  # scbean may filter cells; they are scored as missing
    X, obs = emb[ok], obs[ok].reset_index(drop=True)
    labelled = (obs["cell_type"] != "").to_numpy()
    lab, Xl = obs["cell_type"][labelled].to_numpy(), X[labelled]
    out = {}
    batches = obs["batch"].unique()
    if len(batches) >= 3 and labelled.all():
        acc = []
        for b in batches:
            held = (obs["batch"] == b).to_numpy()
            pred, _ = metrics.knn_label_transfer(X[~held], obs["cell_type"][~held], X[held], k=15)
            acc.append(metrics.transfer_accuracy(obs["cell_type"][held], pred))
        out["transfer"] = float(np.mean(acc))
    out["batch_entropy"] = metrics.batch_entropy(X, obs["batch"], seed=seed)
    out["ilisi"] = metrics.ilisi(X, obs["batch"], scaled=True, seed=seed)
    out["silhouette"] = metrics.silhouette(Xl, lab, seed=seed)
    clus = [metrics.leiden_ari_nmi(Xl, lab, seed=seed + 100 * i) for i in range(leiden_seeds)]
    out["ari"] = float(np.mean([c["ari"] for c in clus])) if clus else np.nan
    out["nmi"] = float(np.mean([c["nmi"] for c in clus])) if clus else np.nan
    out["cells_scored"] = int(ok.sum())
    return out


def label(method: str) -> str:
    """Table name of a method or a variant ``METHOD@TAG``."""
    base, _, tag = method.partition("@")
    return LABELS[base] + (f" [{tag}]" if tag else "")


SCORES = ["transfer", "batch_entropy", "ilisi", "silhouette", "ari", "nmi", "cpu_s", "peak_mb"]


def summary(rows: pd.DataFrame) -> pd.DataFrame:
    """mean ± sd over seeds per dataset and method (scores to 3 decimals, CPU s and MiB whole)."""
    out = []
    for (dataset, method), g in rows.groupby(["dataset", "method"], sort=False):
        row = {"data": dataset, "method": label(method), "seeds": len(g)}
        for c in SCORES:
            v = g[c].astype(float) if c in g else pd.Series([np.nan])
            if v.isna().all():
                row[c] = "-"
                continue
            fmt = "{:.0f}" if c in ("cpu_s", "peak_mb") else "{:.3f}"
            row[c] = fmt.format(v.mean()) + (" ± " + fmt.format(v.std(ddof=1)) if len(v) > 1 else "")
        row["steps"] = g["steps"].iloc[0] if "steps" in g else ""
        out.append(row)
    return pd.DataFrame(out)


def goals(rows: pd.DataFrame) -> str:
    """Issue 16's goals per dataset on the seed means: for davae and uniport, transfer >= max(Harmony,
    scVI), batch entropy >= Harmony's, silhouette >= PCA's; for refine, transfer >= Harmony's and
    batch entropy >= Harmony's, and never below the PCA on transfer / silhouette."""
    cols = ["transfer", "batch_entropy", "silhouette"]
    m = rows.reindex(columns=[*rows.columns, *[c for c in cols if c not in rows]]) \
        .groupby(["dataset", "method"])[cols].mean()  # no transfer where no batch is labelled whole
    lines = ["| data | method | transfer >= max(Harmony, scVI) | batch entropy >= Harmony | "
             "silhouette >= PCA |", "|---|---|---|---|---|"]

    def cmp(d, meth, col, refs):
        vals = [m.loc[(d, r), col] for r in refs if (d, r) in m.index]
        if (d, meth) not in m.index or not vals or not np.isfinite(m.loc[(d, meth), col]):
            return "-"
        v, ref = m.loc[(d, meth), col], max(vals)
        return f"{'yes' if v >= ref else '**no**'} ({v:.3f} vs {ref:.3f})"
    for d in dict.fromkeys(rows["dataset"]):
        for meth in dict.fromkeys(rows["method"]):
            if meth.split("@")[0] in ("davae", "uniport", "refine") and (d, meth) in m.index:
                lines.append(f"| {d} | {label(meth)} | {cmp(d, meth, 'transfer', ['harmony', 'scvi'])} | "
                             f"{cmp(d, meth, 'batch_entropy', ['harmony'])} | "
                             f"{cmp(d, meth, 'silhouette', ['pca'])} |")
    return "\n".join(lines)


def markdown(table: pd.DataFrame) -> str:
    """A pipe table (pandas' to_markdown needs tabulate, which the main venv does not have)."""
    cell = lambda v: f"{v:.3f}" if isinstance(v, float) else str(v)  # noqa: E731
    lines = ["| " + " | ".join(table.columns) + " |", "|" + "---|" * table.shape[1]]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in table.itertuples(index=False)]
    return "\n".join(lines)


def umap_grid(out: Path, datasets: list[str], methods: list[str], seed: int = 0,
              max_cells: int = 3000) -> Path:
    """UMAPs of each method's seed-``seed`` embedding: one row per method, two panels (batch, cell
    type) per dataset; at most ``max_cells`` cells per dataset (the same random subset for every
    method)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import umap
    fig, axes = plt.subplots(len(methods), 2 * len(datasets), squeeze=False,
                             figsize=(3.0 * 2 * len(datasets), 2.9 * len(methods)))
    for j, d in enumerate(datasets):
        obs = pd.read_csv(out / d / "input" / "obs.tsv", sep="\t", keep_default_na=False, dtype=str)
        rng = np.random.default_rng(0)
        take = np.sort(rng.choice(len(obs), min(max_cells, len(obs)), replace=False))
        o = obs.iloc[take]
        colours = {}
        for key in ("batch", "cell_type"):
            levels = sorted(set(o[key]) - {""})
            cmap = plt.get_cmap("tab10" if len(levels) <= 10 else "tab20")
            colours[key] = {lv: cmap(i % cmap.N) for i, lv in enumerate(levels)}
            colours[key][""] = (0.8, 0.8, 0.8, 1.0)
        for i, meth in enumerate(methods):
            f = out / d / f"seed{seed}" / meth / "embedding.npy"
            for c, key in enumerate(("batch", "cell_type")):
                ax = axes[i, 2 * j + c]
                ax.set_xticks([]), ax.set_yticks([])
                if i == 0:
                    ax.set_title(f"{d}: {key.replace('_', ' ')}", fontsize=9)
                if c == 0 and j == 0:
                    ax.set_ylabel(label(meth), fontsize=8)
            if not f.exists():
                continue
            cache = f.parent / f"umap_{max_cells}.npy"  # this subset's coordinates, reused
            if cache.exists() and cache.stat().st_mtime >= f.stat().st_mtime:
                xy = np.load(cache)
            else:
                xy = umap.UMAP(random_state=0, n_jobs=1).fit_transform(np.load(f)[take])
                np.save(cache, xy)
            for c, key in enumerate(("batch", "cell_type")):
                ax = axes[i, 2 * j + c]
                ax.scatter(xy[:, 0], xy[:, 1], s=1.5, lw=0, rasterized=True,
                           c=[colours[key][v] for v in o[key]])
        for c, key in enumerate(("batch", "cell_type")):
            handles = [plt.Line2D([], [], marker="o", ls="", color=col, label=lv or "unlabelled")
                       for lv, col in colours[key].items() if lv in set(o[key])]
            axes[-1, 2 * j + c].legend(handles=handles, fontsize=5, loc="upper center",
                                      bbox_to_anchor=(0.5, -0.02), ncol=2, frameon=False)
    fig.tight_layout()
    path = out / "umap.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main() -> int:
    from datasets import shared_data_dir
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--datasets", nargs="+", default=DATASETS, choices=DATASETS + EXTRA_DATASETS)
    p.add_argument("--methods", nargs="+", default=DEFAULT_METHODS,
                   help=f"of {METHODS}; METHOD@TAG: a variant's finished runs (--score-only)")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--leiden-seeds", type=int, default=3, help="Leiden seeds per ARI/NMI")
    p.add_argument("--data-dir", default=shared_data_dir())
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--venvs", type=Path, default=BENCH / ".venvs", help="where scvi/ (and scbean/) are")
    p.add_argument("--out", type=Path, default=BENCH / "out" / "integration")
    p.add_argument("--score-only", action="store_true", help="rescore finished runs")
    p.add_argument("--skip-done", action="store_true", help="do not rerun runs with an embedding")
    p.add_argument("--no-score", action="store_true", help="run only; score later with --score-only")
    p.add_argument("--umap", action="store_true", help="draw umap.png (seed 0)")
    p.add_argument("--params", type=json.loads, default={},
                   help='a variant: sf.integrate (sf.refine for refine) keyword arguments as JSON, '
                        'e.g. \'{"n_latent": 16}\'')
    p.add_argument("--tag", default="", help="the variant's name: results in METHOD@TAG/")
    p.add_argument("--table", default="table.md", help="file name of the table in --out")
    p.add_argument("--_child", nargs=3, help=argparse.SUPPRESS)
    args = p.parse_args()
    args.out = args.out.resolve()  # children run inside their dataset folder
    if args._child:
        child(args._child[0], Path(args._child[1]), Path(args._child[2]), args.seeds[0], args.threads,
              args.params)
        return 0

    import torch
    torch.set_num_threads(args.threads)
    rows = []
    if args.params and not args.tag:
        p.error("--params needs --tag (the variant's folder name)")
    bad = [m for m in args.methods if m.split("@")[0] not in METHODS]
    if bad:
        p.error(f"unknown methods {bad}; choose from {METHODS}")
    methods = sorted(dict.fromkeys(args.methods), key=lambda m: METHODS.index(m.split("@")[0]))
    pca_variant = bool(args.tag) and bool(args.params) and set(args.params) <= set(PCA_DEFAULTS)
    if any(m in methods for m in ("harmony", "refine")) and "pca" not in methods:
        methods.insert(0, "pca")  # Harmony and refine correct the PCA
    for dataset in args.datasets:
        ddir = args.out / dataset
        if not args.score_only and not (ddir / "input" / "counts.npz").exists():
            prepare(dataset, args.data_dir, ddir / "input")
        obs = pd.read_csv(ddir / "input" / "obs.tsv", sep="\t", keep_default_na=False, dtype=str)
        for seed in args.seeds:
            for base in methods:
                variant = bool(args.tag) and "@" not in base and (
                    base in TUNABLE or (base in ("pca", "harmony") and pca_variant))
                method = f"{base}@{args.tag}" if variant else base
                run = not args.score_only and "@" not in base  # METHOD@TAG given: scored, not run
                base = base.split("@")[0]
                res = ddir / f"seed{seed}" / method
                if run and not (args.skip_done and (res / "embedding.npy").exists()):
                    print(f"[{dataset} seed {seed}] {method} ...", flush=True)
                    load = os.getloadavg()[0]
                    process_s = run_method(base, ddir, seed, args.threads, args.venvs,
                                           args.params if variant and base != "harmony" else None,
                                           args.tag if variant else "")
                    json.dump({"process_seconds": process_s, "loadavg_1min": [load, os.getloadavg()[0]]},
                              open(res / "process.json", "w"))
                if args.no_score or not (res / "embedding.npy").exists():
                    continue
                timing = json.load(open(res / "timing.json"))
                process = json.load(open(res / "process.json")) if (res / "process.json").exists() else {}
                cache = res / f"scores_leiden{args.leiden_seeds}.json"  # scores of this embedding
                if cache.exists() and cache.stat().st_mtime >= (res / "embedding.npy").stat().st_mtime:
                    scores = json.load(open(cache))
                else:
                    scores = score(np.load(res / "embedding.npy"), obs, seed, args.leiden_seeds)
                    json.dump(scores, open(cache, "w"))
                row = {"dataset": dataset, "method": method, "seed": seed, **scores,
                       "cpu_s": timing.get("cpu_seconds", np.nan), "run_s": timing["run_seconds"],
                       "peak_mb": timing["peak_rss_mb"], "steps": timing.get("iterations", ""),
                       "load": max(process.get("loadavg_1min", [np.nan]))}
                rows.append(row)
                print("   ", {k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()},
                      flush=True)
    if args.no_score:
        return 0
    table = pd.DataFrame(rows)
    args.out.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.out / Path(args.table).with_suffix(".tsv").name.replace("table", "scores"),
                 sep="\t", index=False)
    md = markdown(summary(table)) + "\n\nGoals (seed means):\n\n" + goals(table)
    (args.out / args.table).write_text(md + "\n")
    print(md)
    if args.umap:
        print("UMAP grid:", umap_grid(args.out, args.datasets, list(dict.fromkeys(table["method"]))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
