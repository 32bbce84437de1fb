#!/usr/bin/env python
"""Scale of the global OT plan: label transfer and deconvolution up to 10^6 cells per dataset,
scferry (sparse top-k plan) vs uniport 1.3 (dense n x m plan).

    ~/.virtualenvs/r-scferry/bin/python bench/scale/bench_plan_scale.py --threads 1
    ~/.virtualenvs/r-scferry/bin/python bench/scale/bench_plan_scale.py --ours 10000 --reference 5000

Data: the MERFISH hypothalamus pair (../shared/data: a labelled scRNA-seq reference of 1,308 cells
and 750 MERFISH cells, the same 134 genes), each resampled with replacement (seeded, counts as
they are; cells without counts left out) to n cells per dataset: n reference cells with their labels, n "spots" (MERFISH cells).

scferry (``--ours``, default 10^4, 10^5, 10^6), each size in its own process:
1. ``sf.integrate({"ref": ..., "spots": ...}, method="uniport", max_iter=--steps (20),
   batch_size=1024, patience=None)``: a SHORT training run, the same at every size: a pass over
   10^6 cells (1,954 steps of 512 + 512 cells, 7,813 at the default batch) does not fit in this
   shared 2-core machine's time, and the model's quality is not what is measured here;
2. one pass of the plan accumulator over all cells, as a full training epoch would do it: for both
   directions, every target cell once, in the minibatches of a random order (512 x 512), through
   ``TopKPlan.update`` with a random non-negative minibatch plan (the accumulator's work and
   memory do not depend on the plan's values; training adds the solved minibatch plans the same
   way). This fills every row of both plans (n x k entries each);
3. ``sf.transfer_labels(..., method="plan")`` and ``sf.deconvolve(...)`` on that full plan.
Reported: the plans' size (both directions, ``TopKPlan.nbytes``: n x k x 12 bytes each), time and
memory added (peak during the step minus resident before it, sampled every 20 ms) by training,
by the accumulator pass, by transfer and by deconvolution, CPU seconds of each (the machine is
shared: wall times depend on the load), and the process's peak (VmHWM).

uniport 1.3 (``--reference``, default 2,500 / 5,000 / 10,000 / 20,000 / 30,000 / 10^5 / 10^6), in its
venv (bench/deconvolution/reference_uniport_deconvolve.py on the same resampled data, ``save_OT=True``,
``--ref-iters`` iterations, 20 by default: reference_uniport_deconvolve.py --max-batches cuts
uniport's epochs, which it otherwise always runs whole): its plan is a dense n x n array,
created as float64 (8 n^2 bytes) then cast to float32 (4 n^2 more, both alive at once), so it
needs about 12 n^2 bytes on top of the process. Before a launch the predicted need (resident
memory of the smallest reference run + 12 n^2) is compared with this machine's MemAvailable:
sizes that do not fit are not run and are reported as "predicted out of memory" with the need.
Every reference run is also capped (RLIMIT_AS, ``--cap-gib``, default 8 GiB of address space), so
a run that outgrows the cap fails with MemoryError instead of taking the machine down: that is
the "observed" out-of-memory point under the cap.

Writes ``OUT/plan_scale.tsv`` and prints a table.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import time
import warnings
from pathlib import Path

HERE = Path(__file__).resolve().parent
BENCH = HERE.parent  # bench/: shared helpers in common/, venvs in .venvs/, outputs in out/
sys.path[:0] = [str(HERE), str(BENCH / "common"), str(BENCH / "batch_integration")]
from procstat import status_mb  # noqa: E402

REF_PY = BENCH / ".venvs" / "uniport" / "bin" / "python"
FILES = ("merfish_hypothalamus_ref.h5ad", "merfish_hypothalamus_st.h5ad")


def resample(data_dir: str, n: int, seed: int):
    """(ref, spots) AnnData of n cells each, drawn with replacement from the MERFISH pair."""
    import anndata as ad
    import numpy as np
    import pandas as pd
    ref0, st0 = (ad.read_h5ad(Path(data_dir) / f) for f in FILES)
    rng = np.random.default_rng(seed)
    out = []
    for name, a in (("ref", ref0), ("spot", st0)):
        nonzero = np.flatnonzero(np.asarray(a.X.sum(axis=1)).ravel() > 0)  # 15 reference cells have no counts
        rows = nonzero[rng.integers(0, len(nonzero), n)]
        obs = pd.DataFrame(index=[f"{name}{i}" for i in range(n)])
        if "cell_type" in a.obs:
            obs["cell_type"] = a.obs["cell_type"].astype(str).to_numpy()[rows]
        out.append(ad.AnnData(a.X[rows].tocsr().astype(np.float32), obs=obs, var=pd.DataFrame(index=a.var_names)))
    return out


def fill_plan(plan, batch: int, rng) -> None:
    """Every target row once, in minibatches of a random order (what an epoch of training adds)."""
    import torch
    src, tgt = rng.permutation(plan.n_source), rng.permutation(plan.n_target)
    for s in range(0, plan.n_target, batch):
        t_idx = torch.from_numpy(tgt[s:s + batch])
        s_idx = torch.from_numpy(src[s % plan.n_source:][:batch] if plan.n_source > batch else src)
        plan.update(s_idx, t_idx, torch.rand(len(s_idx), len(t_idx)))


def ours(n: int, data_dir: str, threads: int, seed: int, plan_k: int | None, batch: int, steps: int) -> dict:
    import numpy as np
    import torch
    torch.set_num_threads(threads)
    import scferry as sf
    import sklearn.neighbors  # noqa: F401  (imported by the kNN fallback: not timed as transfer)
    from bench_scale import RssSampler
    integ = sys.modules["scferry.integrate"]
    ref, spots = resample(data_dir, n, seed)

    timing = {}
    shared_fit = integ.fit

    def timed_fit(*args, **kwargs):  # the shared training loop, measured alone
        sampler = RssSampler()
        t, c = time.perf_counter(), time.process_time()
        history = shared_fit(*args, **kwargs)
        timing.update(train_s=time.perf_counter() - t, train_cpu_s=time.process_time() - c,
                      train_growth_mb=sampler.stop(),
                      rss_at_fit_start_mb=sampler.start)
        return history

    integ.fit = timed_fit
    kw = {} if plan_k is None else {"plan_k": plan_k}
    t0 = time.perf_counter()
    model = sf.integrate({"ref": ref, "spots": spots}, method="uniport", max_iter=steps, patience=None,
                         batch_size=batch, seed=seed, progress=False, **kw)
    integrate_s = time.perf_counter() - t0
    plans = model.module.plans
    plan_mb = sum(p.nbytes for p in plans.values()) / 2 ** 20
    reached_by_training = int((model.module.plan(0, 1).row_mass() > 0).sum())

    def measured(call):
        sampler = RssSampler()
        t, c = time.perf_counter(), time.process_time()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the unreached-spots warning; counted above
            result = call()
        return result, time.perf_counter() - t, time.process_time() - c, sampler.stop()

    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    _, fill_s, fill_cpu_s, fill_mb = measured(lambda: [fill_plan(p, batch // 2, rng) for p in plans.values()])
    unreached = int((model.module.plan(0, 1).row_mass() <= 0).sum())
    probs, transfer_s, transfer_cpu_s, transfer_mb = measured(
        lambda: sf.transfer_labels(model, source="ref", target="spots", label_key="cell_type", method="plan"))
    props, deconv_s, deconv_cpu_s, deconv_mb = measured(
        lambda: sf.deconvolve(model, reference="ref", spots="spots", label_key="cell_type"))
    assert np.allclose(probs.to_numpy().sum(1), 1) and np.allclose(props.to_numpy().sum(1), 1)
    return {"method": "scferry", "cells_per_dataset": n, "steps": model.train_params["iterations_run"],
            "batch_size": batch,
            "plan_k": model.params["plan_k"], "plan_mb": plan_mb, "integrate_s": integrate_s,
            "train_s": timing["train_s"], "train_cpu_s": timing["train_cpu_s"], "train_growth_mb": timing["train_growth_mb"],
            "rss_at_fit_start_mb": timing["rss_at_fit_start_mb"],
            "spots_reached_by_training": reached_by_training,
            "fill_s": fill_s, "fill_cpu_s": fill_cpu_s, "fill_growth_mb": fill_mb,
            "fill_updates": sum(math.ceil(p.n_target / (batch // 2)) for p in plans.values()),
            "unreached_spots": unreached,
            "transfer_s": transfer_s, "transfer_cpu_s": transfer_cpu_s, "transfer_growth_mb": transfer_mb,
            "deconvolve_s": deconv_s, "deconvolve_cpu_s": deconv_cpu_s, "deconvolve_growth_mb": deconv_mb,
            "peak_rss_mb": status_mb("VmHWM"), "threads": threads}


def write_inputs(n: int, data_dir: str, seed: int, d: Path) -> None:
    """The resampled pair in bench_deconvolve.py's input format, for the reference's venv."""
    import scipy.sparse as sp
    ref, spots = resample(data_dir, n, seed)
    d.mkdir(parents=True, exist_ok=True)
    sp.save_npz(d / "ref.npz", ref.X, compressed=False)
    sp.save_npz(d / "spots.npz", spots.X, compressed=False)
    (d / "genes.txt").write_text("\n".join(ref.var_names) + "\n")
    (d / "spots.txt").write_text("\n".join(spots.obs_names) + "\n")
    ref.obs.rename_axis("cell").reset_index().to_csv(d / "ref_obs.tsv", sep="\t", index=False)


def mem_available_mb() -> float:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 1024
    raise KeyError("MemAvailable")


def reference(n: int, args, base_mb: float | None) -> dict:
    row = {"method": "uniport 1.3", "cells_per_dataset": n, "plan_mb": 4 * n * n / 2 ** 20}
    need_mb = (base_mb or 1000.0) + 12 * n * n / 2 ** 20
    row["predicted_need_mb"] = need_mb
    avail = mem_available_mb()
    if need_mb > 0.9 * avail:
        row["status"] = f"predicted out of memory: needs {need_mb / 1024:.1f} GiB, {avail / 1024:.1f} GiB available"
        return row
    d = args.out / f"ref_{n}"
    write_inputs(n, args.data_dir, args.seed, d)
    iters = args.ref_iters
    cap = int(args.cap_gib * 2 ** 30)
    t = time.perf_counter()
    res = subprocess.run(
        [str(REF_PY), str(BENCH / "deconvolution" / "reference_uniport_deconvolve.py"), "--dir", str(d), "--iters", str(iters), "--max-batches", str(iters),
         "--seed", str(args.seed), "--threads", str(args.threads)],
        capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": str(args.threads)},
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_AS, (cap, cap)))
    row["process_s"] = time.perf_counter() - t
    if res.returncode != 0:
        tail = (res.stderr or res.stdout).strip().splitlines()[-1:] or [f"exit {res.returncode}"]
        oom = "MemoryError" in res.stderr or "Unable to allocate" in res.stderr or "DefaultCPUAllocator" in res.stderr
        row["status"] = (f"observed out of memory under the {args.cap_gib:g} GiB cap" if oom else "failed") + f": {tail[0][:120]}"
        return row
    info = json.load(open(d / "uniport" / "result.json"))
    row.update(status="ok", steps=info["iterations"], train_s=info["train_s"], cpu_s=info.get("cpu_s"),
               vm_peak_mb=info.get("vm_peak_mb"),
               deconvolve_s=info["deconvolve_s"], peak_rss_mb=info["peak_rss_mb"],
               rss_before_run_mb=info["rss_before_run_mb"],
               run_growth_mb=info["peak_rss_mb"] - info["rss_before_run_mb"])
    return row


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ours", type=int, nargs="*", default=[10_000, 100_000, 1_000_000])
    p.add_argument("--reference", type=int, nargs="*", default=[2_500, 5_000, 10_000, 20_000, 30_000, 100_000, 1_000_000])
    p.add_argument("--plan-k", type=int, default=None, help="scferry's plan_k (default: uniport's default, 50)")
    p.add_argument("--batch-size", type=int, default=1024,
                   help="scferry's cells per step, split over the two datasets (its default: 256)")
    p.add_argument("--steps", type=int, default=20, help="scferry's training steps (every size)")
    p.add_argument("--ref-iters", type=int, default=20, help="uniport's training iterations (every size)")
    p.add_argument("--cap-gib", type=float, default=8.0, help="address-space cap of each reference run")
    p.add_argument("--data-dir", default=str(BENCH.parents[1] / "shared" / "data"))
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=BENCH / "out" / "plan_scale")
    p.add_argument("--_child", type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args._child:
        print(json.dumps(ours(args._child, args.data_dir, args.threads, args.seed, args.plan_k, args.batch_size,
                              args.steps)))
        return 0

    import pandas as pd
    from bench_integration import markdown
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for n in args.ours:
        cmd = [sys.executable, __file__, "--_child", str(n), "--data-dir", args.data_dir,
               "--threads", str(args.threads), "--seed", str(args.seed), "--batch-size", str(args.batch_size),
               "--steps", str(args.steps)]
        if args.plan_k is not None:
            cmd += ["--plan-k", str(args.plan_k)]
        res = subprocess.run(cmd, capture_output=True, text=True,
                             env={**os.environ, "OMP_NUM_THREADS": str(args.threads)})
        if res.returncode != 0:
            sys.stderr.write(res.stderr[-5000:])
            raise RuntimeError(f"scferry at {n} cells failed (exit {res.returncode})")
        rows.append(json.loads(res.stdout.strip().splitlines()[-1]))
        print({k: round(v, 3) if isinstance(v, float) else v for k, v in rows[-1].items()}, flush=True)
    base = None
    for n in sorted(args.reference):
        if not REF_PY.exists():
            raise SystemExit(f"{REF_PY} is missing: run bash bench/venvs/setup_reference.sh first.")
        rows.append(reference(n, args, base))
        if rows[-1].get("status") == "ok" and base is None:
            base = rows[-1]["rss_before_run_mb"]  # the process without its plan
        print({k: round(v, 3) if isinstance(v, float) else v for k, v in rows[-1].items()}, flush=True)
    table = pd.DataFrame(rows)
    table.to_csv(args.out / "plan_scale.tsv", sep="\t", index=False)
    print(markdown(table.round(2).fillna("")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
