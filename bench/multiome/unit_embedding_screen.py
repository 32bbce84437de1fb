#!/usr/bin/env python
"""uniPort vertical's held-apart modality gap, from saved embeddings (no training): for every
finished run of ``bench_multiome.py`` in ``--out`` (DATASET/seedS/METHOD/all_*.npy), the scores of
the embedding as saved ("means") and of each cell's code scaled to length 1 ("unit", what
``embedding="unit"`` returns), the mean length of the codes of training and held-apart cells per
modality, and FOSCTTM / modality mixing on as many sampled training cells as there are held-apart
ones (bench/multiome/RESULTS.md, "uniPort vertical: the held-apart modality gap").

    ~/.virtualenvs/r-scferry/bin/python bench/multiome/unit_embedding_screen.py --out bench/out/p7_base \
        --save bench/out/p7_unit_posthoc.tsv
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent / "common"), str(HERE.parent / "batch_integration")]
import bench_multiome as bm  # noqa: E402
from datasets import shared_data_dir  # noqa: E402


def unit(X: np.ndarray) -> np.ndarray:
    return X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True, help="a bench_multiome.py output folder")
    p.add_argument("--methods", nargs="+", default=["uniport_vertical"])
    p.add_argument("--datasets", nargs="+", default=bm.PAIRED_DATASETS)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--max-cells", type=int, default=2000)
    p.add_argument("--data-dir", default=shared_data_dir())
    p.add_argument("--save", type=Path)
    args = p.parse_args()
    from scferry import metrics
    rows = []
    for ds in args.datasets:
        for seed in args.seeds:
            rna, _, other = bm.load(ds, args.data_dir, args.max_cells, seed)
            labels = rna.obs["cell_type"].astype(str).to_numpy()
            test = bm.split(pd.Series(labels), 0.2, seed)
            train = np.zeros_like(test)  # as many training cells as held-apart ones
            train[np.random.default_rng(seed).choice(np.flatnonzero(~test), test.sum(), replace=False)] = True
            for method in args.methods:
                d = args.out / ds / f"seed{seed}" / method
                if not (d / "all_rna.npy").exists():
                    continue
                A, B = np.load(d / "all_rna.npy"), np.load(d / "all_other.npy")
                length = lambda X: float(np.linalg.norm(X, axis=1).mean())  # noqa: E731
                base = {"dataset": ds, "method": method, "seed": seed,
                        "len_train_rna": length(A[train]), "len_train_other": length(B[train]),
                        "len_test_rna": length(A[test]), "len_test_other": length(B[test]),
                        "train_foscttm": metrics.foscttm(A[train], B[train]),
                        "train_mixing": metrics.batch_entropy(
                            np.vstack([A[train], B[train]]), np.repeat([0, 1], train.sum()),
                            n_neighbors=min(100, int(train.sum()) // 2), seed=seed)}
                for emb, (a, b) in {"mean": (A, B), "unit": (unit(A), unit(B))}.items():
                    rows.append({**base, "embedding": emb, **bm.score(a, b, labels, test, other, seed)})
    table = pd.DataFrame(rows)
    if args.save:
        table.to_csv(args.save, sep="\t", index=False)
    cols = ["foscttm", "transfer", "silhouette", "batch_entropy", "len_train_rna", "len_train_other",
            "len_test_rna", "len_test_other", "train_foscttm", "train_mixing"]
    summary = table.groupby(["dataset", "method", "embedding"])[cols].agg(
        lambda x: f"{x.mean():.3f} ± {x.std():.3f}" if len(x) > 1 else f"{x.mean():.3f}")
    print(summary.to_string())
    return 0


if __name__ == "__main__":
    sys.exit(main())
