"""Figures of the documentation, made from the data shipped in ``inst/extdata`` (the PDAC demo:
1,926 scRNA-seq cells with published types, 428 spatial transcriptomics spots of the same tumour).

    OMP_NUM_THREADS=1 python docs/make_figures.py [--max-iter 400] [--seeds 3] [--out docs/_static/figures]

Writes (each PNG under 300 KB; the docs build only reads them, it trains nothing):
  demo_umap.png            uniPort joint embedding: UMAP by dataset and by cell type / transferred label
  demo_proportions.png     sf.deconvolve cell-type proportions of the spots on the tissue
  demo_methods_umap.png    the same data through each method for unpaired data, and a PCA baseline
  demo_methods_scores.png  cell-type silhouette and dataset mixing of those embeddings, mean ± sd
                           over --seeds seeds; an illustration at a short budget on demo data, not a
                           benchmark (those are bench/<study>/RESULTS.md)
  tutorial_umap.png, tutorial_spatial_probabilities.png
                           the figures vignettes/python_tutorial.py draws (skipped with --no-tutorial)
  r/<vignette>/<chunk>-<n>.png
                           the figures of the R vignettes (vignettes/*.Rmd knitted with rmarkdown;
                           needs R and the installed R package; skipped with --no-r), shown by the
                           docs after the chunk that draws them
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "python"))

import scferry as sf  # noqa: E402
from scferry import pl  # noqa: E402

KNIT = ("args <- commandArgs(TRUE); rmarkdown::render(args[1], output_format = rmarkdown::md_document("
        "variant = 'gfm'), output_dir = args[2], intermediates_dir = args[2], quiet = TRUE)")
METHODS = ["uniport", "davae", "scbiot_vae"]  # the methods for unpaired datasets with shared genes


def shrink(png: Path) -> None:
    """Rewrite a PNG with a 256-colour palette: the same picture in a third of the bytes or less
    (the figures are committed)."""
    from PIL import Image

    with Image.open(png) as im:
        small = im.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT)
    small.save(png, optimize=True)


def load_demo():
    data = REPO / "inst" / "extdata"
    return ad.read_h5ad(data / "pdac_demo_scrna.h5ad"), ad.read_h5ad(data / "pdac_demo_st.h5ad")


def pca_baseline(rna, st, n_comps: int = 16, seed: int = 0) -> np.ndarray:
    """PCA of the concatenated log-normalised counts on 2,000 highly variable genes."""
    import scanpy as sc

    both = ad.concat([rna, st], index_unique="-")
    sc.pp.normalize_total(both, target_sum=1e4)
    sc.pp.log1p(both)
    sc.pp.highly_variable_genes(both, n_top_genes=2000)
    both = both[:, both.var["highly_variable"]].copy()
    sc.pp.scale(both, max_value=10)
    sc.tl.pca(both, n_comps=n_comps, random_state=seed)
    return both.obsm["X_pca"]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--max-iter", type=int, default=400, help="training steps per fit (short: figures only)")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--out", type=Path, default=REPO / "docs" / "_static" / "figures")
    p.add_argument("--no-tutorial", action="store_true")
    p.add_argument("--no-r", action="store_true")
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    # 1. uniPort on the demo: UMAP, label transfer, deconvolution
    rna, st = load_demo()
    model = sf.integrate({"rna": rna, "spatial": st}, method="uniport", max_iter=args.max_iter, seed=0,
                         progress=False)
    sf.transfer_labels(model, source="rna", target="spatial", label_key="cell_type")
    X = np.vstack([rna.obsm["X_scferry"], st.obsm["X_scferry"]])
    dataset = np.repeat(["scRNA-seq", "ST spots"], [rna.n_obs, st.n_obs])
    coords = pl.umap(X, seed=0)
    pl.embedding_panels(
        coords, {"dataset": pd.Series(dataset),
                 "cell type (scRNA-seq) / transferred label (spots)":
                     pd.Series(list(rna.obs["cell_type"].astype(str)) + list(st.obs["scferry_label"].astype(str)))},
        args.out / "demo_umap.png", title=f"sf.integrate(method='uniport'), PDAC demo, {args.max_iter} steps")

    sf.deconvolve(model, reference="rna", spots="spatial", label_key="cell_type")
    types = ["Cancer clone A", "Cancer clone B", "Ductal", "Acinar cells", "Fibroblasts", "Macrophages", "mDCs"]
    pl.spatial_proportions(st, args.out / "demo_proportions.png", types=types, ncols=4, dpi=90,
                           title="sf.deconvolve: cell-type proportions of the PDAC demo spots")

    # 2. every method for unpaired data with shared genes, and a PCA baseline, over seeds
    rows, first = [], {}
    for seed in range(args.seeds):
        for method in ["PCA (baseline)", *METHODS]:
            rna, st = load_demo()
            if method.startswith("PCA"):
                emb = pca_baseline(rna, st, seed=seed)
            else:
                sf.integrate({"rna": rna, "spatial": st}, method=method, max_iter=args.max_iter, seed=seed,
                             progress=False)
                emb = np.vstack([rna.obsm["X_scferry"], st.obsm["X_scferry"]])
            labels = pd.Series(list(rna.obs["cell_type"].astype(str)) + [None] * st.n_obs)
            s = sf.metrics.evaluate(emb, labels=labels, batches=dataset,
                                    label_mask=np.arange(len(emb)) < rna.n_obs, seed=seed)
            rows.append({"method": method, "seed": seed, **s})
            if seed == 0:
                first[method] = (pl.umap(emb, seed=0), labels)
            print(method, seed, {k: round(v, 3) for k, v in s.items()}, flush=True)
    scores = pd.DataFrame(rows)

    from matplotlib.figure import Figure
    import matplotlib

    cats = sorted(rna.obs["cell_type"].astype(str).unique())
    cmap = matplotlib.colormaps["tab20"]
    fig = Figure(figsize=(4.0 * len(first), 4.4))
    axes = fig.subplots(1, len(first))
    for ax, (method, (xy, labels)) in zip(axes, first.items()):
        spots = labels.isna().to_numpy()
        ax.scatter(xy[spots, 0], xy[spots, 1], s=3, c="#bbbbbb", label="ST spot", rasterized=True)
        for i, cat in enumerate(cats):
            sel = (labels == cat).to_numpy()
            ax.scatter(xy[sel, 0], xy[sel, 1], s=3, color=cmap(i % cmap.N), label=cat, rasterized=True)
        ax.set_title(method)
        ax.set_xticks([]), ax.set_yticks([])
    axes[-1].legend(markerscale=3, fontsize=6, frameon=False, loc="center left", bbox_to_anchor=(1, 0.5))
    fig.suptitle(f"PDAC demo, seed 0, {args.max_iter} steps: scRNA-seq cells by type, spots in grey")
    fig.tight_layout()
    fig.savefig(args.out / "demo_methods_umap.png", dpi=80)

    metrics = [("silhouette", "cell-type silhouette\n(scRNA-seq cells; higher = types apart)"),
               ("ilisi", "iLISI, scaled\n(higher = datasets mixed)"),
               ("batch_entropy", "batch entropy\n(higher = datasets mixed)")]
    g = scores.groupby("method", sort=False)
    mean, sd = g.mean(numeric_only=True), g.std(numeric_only=True).fillna(0)
    fig = Figure(figsize=(11, 3.4))
    axes = fig.subplots(1, len(metrics))
    colours = ["#999999", "#1f77b4", "#ff7f0e", "#2ca02c"]
    for ax, (key, label) in zip(axes, metrics):
        ax.bar(range(len(mean)), mean[key], yerr=sd[key], color=colours[:len(mean)], capsize=3)
        ax.set_xticks(range(len(mean)), mean.index, rotation=20, fontsize=8)
        ax.set_title(label, fontsize=9)
    fig.suptitle(f"PDAC demo, {args.max_iter} steps, mean ± sd over {args.seeds} seeds "
                 "(illustration; benchmarks: bench/<study>/RESULTS.md)", fontsize=9)
    fig.tight_layout()
    fig.savefig(args.out / "demo_methods_scores.png", dpi=90)

    # 3. the Python tutorial's own figures
    if not args.no_tutorial:
        with tempfile.TemporaryDirectory() as tmp:
            subprocess.run([sys.executable, str(REPO / "vignettes" / "python_tutorial.py"), tmp], check=True,
                           stdout=subprocess.DEVNULL)
            for name in ["umap.png", "spatial_probabilities.png"]:
                shutil.copy(Path(tmp) / name, args.out / f"tutorial_{name}")
    # 4. the R vignettes' figures, by chunk
    if not args.no_r:
        for rmd in sorted((REPO / "vignettes").glob("*.Rmd")):
            with tempfile.TemporaryDirectory() as tmp:
                subprocess.run(["Rscript", "-e", KNIT, str(rmd), tmp], check=True)
                dest = args.out / "r" / rmd.stem
                shutil.rmtree(dest, ignore_errors=True)
                dest.mkdir(parents=True)
                for png in Path(tmp).glob(f"{rmd.stem}_files/figure-gfm/*.png"):
                    shutil.copy(png, dest / png.name)
    for png in sorted(args.out.rglob("*.png")):
        shrink(png)
        print(f"{png.relative_to(args.out)}: {png.stat().st_size // 1024} KB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
