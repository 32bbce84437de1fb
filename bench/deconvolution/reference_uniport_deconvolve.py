#!/usr/bin/env python
"""uniport 1.3's global OT plan on a reference + spots pair, reduced to plan mass per cell type.

Runs INSIDE the venv made by ``bench/venvs/setup_reference.sh`` (called by bench_deconvolve.py and
bench_plan_scale.py)::

    bench/.venvs/uniport/bin/python bench/deconvolution/reference_uniport_deconvolve.py --dir DIR --iters 2000 --seed 0

``DIR`` holds the input written by bench_deconvolve.py (``ref.npz``, ``spots.npz``, ``genes.txt``,
``ref_obs.tsv``, ``spots.txt``). Preprocessing is reference_uniport.py's (uniPort's tutorials);
then, as uniPort's PDAC tutorial, ``uniport.Run(adatas=[spots, ref], adata_cm=..., mode='h',
iteration=N, seed=S, save_OT=True)`` (the scRNA reference last = uniport's reference), every
other argument at its default. ``Run`` returns the dense global plan, spots x reference cells
(float32; created as float64 first). Writes to ``DIR/uniport/``:
  type_mass.tsv   spots x cell types: the plan summed over each type's cells (what the R
                  tutorial's ``mapCluster`` starts from; bench_deconvolve.py normalises it)
  result.json     train_s (the Run call), deconvolve_s (plan -> type_mass), cpu_s (CPU seconds of
                  both), peak_rss_mb (VmHWM), vm_peak_mb (peak address space, VmPeak),
                  rss_before_run_mb (VmRSS before Run), iterations, plan shape/dtype/bytes
"""
from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent / "common"), str(HERE.parent / "uniport_reference")]
import reference_uniport as ru  # noqa: E402  (numpy shim, uniport import, tutorial preprocessing)
from bench_deconvolve import load_inputs  # noqa: E402
from procstat import status_mb  # noqa: E402

np, pd, torch, up = ru.np, ru.pd, ru.torch, ru.up


class FirstBatches:
    """A DataLoader cut to its first n batches per epoch (for --max-batches)."""

    def __init__(self, loader, n: int):
        self.loader, self.n = loader, n

    def __iter__(self):
        return itertools.islice(iter(self.loader), self.n)

    def __len__(self):
        return min(self.n, len(self.loader))


def limit_batches(n: int) -> None:
    """Make uniport's training see only the first n batches of each epoch (its epoch count is
    ceil(iteration / len(loader)), so Run(iteration=n) then trains exactly n iterations)."""
    class Limited(up.function.VAE):
        def fit(self, dataloader, *args, **kwargs):
            return super().fit(FirstBatches(dataloader, n), *args, **kwargs)

    up.function.VAE = Limited


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dir", type=Path, required=True)
    p.add_argument("--iters", type=int, default=2000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--max-batches", type=int, default=None,
                   help="train on only the first N batches of each epoch (bench_plan_scale.py: a short "
                        "run at any size; uniport otherwise trains whole epochs)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    if args.max_batches:
        limit_batches(args.max_batches)
    ref, spots = load_inputs(args.dir)
    labels = ref.obs["cell_type"].astype(str).to_numpy()
    adatas, adata_cm = ru.preprocess([("spots", spots), ("ref", ref)])
    rss_before = status_mb("VmRSS")
    out = args.dir / "uniport"
    out.mkdir(exist_ok=True)
    tee = ru.Tee(sys.stdout)  # to read uniport's "EarlyStopping: run N epoch"
    sys.stdout = tee
    try:
        t0, c0 = time.perf_counter(), time.process_time()
        _, tran = up.Run(adatas=adatas, adata_cm=adata_cm, mode="h", iteration=args.iters, seed=args.seed,
                         use_rep=["X", "X"], save_OT=True, outdir=str(out / "uniport_output"))
        t1 = time.perf_counter()
    finally:
        sys.stdout = tee.stream
    epochs = int(np.ceil(args.iters / ru.CAPTURED["iters_per_epoch"]))
    for line in tee.text().splitlines():
        if line.startswith("EarlyStopping: run"):
            epochs = int(line.split()[2])
    plan = tran[0]  # spots x reference cells
    types = sorted(set(labels))
    onehot = (labels[:, None] == np.array(types)[None, :]).astype(plan.dtype)
    mass = plan @ onehot  # no copy of the plan's columns
    t2, c2 = time.perf_counter(), time.process_time()
    pd.DataFrame(mass, index=spots.obs_names, columns=types).to_csv(out / "type_mass.tsv", sep="\t",
                                                                    index_label="spot")
    json.dump({"train_s": t1 - t0, "deconvolve_s": t2 - t1, "cpu_s": c2 - c0, "peak_rss_mb": status_mb("VmHWM"), "vm_peak_mb": status_mb("VmPeak"),
               "rss_before_run_mb": rss_before, "iterations": epochs * ru.CAPTURED["iters_per_epoch"],
               "plan_shape": list(plan.shape), "plan_dtype": str(plan.dtype), "plan_mb": plan.nbytes / 2**20,
               "threads": torch.get_num_threads()}, open(out / "result.json", "w"), indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
