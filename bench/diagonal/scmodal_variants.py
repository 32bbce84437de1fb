#!/usr/bin/env python
"""scMODAL variants (issue 17, item 2) on unpaired RNA vs ATAC gene activity (SNARE cortex, linked:
shared gene names) and RNA vs protein (CITE-seq pbmc10k, linked: the gene-protein table), against
baselines on the same cells: Seurat CCA of the linked features, ``method="gw"`` with the same
linked features, and a random embedding. The second modality's cells are shuffled and renamed;
the pairing and the labels are used only to score (FOSCTTM; kNN transfer RNA -> other, k = 15).

    OMP_NUM_THREADS=1 nice -n 5 ~/.virtualenvs/r-scferry/bin/python bench/diagonal/scmodal_variants.py \
        --datasets snare_gene cite --seeds 0 --configs default reference_space --steps 2000 \
        --out bench/out/diag5/variants

Each (dataset, seed, config) writes one JSON line to ``--out``/runs.jsonl (appended).
"""
from __future__ import annotations

import argparse
import json
import resource
import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import linked_table, load, score  # noqa: E402

# scMODAL settings compared (the package default first); keys are sf.integrate parameters
CONFIGS = {
    "default": {},
    "reference_space": {"anchor_space": "linked"},   # anchors on the z-scored linked features
    "cca_space": {"anchor_space": "cca"},
    "refined_space": {"anchor_space": "refined"},  # the denoised space + scferry.gw.refine (MaxFuse; default)
    "denoised_space": {"anchor_space": "denoised"},  # the default before the refinement
    "k10": {"n_neighbors": 10},
    "geo10_cycle10": {"geo_weight": 10.0, "cycle_weight": 10.0},  # the reference code's weights
    "anchor10": {"anchor_weight": 10.0},
    "anchor3": {"anchor_weight": 3.0},
    "k10_anchor3": {"n_neighbors": 10, "anchor_weight": 3.0},
    "smooth10": {"n_smooth": 10},
    "geo0": {"geo_weight": 0.0},
    "geo_embedding": {"geometry": "embedding"},
    "geo_anchor": {"geometry": "anchor"},
    "geo_embedding_k10": {"geometry": "embedding", "n_neighbors": 10},
    "geo0_anchor10": {"geo_weight": 0.0, "anchor_weight": 10.0},
    "geo0_gan0": {"geo_weight": 0.0, "gan_weight": 0.0},
}


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--datasets", nargs="+", default=["snare_gene", "cite"])
    p.add_argument("--seeds", nargs="+", type=int, default=[0])
    p.add_argument("--cells", type=int, default=2000)
    p.add_argument("--steps", type=int, default=None, help="max_iter (default: the package's)")
    p.add_argument("--configs", nargs="+", default=["default"])
    p.add_argument("--baselines", nargs="*", default=["cca", "gw", "random"],
                   help="cca, gw, random, anchors (scMODAL's anchor space at the defaults, scored)")
    p.add_argument("--set", nargs="*", default=[], help="extra key=value for every config")
    p.add_argument("--history", action="store_true",
                   help="also record the loss history (every ~1/40 of it) and the first encoder's "
                        "weight norms (a long run degenerating: RESULTS, 'Budget')")
    p.add_argument("--out", default="bench/out/diag5/variants")
    p.add_argument("--table", nargs="*", default=None,
                   help="only print the mean ± sd table of the runs.jsonl in these folders")
    p.add_argument("--as-default", nargs="*", default=[],
                   help="configs whose settings equal the package defaults (counted as 'default')")
    args = p.parse_args()
    if args.table is not None:
        return print_table(args.table, args.as_default)
    import scferry as sf
    from scferry import gw
    extra = {k: json.loads(v) for k, v in (kv.split("=", 1) for kv in args.set)}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    def emit(row):
        row["peak_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps(row), flush=True)
        with open(out / "runs.jsonl", "a") as f:
            f.write(json.dumps(row) + "\n")

    for name in args.datasets:
        for seed in args.seeds:
            rna, oth, other, _ = load(name, args.cells, seed)
            table = linked_table(name, rna, oth)
            perm = np.random.default_rng(seed).permutation(oth.n_obs)
            b0 = oth[perm].copy()
            b0.obs_names = [f"c{i}" for i in range(b0.n_obs)]
            lab_r, lab_o = rna.obs["cell_type"], oth.obs["cell_type"]

            def unshuffle(z):
                zz = np.empty_like(z)
                zz[perm] = z
                return zz

            base = dict(dataset=name, seed=seed, cells=args.cells)
            if "cca" in args.baselines:
                t = time.process_time()
                i1, i2 = rna.var_names.get_indexer(table["rna"]), oth.var_names.get_indexer(table["other"])
                U, V = gw.linked_cca((rna.X[:, i1], oth.X[:, i2]), seed=seed)
                emit({**base, "method": "cca", **score(U, V, lab_r, lab_o, True),
                      "cpu_s": time.process_time() - t})
            if "gw" in args.baselines:
                a, b = rna.copy(), b0.copy()
                t = time.process_time()
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    sf.integrate({"rna": a, other: b}, method="gw", seed=seed, progress=False,
                                 linked=table.rename(columns={"other": other}) if name == "cite" else "auto")
                emit({**base, "method": "gw", **score(a.obsm["X_scferry"], unshuffle(b.obsm["X_scferry"]),
                                                       lab_r, lab_o, True), "cpu_s": time.process_time() - t})
            if "random" in args.baselines:
                rng = np.random.default_rng(seed + 100)
                emit({**base, "method": "random", **score(rng.normal(size=(rna.n_obs, 20)),
                                                           rng.normal(size=(oth.n_obs, 20)), lab_r, lab_o, True),
                      "cpu_s": 0.0})
            linked = "shared" if name != "cite" else table.rename(columns={"other": other})
            if "anchors" in args.baselines:  # the anchor space itself (default settings), scored
                from scferry.data import collect_datasets
                from scferry.methods.scmodal import ScModal
                hp = {**ScModal.defaults, "linked": linked, "reference": None, "seed": seed, **extra}
                ScModal.check_params(hp)
                t = time.process_time()
                views = ScModal._linked_views(hp, collect_datasets({"rna": rna.copy(), other: b0.copy()}), None)
                emit({**base, "method": f"anchor space ({hp['anchor_space']})",
                      **score(views[0]["linked"], unshuffle(views[1]["linked"]), lab_r, lab_o, True),
                      "cpu_s": time.process_time() - t})
            for cfg in args.configs:
                a, b = rna.copy(), b0.copy()
                kw = {**CONFIGS[cfg], **extra}
                if args.steps:
                    kw["max_iter"] = args.steps
                t = time.process_time()
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    model = sf.integrate({"rna": a, other: b}, method="scmodal", linked=linked, seed=seed,
                                         progress=False, **kw)
                h = model.history
                z = (a.obsm["X_scferry"], unshuffle(b.obsm["X_scferry"]))
                row = {**base, "method": "scmodal", "config": cfg, "params": kw,
                       **score(*z, lab_r, lab_o, True),
                       "cpu_s": time.process_time() - t, "steps": h[-1]["iteration"],
                       "last": {k: round(v, 4) for k, v in h[-1].items() if k != "iteration"}}
                if args.history:
                    row["history"] = h[::max(1, len(h) // 40)]
                    params = model.module.encoders[0].named_parameters()
                    row["encoder_weight_norms"] = [float(w.detach().norm()) for n, w in params
                                                   if "weight" in n]
                emit(row)
    return 0


def print_table(folders: list[str], as_default: list[str]) -> int:
    import pandas as pd
    rows = [json.loads(line) for f in folders for line in open(Path(f) / "runs.jsonl")]
    df = pd.DataFrame(rows)
    df["config"] = df["config"].fillna("").replace({c: "default" for c in as_default})
    df["what"] = df["method"] + df["config"].map(lambda c: f" ({c})" if c else "")
    g = df.groupby(["dataset", "what"])
    out = g.agg(seeds=("seed", "nunique"), foscttm=("foscttm", "mean"), foscttm_sd=("foscttm", "std"),
                transfer=("transfer", "mean"), transfer_sd=("transfer", "std"), cpu_s=("cpu_s", "mean"),
                peak_mib=("peak_mib", "max"))
    for (ds, what), r in out.iterrows():
        print(f"| {ds} | {what} | {r.seeds} | {r.foscttm:.3f} ± {r.foscttm_sd:.3f} | "
              f"{r.transfer:.3f} ± {r.transfer_sd:.3f} | {r.cpu_s:.1f} | {r.peak_mib:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
