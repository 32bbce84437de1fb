"""Datasets and scores of the diagonal (unpaired, unlabelled) alignment study.

Every dataset is a pair (RNA, other modality). The paired sets (SNARE, sci-CAR, CITE-seq) are
treated as unpaired: their row order is never given to a method, only used to score (FOSCTTM).
"""
from __future__ import annotations

import argparse
import os
import time
import warnings

import anndata as ad
import numpy as np
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "common"))
from datasets import shared_data_dir  # noqa: E402

DATA = shared_data_dir()
# name -> (RNA file, other file, other modality, paired)
SETS = {
    "snare_peaks": ("snare_cortex_rna", "snare_cortex_atac", "atac", True),
    "snare_gene": ("snare_cortex_rna", "snare_cortex_atac_gene", "atac", True),
    "pamona": ("pamona_pbmc_rna", "pamona_pbmc_atac", "atac", False),
    "scicar": ("scicar_a549_rna", "scicar_a549_atac", "atac", True),
    "cite": ("pbmc10k_cite_hvg_rna", "pbmc10k_cite_hvg_adt", "adt", True),
}
UNKNOWN = {"Mis", "unknown"}


def load(name: str, max_cells: int = 0, seed: int = 0) -> tuple[ad.AnnData, ad.AnnData, str, bool]:
    """(rna, other, other modality name, paired); paired sets subsampled to the same cells,
    unpaired ones independently. Pamona's real-valued features are shifted to >= 0 (uniPort's
    inputs must be non-negative; a shift does not change the geometry)."""
    f_rna, f_oth, other, paired = SETS[name]
    rna = ad.read_h5ad(os.path.join(DATA, f_rna + ".h5ad"))
    oth = ad.read_h5ad(os.path.join(DATA, f_oth + ".h5ad"))
    rng = np.random.default_rng(seed)
    if paired:
        assert (rna.obs_names == oth.obs_names).all()
        if max_cells and rna.n_obs > max_cells:
            keep = np.sort(rng.choice(rna.n_obs, max_cells, replace=False))
            rna, oth = rna[keep].copy(), oth[keep].copy()
    else:
        out = []
        for a in (rna, oth):
            if max_cells and a.n_obs > max_cells:
                a = a[np.sort(rng.choice(a.n_obs, max_cells, replace=False))].copy()
            out.append(a)
        rna, oth = out
    if name == "pamona":
        for a in (rna, oth):
            X = np.asarray(a.X, np.float32)
            a.X = X - X.min(axis=0)
    return rna, oth, other, paired


def score(z_rna, z_oth, lab_rna, lab_oth, paired: bool, k: int = 15) -> dict:
    """FOSCTTM (paired sets only) and kNN label transfer RNA -> other (k=15), accuracy over the
    other modality's cells of known type that the RNA data has."""
    from scferry import metrics
    out = {"foscttm": metrics.foscttm(z_rna, z_oth) if paired else float("nan")}
    lab_rna, lab_oth = np.asarray(lab_rna, str), np.asarray(lab_oth, str)
    src = ~np.isin(lab_rna, list(UNKNOWN))
    tgt = ~np.isin(lab_oth, list(UNKNOWN)) & np.isin(lab_oth, lab_rna[src])
    pred, _ = metrics.knn_label_transfer(z_rna[src], lab_rna[src], z_oth[tgt], k=k)
    out["transfer"] = metrics.transfer_accuracy(lab_oth[tgt], pred)
    return out


def all_cells(names: list[str], seeds: list[int]):
    """``(name, seed, rna, other, other modality, paired)`` for every dataset and seed, all cells
    (:func:`load`); the seed seeds the method, the cells are the same."""
    for name in names:
        for seed in seeds:
            yield (name, seed, *load(name, 0, seed))


def fit_and_score(fit, rna: ad.AnnData, oth: ad.AnnData, paired: bool) -> dict:
    """Runs ``fit()`` (which writes ``obsm["X_scferry"]`` on both) with warnings silenced and
    returns the scores, its CPU s and the process's peak RSS (MiB) so far."""
    import resource
    t = time.process_time()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit()
    cpu = time.process_time() - t
    return {**score(np.asarray(rna.obsm["X_scferry"]), np.asarray(oth.obsm["X_scferry"]),
                    rna.obs["cell_type"], oth.obs["cell_type"], paired),
            "cpu_s": cpu, "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def append_row(out: Path, row: dict) -> None:
    """Prints ``row`` as one JSON line and appends it to ``out`` (folder created)."""
    import json
    out.parent.mkdir(parents=True, exist_ok=True)
    print(json.dumps(row), flush=True)
    with open(out, "a") as f:
        f.write(json.dumps(row) + "\n")


def report_rows(rows: dict, name: str, seed: int, out: Path, title: str = "") -> None:
    """A screen's rows for one dataset and seed: printed as a markdown table (``key=value`` cells,
    floats to 3 decimals) under ``name, seed N`` plus ``title``, and written to
    ``out/<name>__<seed>.json``."""
    import json
    print(f"\n{name}, seed {seed}{title}")
    for key, v in rows.items():
        print(f"| {key} | " + " | ".join(f"{a}={b:.3f}" if isinstance(b, float) else f"{a}={b}"
                                        for a, b in v.items()) + " |", flush=True)
    (out / f"{name}__{seed}.json").write_text(json.dumps(rows, default=float))


def linked_table(name: str, rna: ad.AnnData, oth: ad.AnnData):
    """Linked features of a pair as a DataFrame (columns "rna", "other"): CITE-seq's gene-protein
    table (``bench_multiome.ADT_GENES``), else the shared feature names (None if fewer than 2)."""
    import pandas as pd
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "multiome"))
    from bench_multiome import ADT_GENES
    if name == "cite":
        pairs = [(g, p) for p, g in ADT_GENES.items() if p in oth.var_names and g in rna.var_names]
    else:
        pairs = [(g, g) for g in rna.var_names if g in oth.var_names]
    return pd.DataFrame(pairs, columns=["rna", "other"]) if len(pairs) >= 2 else None


TSS_FILE = Path(__file__).resolve().parents[1] / "multiome" / "snare_cortex_tss_mm10.tsv"


def user_inputs(name: str, rna: ad.AnnData, oth: ad.AnnData, other: str) -> dict:
    """What a user of ``method="gw"`` would pass beside the data: CITE-seq's gene-protein table
    (``linked=``), the mouse TSS table for SNARE peaks (``tss=``); nothing for the others."""
    import pandas as pd
    if name == "cite":
        return {"linked": linked_table(name, rna, oth).rename(columns={"other": other})}
    if name == "snare_peaks":
        return {"tss": pd.read_csv(TSS_FILE, sep="\t")}
    return {}


def screen_args(datasets: list[str], option: str, choices: list[str], out: Path) -> argparse.Namespace:
    """Command line of the seed-0 screens (refine_screen, maxfuse_screen, linked_screen): the
    datasets, seeds, cells per modality, the screen's variants (``--<option>``) and the output
    folder (created)."""
    p = argparse.ArgumentParser()
    p.add_argument("--datasets", nargs="+", default=datasets)
    p.add_argument("--seeds", nargs="+", type=int, default=[0])
    p.add_argument("--max-cells", type=int, default=2000)
    p.add_argument(f"--{option}", nargs="+", default=list(choices))
    p.add_argument("--out", type=Path, default=out)
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    return args


def gw_fit(name: str, max_cells: int, seed: int, refine: int):
    """The screens' starting point: ``name``'s cells (:func:`load`) aligned by ``method="gw"`` at
    the package's defaults with ``refine`` rounds of refinement, warnings silenced. Returns rna,
    the other modality, its name, whether the cells are paired, the model and the fit's CPU s."""
    import scferry as sf
    rna, oth, other, paired = load(name, max_cells, seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t = time.process_time()
        model = sf.integrate({"rna": rna, other: oth}, method="gw", seed=seed, progress=False,
                             refine=refine, **user_inputs(name, rna, oth, other))
        cpu = time.process_time() - t
    return rna, oth, other, paired, model, cpu
