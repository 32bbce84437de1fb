#!/usr/bin/env python
"""The MaxFuse elements ``scferry.gw.refine`` did not have (Chen et al., Nat Biotech 2023), screened
against the current refinement on the same GW fit (issue 17):

- how the cells' CCA coordinates are smoothed: MaxFuse's shrinkage ``wt * c + (1 - wt) * mean over
  the own-modality neighbours`` (``wt`` 0.3 / 0.5 / 0.7 at its three steps) against ours (the mean
  over the cell and its ``n_smooth`` neighbours, i.e. ``wt = 1 / (n_smooth + 1)``);
- what the matching reads: ours ``[c, s]`` vs ``[s, c]``; MaxFuse the smoothed scores on both sides;
- the CCA fitted on the smoothed own spaces of the pivots (MaxFuse's refinement) or on the raw ones;
- several refinement rounds, the pivots re-derived each time, then MaxFuse's final step: the
  worst-matched fraction dropped and one CCA fitted on the remaining pivots, applied to the raw
  (unsmoothed) own spaces; that final CCA's components weighted by their canonical correlations
  (ours) or standardised (MaxFuse's ``center_scale``);
- the final space: the refined coordinates alone, ``[c, s]`` / ``[s, c]``, or both smoothed; the
  GW joint embedding concatenated at relative weight ``joint_w`` (ours: 1 with linked features).

One ``method="gw"`` fit (``refine=0``) per dataset and seed at the package defaults, given what a
user has (``common.user_inputs``); every variant starts from its alignment. Scores: FOSCTTM /
transfer RNA -> other (``common.score``). The first config, ``current``, must reproduce the
package's ``refine=1`` embedding (checked and printed).

    OMP_NUM_THREADS=1 nice -n 5 ~/.virtualenvs/r-scferry/bin/python bench/diagonal/maxfuse_screen.py \
        --datasets snare_gene snare_peaks cite pamona --seeds 0 --out bench/out/diag7/maxfuse
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from common import gw_fit, report_rows, score, screen_args  # noqa: E402

BASE = dict(n_iter=1, keep=0.8, wt=None, match="cs", fit="raw", final="last", weight=True, out="cs",
            joint_w=1.0, n_smooth=40, n_components=20, final_keep=None)
CONFIGS = {
    "current": {},
    "out_c": {"out": "c"},
    "out_ss": {"out": "ss"},
    "out_css": {"out": "css"},
    "joint0.5": {"joint_w": 0.5},
    "joint2": {"joint_w": 2.0},
    "wt0.3": {"wt": 0.3},
    "wt0.5": {"wt": 0.5},
    "fit_smooth0.5": {"fit": 0.5},
    "fit_smooth": {"fit": "mean"},
    "match_ss": {"match": "ss"},
    "refit1": {"final": "refit"},
    "refit1_keep50": {"final": "refit", "final_keep": 0.5},
    "mf3": {"n_iter": 3, "match": "ss", "wt": 0.5, "fit": 0.5, "final": "refit"},
    "mf3_keep50": {"n_iter": 3, "match": "ss", "wt": 0.5, "fit": 0.5, "final": "refit", "final_keep": 0.5},
    "mf3_unweighted": {"n_iter": 3, "match": "ss", "wt": 0.5, "fit": 0.5, "final": "refit", "weight": False},
    "mf1": {"n_iter": 1, "match": "ss", "wt": 0.5, "fit": 0.5, "final": "refit"},
    "smooth80": {"n_smooth": 80},
    "comp30": {"n_components": 30},
}


def variant(al, seed: int, cfg: dict) -> tuple[np.ndarray, np.ndarray, dict]:
    """One refinement variant from a GW alignment (see the module docstring)."""
    from scferry import gw
    from scferry.neighbors import knn
    c = {**BASE, **cfg}
    linked = None if al.linked_embeddings is None else tuple(x for x, _ in al.linked_embeddings)
    Z = al.embeddings if linked is None else tuple(np.hstack([z, l]) for z, l in zip(al.embeddings, linked))
    Z = tuple(np.asarray(z, np.float64) for z in Z)
    J = al.joint()
    k = c["n_smooth"]
    nb = [knn(np.asarray(z, np.float32), int(min(k, len(z) - 1)), seed=seed)[1] for z in Z]

    def smooth(C, idx, wt):
        mean_all = (C + C[idx].sum(1)) / (idx.shape[1] + 1)  # ours: the cell and its neighbours
        if wt is None:
            return mean_all
        return wt * C + (1 - wt) * C[idx].mean(1)  # MaxFuse's shrinkage towards the neighbours

    def project(mx, my, Wx, Wy, corr, weight):
        cx, cy = (Z[0] - mx) @ Wx, (Z[1] - my) @ Wy
        if weight:
            return cx * corr, cy * corr
        return cx / cx.std(0), cy / cy.std(0)  # MaxFuse: each component standardised

    def fit(ix, iy):
        if c["fit"] == "raw":
            X, Y = Z[0][ix], Z[1][iy]
        else:
            wt = None if c["fit"] == "mean" else c["fit"]
            X, Y = smooth(Z[0], nb[0], wt)[ix], smooth(Z[1], nb[1], wt)[iy]
        return gw.pivot_cca(X, Y, c["n_components"])

    Ex, Ey = J
    info = {"pivot_d": []}
    for it in range(c["n_iter"]):
        ix, iy, d = gw.match_cells(Ex, Ey, seed=seed + it)
        good = d <= np.quantile(d, c["keep"])
        ix, iy = ix[good], iy[good]
        info["pivot_d"].append(float(np.median(d[good])))
        mx, my, Wx, Wy, corr = fit(ix, iy)
        cx, cy = project(mx, my, Wx, Wy, corr, True)
        sx, sy = smooth(cx, nb[0], c["wt"]), smooth(cy, nb[1], c["wt"])
        Ex, Ey = (np.hstack([cx, sx]), np.hstack([sy, cy])) if c["match"] == "cs" else (sx, sy)
    if c["final"] == "refit":  # MaxFuse: drop the worst matches, one CCA on the rest, raw inputs
        ix, iy, d = gw.match_cells(Ex, Ey, seed=seed + c["n_iter"])
        good = d <= np.quantile(d, c["final_keep"] or c["keep"])
        mx, my, Wx, Wy, corr = gw.pivot_cca(Z[0][ix[good]], Z[1][iy[good]], c["n_components"])
        cx, cy = project(mx, my, Wx, Wy, corr, c["weight"])
        sx, sy = smooth(cx, nb[0], c["wt"]), smooth(cy, nb[1], c["wt"])
    if c["out"] == "cs":
        Rx, Ry = np.hstack([cx, sx]), np.hstack([sy, cy])
    elif c["out"] == "ss":
        Rx, Ry = sx, sy
    elif c["out"] == "css":
        Rx, Ry = np.hstack([cx, sx, sx]), np.hstack([sy, cy, sy])
    else:
        Rx, Ry = cx, cy
    ref = gw._rms(np.vstack([Rx, Ry]))
    Rx, Ry = Rx / ref, Ry / ref
    if linked is not None and c["joint_w"] > 0:
        start = gw._rms(np.vstack(J)) / c["joint_w"]
        Rx, Ry = np.hstack([Rx, J[0] / start]), np.hstack([Ry, J[1] / start])
    return Rx, Ry, info


def main() -> int:
    args = screen_args(["snare_gene", "snare_peaks", "cite", "pamona"], "configs", CONFIGS,
                       HERE.parent / "out" / "diag7" / "maxfuse")
    for name in args.datasets:
        for seed in args.seeds:
            rna, oth, other, paired, model, t_gw = gw_fit(name, args.max_cells, seed, refine=1)
            lr, lo = rna.obs["cell_type"], oth.obs["cell_type"]
            al = model.alignment
            pkg = rna.obsm["X_scferry"], oth.obsm["X_scferry"]
            rows = {"package refine=1": {**score(*pkg, lr, lo, paired), "cpu_s": t_gw}}
            for cfg in args.configs:
                t = time.process_time()
                zx, zy, info = variant(al, seed, CONFIGS[cfg])
                rows[cfg] = {**score(zx, zy, lr, lo, paired), "cpu_s": time.process_time() - t, **info}
                if cfg == "current":
                    rows[cfg]["same_as_package"] = bool(np.allclose(zx, pkg[0], atol=1e-4)
                                                        and np.allclose(zy, pkg[1], atol=1e-4))
            report_rows(rows, name, seed, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
