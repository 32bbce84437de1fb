"""Command line: ``scferry demo`` integrates the shipped PDAC demo data end to end."""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

DEMO_DIR = Path(__file__).resolve().parents[2] / "inst" / "extdata"


def demo(out: Path, max_iter: int | None, seed: int, progress: bool, data_dir: Path = DEMO_DIR) -> dict:
    import anndata as ad
    import numpy as np
    import pandas as pd

    import scferry as sf
    from scferry import pl

    out.mkdir(parents=True, exist_ok=True)
    rna = ad.read_h5ad(data_dir / "pdac_demo_scrna.h5ad")
    st = ad.read_h5ad(data_dir / "pdac_demo_st.h5ad")
    t0 = time.perf_counter()
    model = sf.integrate({"rna": rna, "spatial": st}, method="uniport", max_iter=max_iter, seed=seed,
                         progress=progress)
    seconds = time.perf_counter() - t0
    probs = sf.transfer_labels(model, source="rna", target="spatial", label_key="cell_type")
    model.save(out / "model.pt")

    X = np.vstack([rna.obsm["X_scferry"], st.obsm["X_scferry"]])
    dataset = np.repeat(["rna", "spatial"], [rna.n_obs, st.n_obs])
    labels = pd.Series(list(rna.obs["cell_type"].astype(str)) + [None] * st.n_obs)
    scores = sf.metrics.evaluate(X, labels=labels, batches=dataset,
                                 label_mask=np.arange(len(X)) < rna.n_obs, seed=seed)
    scores.update(train_seconds=seconds, iterations=model.train_params["iterations_run"])
    pd.Series(scores).rename("value").to_frame().to_csv(out / "metrics.tsv", sep="\t", index_label="metric")

    labels_out = probs.copy()
    labels_out.insert(0, "predicted_label", st.obs["scferry_label"].astype(str))
    labels_out.insert(1, "score", st.obs["scferry_label_score"])
    labels_out.to_csv(out / "transferred_labels.tsv", sep="\t", index_label="spot")

    coords = pl.umap(X, seed=seed)
    pl.embedding_panels(
        coords, {"dataset": pd.Series(dataset),
                 "cell type (scRNA) / transferred label (spots)":
                     pd.Series(list(rna.obs["cell_type"].astype(str)) + list(st.obs["scferry_label"].astype(str)))},
        out / "umap.png", title=f"scferry uniPort, PDAC scRNA + ST ({scores['iterations']} iterations)")
    return scores


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scferry", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    d = sub.add_parser("demo", help="integrate the shipped PDAC demo data and write results")
    d.add_argument("--out", type=Path, default=Path("scferry_demo"), help="output folder (default: scferry_demo)")
    d.add_argument("--max-iter", type=int, default=None, help="training budget (default: the method's)")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--data-dir", type=Path, default=DEMO_DIR)
    d.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    args = parser.parse_args(argv)
    if args.command == "demo":
        scores = demo(args.out, args.max_iter, args.seed, not args.no_progress, args.data_dir)
        print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in scores.items()}, indent=1))
        print(f"wrote {args.out}/umap.png, metrics.tsv, transferred_labels.tsv, model.pt")
    return 0


if __name__ == "__main__":
    sys.exit(main())
