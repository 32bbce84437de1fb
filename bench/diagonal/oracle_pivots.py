#!/usr/bin/env python
"""How far can `gw`'s refinement go with better pivots? (issue 17, a diagnostic)

``method="gw"``'s embedding (``refine=1``) comes from one CCA fitted on "pivots": pairs of cells
matched one-to-one in GW's joint embedding (``scferry.gw.refine``). On SNARE it stops at FOSCTTM
~0.16 (gene activity) / ~0.22 (peaks), and the screens so far (refinement variants, MaxFuse
elements, inputs, settings) all stop there too. This script asks whether the pivots are the
limit, by refitting the package's own refinement (``gw.refined_space`` with ``pivots=``: same own
spaces, linked CCA coordinates, smoothing, weighting and output layout) on pivots of known quality:

- ``package``: the fit's own embedding (``refine=1``);
- ``gw_pivots``: the package's matching redone on the fitting half only (80% best kept);
- ``type_pivots``: each RNA cell paired with a random cell **of its true type** in the other
  modality (type-level oracle: as good as a matching can be without knowing the exact partner);
- ``true_pivots``: each cell paired with its true partner (cell-level oracle);
- ``random_pivots``: random pairs (lower control).

The oracle rows use the pairing and labels, which no method has: they bound the family (GW + linked
CCA + own-neighbour smoothing + one pivot CCA), they are not results. To keep the cell-level
oracle honest the pivots are drawn from a random half of the cells (``--fit-share``) and every row
is scored on the other half only (FOSCTTM among the held-apart cells; transfer RNA -> other among
them).

    OMP_NUM_THREADS=1 nice -n 5 ~/.virtualenvs/r-scferry/bin/python bench/diagonal/oracle_pivots.py \
        --datasets snare_gene snare_peaks cite --seeds 0 1 2 --out bench/out/diag8/oracle
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from common import gw_fit, report_rows, score  # noqa: E402

PIVOTS = ("gw_pivots", "type_pivots", "true_pivots", "random_pivots")


def refined_from_pivots(al, ix, iy, *, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The package's refinement (``gw.refined_space``, one round, as ``Alignment.refined``)
    fitted on the given pivots instead of its own matching."""
    from scferry import gw
    linked = None if al.linked_embeddings is None else tuple(c for c, _ in al.linked_embeddings)
    n_smooth = al.params.get("n_smooth") or gw.DEFAULTS["n_smooth"]
    return gw.refined_space(al.embeddings, al.joint(), linked, n_smooth=n_smooth, seed=seed,
                            pivots=(ix, iy))[0]


def pivots(kind: str, al, lab_x, lab_y, fit: np.ndarray, rng, seed: int, keep: float = 0.8):
    """Pivot pairs (indices into X and Y) drawn from the cells in ``fit`` (paired sets: the same
    cells on both sides)."""
    from scferry import gw
    n = len(fit)
    if kind == "gw_pivots":  # the package's own matching, restricted to the fitting half
        J = al.joint()
        ix, iy, d = gw.match_cells(J[0][fit], J[1][fit], seed=seed)
        good = d <= np.quantile(d, keep)
        return fit[ix[good]], fit[iy[good]]
    if kind == "true_pivots":
        return fit, fit
    if kind == "random_pivots":
        return fit, fit[rng.permutation(n)]
    if kind == "type_pivots":
        iy = np.empty(n, int)
        for t in np.unique(lab_x[fit]):
            src = fit[lab_x[fit] == t]
            tgt = fit[lab_y[fit] == t]
            iy[np.isin(fit, src)] = rng.choice(tgt, len(src), replace=len(tgt) < len(src)) if len(tgt) else \
                rng.choice(fit, len(src))
        return fit, iy
    raise ValueError(kind)


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--datasets", nargs="+", default=["snare_gene", "snare_peaks", "cite"])
    p.add_argument("--seeds", nargs="+", type=int, default=[0])
    p.add_argument("--max-cells", type=int, default=2000)
    p.add_argument("--fit-share", type=float, default=0.5)
    p.add_argument("--out", type=Path, default=HERE.parent / "out" / "diag8" / "oracle")
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for name in args.datasets:
        for seed in args.seeds:
            rna, oth, other, paired, model, _ = gw_fit(name, args.max_cells, seed, refine=1)
            if not paired:
                raise SystemExit(f"{name}: the oracle needs paired cells")
            lx, ly = np.asarray(rna.obs["cell_type"], str), np.asarray(oth.obs["cell_type"], str)
            rng = np.random.default_rng(1000 + seed)
            perm = rng.permutation(rna.n_obs)
            n_fit = int(args.fit_share * rna.n_obs)
            fit, held = np.sort(perm[:n_fit]), np.sort(perm[n_fit:])
            al = model.alignment
            rows = {"package": score(rna.obsm["X_scferry"][held], oth.obsm["X_scferry"][held],
                                     lx[held], ly[held], paired)}
            for kind in PIVOTS:
                ix, iy = pivots(kind, al, lx, ly, fit, rng, seed)
                zx, zy = refined_from_pivots(al, ix, iy, seed=seed)
                rows[kind] = {**score(zx[held], zy[held], lx[held], ly[held], paired),
                              "same_type": float(np.mean(lx[ix] == ly[iy])), "n_pivots": int(len(ix))}
            report_rows(rows, name, seed, args.out, f" (scored on {len(held)} held-apart cells)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
