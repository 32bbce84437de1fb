#!/usr/bin/env python
"""scMODAL trained long on all SNARE-seq nuclei (RNA vs gene activity, the second modality's rows
shuffled; pairing and labels only score): the loss history (every ~1/40 of it), FOSCTTM and
transfer of the final embedding, the first encoder's weight norms. Prints one JSON line.

    OMP_NUM_THREADS=1 SCFERRY_SHARED_DATA=/work/shared/data PYTHONPATH=python \
        ~/.virtualenvs/r-scferry/bin/python bench/diagonal/scmodal_long_run.py \
        GEOMETRY STEPS ['{json params}']
"""
import json
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import numpy as np  # noqa: E402

import scferry as sf  # noqa: E402
from common import load, score  # noqa: E402

geometry, steps = sys.argv[1], int(sys.argv[2])
extra = json.loads(sys.argv[3]) if len(sys.argv) > 3 else {}
rna, oth, other, _ = load("snare_gene", 0, 0)
perm = np.random.default_rng(0).permutation(oth.n_obs)
b = oth[perm].copy()
b.obs_names = [f"c{i}" for i in range(b.n_obs)]
t = time.process_time()
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    m = sf.integrate({"rna": rna, other: b}, method="scmodal", linked="shared", seed=0,
                     progress=False, geometry=geometry, max_iter=steps, **extra)
zo = np.empty_like(b.obsm["X_scferry"]); zo[perm] = b.obsm["X_scferry"]
s = score(rna.obsm["X_scferry"], zo, rna.obs["cell_type"], oth.obs["cell_type"], True)
w = [float(p.detach().norm()) for n, p in m.module.encoders[0].named_parameters() if "weight" in n]
print(json.dumps({"geometry": geometry, "steps": steps, "extra": extra, **s,
                  "cpu_s": time.process_time() - t,
                  "enc0_weight_norms": w, "z_sd": float(np.std(rna.obsm["X_scferry"])),
                  "history": m.history[::max(1, len(m.history) // 40)]}, default=float))
