"""sf.deconvolve's default readout ("counts": a Poisson fit of each spot's counts on the
reference's per-type mean counts, with gene-wise platform factors) on held-apart real cells,
against NNLS computed in the same test on the same spots."""
import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from scipy.optimize import nnls

import scferry as sf

from conftest import shared_file

FAST = dict(max_iter=5, progress=False, n_common_genes=500, n_specific_genes=300)


@pytest.fixture(scope="module")
def held_apart():
    """PDAC-A inDrop: types with >= 40 cells split 50/50 (reference / held apart); 150 spots
    summing 5-10 held-apart cells of uniformly drawn types; the first 4,000 genes."""
    rna = ad.read_h5ad(shared_file("pdac_a_scrna.h5ad"))
    rna = rna[:, rna.var_names[:4000]].copy()
    labels = rna.obs["cell_type"].astype(str).to_numpy()
    n = pd.Series(labels).value_counts()
    types = sorted(n.index[n >= 40])
    rng = np.random.default_rng(0)
    ref_rows, pool = [], {}
    for t in types:
        idx = rng.permutation(np.flatnonzero(labels == t))
        ref_rows += list(idx[: len(idx) // 2])
        pool[t] = idx[len(idx) // 2:]
    ref = rna[np.sort(ref_rows)].copy()
    X = rna.X.tocsr()
    truth, rows = np.zeros((150, len(types))), []
    for s in range(150):
        drawn = rng.integers(len(types), size=int(rng.integers(5, 11)))
        cells = [rng.choice(pool[types[k]]) for k in drawn]
        np.add.at(truth[s], drawn, 1 / len(drawn))
        rows.append(sp.csr_matrix(X[cells].sum(axis=0)))
    spots = ad.AnnData(sp.vstack(rows).tocsr().astype(np.float32), var=pd.DataFrame(index=rna.var_names))
    spots.obs_names = [f"spot{i}" for i in range(150)]
    return ref, spots, pd.DataFrame(truth, index=spots.obs_names, columns=types)


def nnls_baseline(ref, spots, types):
    """NNLS of each spot's counts on the reference's per-type mean counts, rows summed to 1."""
    labels = ref.obs["cell_type"].astype(str).to_numpy()
    S = np.vstack([np.asarray(ref.X[labels == t].mean(axis=0)).ravel() for t in types])
    Y = spots.X.toarray()
    W = np.array([nnls(S.T, y)[0] for y in Y])
    return W / W.sum(axis=1, keepdims=True)


def scores(P, T):
    rmse = float(np.sqrt(((P - T) ** 2).mean()))
    r = float(np.mean([np.corrcoef(P[:, k], T[:, k])[0, 1] for k in range(T.shape[1])]))
    return rmse, r


def test_counts_readout_beats_nnls_on_held_apart_spots(held_apart):
    ref, spots, truth = held_apart
    types = list(truth.columns)
    model = sf.integrate({"ref": ref, "spots": spots}, seed=0, keep_plan=False, **FAST)
    props = sf.deconvolve(model, "ref", "spots", "cell_type", progress=False)  # no plan needed
    assert list(props.columns) == types and list(props.index) == list(spots.obs_names)
    np.testing.assert_allclose(props.sum(axis=1), 1.0, atol=1e-9)
    np.testing.assert_allclose(spots.obsm["scferry_proportions"], props.to_numpy(), atol=1e-6)
    assert spots.uns["scferry_proportions_params"]["n_genes"] > 1000
    P, T = props[types].to_numpy(), truth.to_numpy()
    rmse, r = scores(P, T)
    rmse_nnls, r_nnls = scores(nnls_baseline(ref, spots, types), T)
    rmse_uniform, _ = scores(np.full_like(T, 1 / len(types)), T)
    print(f"\nsf.deconvolve RMSE {rmse:.3f} r {r:.3f} | NNLS RMSE {rmse_nnls:.3f} r {r_nnls:.3f} | "
          f"uniform RMSE {rmse_uniform:.3f}; absent types: mean {P[T == 0].mean():.4f}, "
          f"median {np.median(P[T == 0]):.4f}; present: mean {P[T > 0].mean():.3f}")
    assert rmse < rmse_nnls and r > r_nnls
    # a type absent from a spot gets little: a few % (no sparsity cut by default), far below
    # what present types get and far below a uniform guess (1/6)
    assert P[T == 0].mean() < 0.05 and np.median(P[T == 0]) < 0.03
    assert P[T == 0].mean() < 0.2 * P[T > 0].mean()

    # with the reference labels shuffled the fit is no better than a uniform guess
    shuffled = ref.copy()
    shuffled.obs["cell_type"] = np.random.default_rng(1).permutation(ref.obs["cell_type"].astype(str).to_numpy())
    m2 = sf.integrate({"ref": shuffled, "spots": spots.copy()}, seed=0, keep_plan=False, **FAST)
    bad = sf.deconvolve(m2, "ref", "spots", "cell_type", progress=False)[types].to_numpy()
    assert scores(bad, T)[1] < 0.3


def test_counts_readout_options_and_bad_input(held_apart):
    ref, spots, truth = held_apart
    ref, spots = ref.copy(), spots[:40].copy()
    spots.obsm.pop("scferry_proportions", None)  # the module's fixture may carry an earlier result
    model = sf.integrate({"ref": ref, "spots": spots}, seed=0, keep_plan=False, **FAST)
    dec = sf.deconvolve
    for kw, match, exc in [({"min_share": 0.5}, "min_share must be", ValueError),
                           ({"min_share": -0.1}, "min_share must be", ValueError),
                           ({"platform": "yes"}, "platform must be", TypeError),
                           ({"max_iter": 0}, "max_iter must be", ValueError),
                           ({"seed": -1}, "seed must be", ValueError),
                           ({"progress": 1}, "progress must be", TypeError)]:
        with pytest.raises(exc, match=match):
            dec(model, "ref", "spots", "cell_type", **kw)
        assert "scferry_proportions" not in spots.obsm  # nothing written before the checks
    a = dec(model, "ref", "spots", "cell_type", progress=False)
    b = dec(model, "ref", "spots", "cell_type", progress=False)
    pd.testing.assert_frame_equal(a, b)  # deterministic
    fixed = dec(model, "ref", "spots", "cell_type", platform=False, progress=False)
    assert not np.allclose(a, fixed) and np.allclose(fixed.sum(axis=1), 1)
    sparse = dec(model, "ref", "spots", "cell_type", min_share=0.05, progress=False)
    assert (sparse.to_numpy() == 0).mean() > (a.to_numpy() == 0).mean()
    assert spots.uns["scferry_proportions_params"]["min_share"] == 0.05
    # a plan readout still needs a plan
    with pytest.raises(ValueError, match="no OT plan.*readout='counts'"):
        dec(model, "ref", "spots", "cell_type", readout="mass")
