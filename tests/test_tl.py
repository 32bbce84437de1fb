"""deconvolve / project / impute on real data, and their bad-input cases.

- deconvolve: pseudo-spots summed from real PDAC cells held apart from the reference, with known
  composition; the proportions must follow the truth (Pearson r, RMSE per type).
- project: held-out PDAC cells projected into a trained model land among training cells of their
  own type; training cells projected again reproduce their embedding.
- impute: MERFISH + scRNA-seq (hypothalamus); panel genes hidden from MERFISH are imputed from the
  reference's decoder and compared with their measured values and with a kNN-average baseline.
"""
import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from sklearn.neighbors import NearestNeighbors

import scferry as sf
from helpers import assert_unchanged, snapshot
from scferry.pp import normalize_log1p
from scferry.tl import per_type_mean
from scferry.tl.deconvolve import type_signatures

from conftest import DEMO, read_fixture, shared_file

FAST = dict(max_iter=40, progress=False, n_common_genes=500, n_specific_genes=300)
TYPES = ["Ductal", "Cancer clone B", "Cancer clone A", "mDCs", "Macrophages", "T cells & NK cells"]


# ------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def pdac_rna():
    return ad.read_h5ad(DEMO / "pdac_demo_scrna.h5ad")


@pytest.fixture(scope="module")
def pseudo(pdac_rna):
    """Reference: 20 real cells of each of 6 PDAC types. Spots: 200 sums of 5-10 other cells
    (a dominant type at 40-100%, the rest from up to two other types), counts summed."""
    rng = np.random.default_rng(0)
    labels = pdac_rna.obs["cell_type"].astype(str).to_numpy()
    ref_rows, pool = [], {}
    for t in TYPES:
        idx = rng.permutation(np.flatnonzero(labels == t))
        ref_rows += list(idx[:20])
        pool[t] = idx[20:]
    ref = pdac_rna[np.sort(ref_rows)].copy()
    X = pdac_rna.X.tocsr()
    n_spots = 200
    truth, rows = np.zeros((n_spots, len(TYPES))), []
    for s in range(n_spots):
        n = int(rng.integers(5, 11))
        dom = int(rng.integers(len(TYPES)))
        others = rng.choice([i for i in range(len(TYPES)) if i != dom], size=2, replace=False)
        n_dom = max(1, int(round(n * rng.uniform(0.4, 1.0))))
        n_first = int(rng.integers(0, n - n_dom + 1))
        cells = []
        for ti, c in ((dom, n_dom), (others[0], n_first), (others[1], n - n_dom - n_first)):
            cells += list(rng.choice(pool[TYPES[ti]], size=c, replace=True))
            truth[s, ti] += c / n
        rows.append(sp.csr_matrix(X[cells].sum(axis=0)))
    spots = ad.AnnData(sp.vstack(rows).tocsr().astype(np.float32), var=pd.DataFrame(index=pdac_rna.var_names))
    spots.obs_names = [f"spot{i}" for i in range(n_spots)]
    model = sf.integrate({"ref": ref, "spots": spots}, seed=0, max_iter=400, progress=False,
                         n_common_genes=1000, n_specific_genes=1000, plan_eps=0.1)
    return model, ref, spots, pd.DataFrame(truth, index=spots.obs_names, columns=TYPES)


def nnls_proportions(ref, spots, genes, label_key="cell_type"):
    """NNLS deconvolution baseline: each spot's log-free normalised counts (per 10,000) regressed,
    without intercept and with non-negative weights, on the reference types' mean normalised
    profiles over `genes`; weights rescaled to sum to 1."""
    from scipy.optimize import nnls

    def norm(a):
        X = sp.csr_matrix(a[:, list(genes)].X, dtype=np.float64)
        return np.asarray(X.multiply(1e4 / np.maximum(X.sum(axis=1), 1)).todense())

    R, S = norm(ref), norm(spots)
    labels = ref.obs[label_key].astype(str).to_numpy()
    types = sorted(set(labels))
    M = np.stack([R[labels == t].mean(0) for t in types], axis=1)  # genes x types
    W = np.stack([nnls(M, s)[0] for s in S])
    W = W / np.maximum(W.sum(1, keepdims=True), 1e-12)
    return pd.DataFrame(W, index=spots.obs_names, columns=types)


# ------------------------------------------------------------------------------- deconvolve
def test_deconvolve_pseudo_spots_follow_truth(pseudo):
    model, ref, spots, truth = pseudo
    ref_snap = snapshot(ref)
    props = sf.deconvolve(model, reference="ref", spots="spots", label_key="cell_type", readout="type_mean")
    assert list(props.index) == list(spots.obs_names) and list(props.columns) == sorted(TYPES)
    np.testing.assert_allclose(props.sum(axis=1), 1.0, atol=1e-6)
    assert (props.to_numpy() >= 0).all()
    np.testing.assert_allclose(spots.obsm["scferry_proportions"], props.to_numpy(), atol=1e-6)
    assert spots.obsm["scferry_proportions"].dtype == np.float32
    assert spots.uns["scferry_proportions_columns"] == list(props.columns)
    assert_unchanged(ref, ref_snap, allowed_obsm={"X_scferry"})  # the reference is only read

    pred, true = props[TYPES].to_numpy(), truth.to_numpy()
    r = np.array([np.corrcoef(pred[:, i], true[:, i])[0, 1] for i in range(len(TYPES))])
    rmse = np.sqrt(((pred - true) ** 2).mean(axis=0))
    rmse_uniform = np.sqrt(((1 / len(TYPES) - true) ** 2).mean(axis=0))
    dominant = (pred.argmax(axis=1) == true.argmax(axis=1)).mean()
    # baseline on the same spots: NNLS of each spot's normalised counts on the reference types'
    # mean profiles over the genes the model uses (the classic regression deconvolution)
    nnls = nnls_proportions(ref, spots, model.preprocessing.common_genes)[TYPES].to_numpy()
    r_nnls = np.array([np.corrcoef(nnls[:, i], true[:, i])[0, 1] for i in range(len(TYPES))])
    rmse_nnls = np.sqrt(((nnls - true) ** 2).mean(axis=0))
    dominant_nnls = (nnls.argmax(axis=1) == true.argmax(axis=1)).mean()
    print("\npseudo-spots (200 spots of 5-10 held-apart cells, 400 steps):")
    print(pd.DataFrame({"pearson_r": r, "r_nnls": r_nnls, "rmse": rmse, "rmse_nnls": rmse_nnls,
                        "rmse_uniform": rmse_uniform}, index=TYPES).round(3))
    print(f"dominant type recovered in {dominant:.2f} of spots (NNLS {dominant_nnls:.2f})")
    # against the baselines on the same spots: a uniform answer (RMSE), a shuffled or random one
    # (r ~ 0, dominant type right in ~1/6 of spots); NNLS is compared in the strict xfail below
    assert r.min() > 0.3 and rmse.mean() < 0.85 * rmse_uniform.mean(), (r, rmse, rmse_uniform)
    assert dominant > 1 / len(TYPES) + 0.3, dominant


@pytest.fixture(scope="module")
def pseudo_scores(pseudo):
    model, ref, spots, truth = pseudo
    props = sf.deconvolve(model, reference="ref", spots="spots", label_key="cell_type")[TYPES].to_numpy()
    nnls = nnls_proportions(ref, spots, model.preprocessing.common_genes)[TYPES].to_numpy()
    true = truth.to_numpy()
    def score(P):
        r = np.mean([np.corrcoef(P[:, i], true[:, i])[0, 1] for i in range(len(TYPES))])
        return r, (P.argmax(axis=1) == true.argmax(axis=1)).mean()
    return score(props), score(nnls)


def test_deconvolve_beats_nnls(pseudo_scores):
    (r, dominant), (r_nnls, dominant_nnls) = pseudo_scores
    assert r > r_nnls and dominant >= dominant_nnls, pseudo_scores


def test_deconvolve_shares_transfer_labels_plan_and_survives_save_load(pseudo, tmp_path):
    model, ref, spots, _ = pseudo
    props = sf.deconvolve(model, reference="ref", spots="spots", label_key="cell_type", readout="mass")
    same = sf.transfer_labels(model, source="ref", target="spots", label_key="cell_type", method="plan")
    pd.testing.assert_frame_equal(props, same)
    # 20 reference cells of every type: the per-type mean is the same read-out
    pd.testing.assert_frame_equal(sf.deconvolve(model, "ref", "spots", "cell_type", readout="type_mean"), props,
                                  check_exact=False, rtol=1e-10, atol=1e-12)
    model.save(tmp_path / "m.pt")
    loaded = sf.load(tmp_path / "m.pt", adatas={"ref": ref, "spots": spots})
    pd.testing.assert_frame_equal(sf.deconvolve(loaded, "ref", "spots", "cell_type", readout="mass"), props,
                                  check_exact=False, atol=1e-6)


@pytest.fixture()
def small_model(pdac_small):
    rna, st = pdac_small
    return sf.integrate({"rna": rna, "st": st}, seed=0, **FAST), rna, st


def _fails_cleanly(call, match, *adatas, exc=ValueError):
    snaps = [snapshot(a) for a in adatas]
    with pytest.raises(exc, match=match):
        call()
    for a, s in zip(adatas, snaps):
        assert_unchanged(a, s)


def test_deconvolve_bad_input(small_model, tmp_path):
    model, rna, st = small_model
    dec = sf.deconvolve
    _fails_cleanly(lambda: dec(model, "sc", "st", "cell_type"), r"reference 'sc' is not a dataset.*\['rna', 'st'\]", rna, st)
    _fails_cleanly(lambda: dec(model, "rna", "visium", "cell_type"), "spots 'visium' is not a dataset", rna, st)
    _fails_cleanly(lambda: dec(model, "rna", "rna", "cell_type"), "different datasets", rna, st)
    _fails_cleanly(lambda: dec(model, "rna", "st", "celltype"), "not a column", rna, st, exc=KeyError)
    _fails_cleanly(lambda: dec(model, rna, "st", "cell_type"), "name of a dataset", rna, st, exc=TypeError)

    rna.obs["all_nan"] = np.nan
    _fails_cleanly(lambda: dec(model, "rna", "st", "all_nan"), "missing for all 300 cells", rna, st)
    rna.obs["one_type"] = "Ductal"
    _fails_cleanly(lambda: dec(model, "rna", "st", "one_type"), "single cell type.*'Ductal'", rna, st)

    no_plan = sf.integrate({"rna": rna, "st": st}, seed=0, keep_plan=False, **FAST)
    _fails_cleanly(lambda: dec(no_plan, "rna", "st", "cell_type", readout="type_mean"), "no OT plan.*keep_plan=True", rna, st)
    no_plan.save(tmp_path / "no_plan.pt")  # a saved model without a plan loads without one
    loaded = sf.load(tmp_path / "no_plan.pt", adatas={"rna": rna, "st": st})
    _fails_cleanly(lambda: dec(loaded, "rna", "st", "cell_type", readout="mass"), "no OT plan", rna, st)
    bare = sf.load(tmp_path / "no_plan.pt")
    _fails_cleanly(lambda: dec(bare, "rna", "st", "cell_type"), "not attached", rna, st)

    # spots no longer holding the genes the model aligned them on (subset after training)
    genes = model.preprocessing.common_genes
    st._inplace_subset_var(~st.var_names.isin(genes[:7]))
    _fails_cleanly(lambda: dec(model, "rna", "st", "cell_type"), r"dataset 'st' lacks 7 of the \d+ genes", rna, st)
    with pytest.raises(ValueError, match="lacks 7"):
        sf.load(tmp_path / "no_plan.pt", adatas={"rna": rna, "st": st})


def test_deconvolve_readouts(small_model):
    """type_mean = plan mass per reference cell of the type, row-normalised: on a reference 70%
    Ductal (pdac_small: 211 of 300 cells) it gives Ductal less and the small types more than the
    plain plan mass; "mass" is the plan's class mass, as transfer_labels(method="plan")."""
    model, rna, st = small_model
    n_cells = rna.obs["cell_type"].astype(str).value_counts()
    assert n_cells.idxmax() == "Ductal" and n_cells["Ductal"] / n_cells.sum() > 0.65
    mass = sf.deconvolve(model, "rna", "st", "cell_type", readout="mass")
    pd.testing.assert_frame_equal(mass, sf.transfer_labels(model, "rna", "st", "cell_type", method="plan"),
                                  check_exact=True)
    np.testing.assert_allclose(st.obsm["scferry_proportions"], mass.to_numpy(), atol=1e-6)
    with pytest.warns(UserWarning, match=r"RBCs \(5 cells\).* fewer than 25 cells"):
        mean = sf.deconvolve(model, "rna", "st", "cell_type", readout="type_mean")
    np.testing.assert_allclose(st.obsm["scferry_proportions"], mean.to_numpy(), atol=1e-6)
    pd.testing.assert_frame_equal(per_type_mean(mass, rna.obs["cell_type"]), mean, check_exact=True)
    assert not np.allclose(sf.deconvolve(model, "rna", "st", "cell_type", progress=False), mean)  # default: "counts"
    assert list(mean.index) == list(mass.index) and list(mean.columns) == list(mass.columns)
    np.testing.assert_allclose(mean.sum(axis=1), 1.0, atol=1e-12)
    assert (mean.to_numpy() >= 0).all()
    by_hand = mass / n_cells[mass.columns].to_numpy()
    np.testing.assert_allclose(mean, by_hand.div(by_hand.sum(axis=1), axis=0), rtol=1e-10, atol=1e-12)
    # the dominant type loses weight in every spot (n_Ductal is the largest), and on average a lot
    # (measured: 0.25 vs 0.40 with the default PCA guidance, 16 unscaled components, whose plans
    # put many spots' whole mass on Ductal cells, which row normalisation keeps at 1; 0.28 vs 0.53
    # with the former guidance of 30 scaled components; 0.5x with the unguided OT)
    assert (mean["Ductal"] <= mass["Ductal"] + 1e-12).all()
    assert mean["Ductal"].mean() < 0.7 * mass["Ductal"].mean()
    # measured: 1.4x with the default PCA guidance (0.54 vs 0.38: its plans already give the small
    # types more mass), 1.9x with the former guidance, > 2x unguided; no normalisation gives 1x
    small = n_cells.index[n_cells <= 5]
    assert mean[small].sum(axis=1).mean() > 1.25 * mass[small].sum(axis=1).mean()

    for bad in ("balanced", "Mass", None, 1):
        _fails_cleanly(lambda: sf.deconvolve(model, "rna", "st", "cell_type", readout=bad),
                       r"readout must be one of 'counts', 'type_mean', 'mass'; got", rna, st)
    del st.obsm["scferry_proportions"], st.uns["scferry_proportions_columns"]
    _fails_cleanly(lambda: sf.deconvolve(model, "rna", "st", "cell_type", readout="per-type"),
                   "readout must be one of", rna, st)
    assert "scferry_proportions" not in st.obsm  # nothing written before the check


def test_unlabelled_reference_cells_are_left_out(small_model):
    """Reference cells with a missing label carry no plan mass and cast no kNN vote; target cells
    the plan links only to them get the kNN vote of the labelled cells (with a warning); the
    signatures of readout="counts" are the labelled cells' means."""
    model, rna, st = small_model
    part = rna.obs["cell_type"].astype(str).where(rna.obs["cell_type"] != "Ductal")  # 211 of 300 NaN
    rna.obs["part"] = part
    known = part.notna().to_numpy()
    with pytest.warns(UserWarning, match=r"links \d+ of 150 cells of 'st' only to cells of 'rna' without a label"):
        df = sf.transfer_labels(model, "rna", "st", "part")
    classes = sorted(part.dropna().unique())
    assert list(df.columns) == classes
    np.testing.assert_allclose(df.sum(axis=1), 1.0, atol=1e-9)
    # by hand: the plan's mass from labelled cells, row-normalised; the rest a kNN of labelled cells
    P = model.module.plan(0, 1).to_csr()
    onehot = pd.get_dummies(part).reindex(columns=classes, fill_value=0).to_numpy(np.float64)
    mass = P @ onehot
    linked = mass.sum(axis=1) > 0
    assert 0 < (~linked).sum() < len(linked)
    np.testing.assert_allclose(df.to_numpy()[linked], mass[linked] / mass[linked].sum(1, keepdims=True), atol=1e-6)
    _, knn = sf.metrics.knn_label_transfer(rna.obsm["X_scferry"][known], part[known].to_numpy(),
                                           st.obsm["X_scferry"][~linked], k=30)
    np.testing.assert_allclose(df.to_numpy()[~linked], knn.reindex(columns=classes, fill_value=0), atol=1e-6)

    props = sf.deconvolve(model, "rna", "st", "part", progress=False)
    assert list(props.columns) == classes
    np.testing.assert_allclose(props.sum(axis=1), 1.0, atol=1e-6)
    X = sp.csr_matrix(rna.X)
    S = type_signatures(X, part.to_numpy(), classes)
    np.testing.assert_allclose(S, type_signatures(X[known], part[known].to_numpy(), classes))
    assert "part" in rna.obs and rna.obs["part"].isna().sum() == 211  # the user's column is untouched


def test_plan_eps_changes_only_the_kept_plan(pdac_small):
    """plan_eps re-solves the kept plan more diffusely; the training (embedding) is untouched."""
    rna, st = pdac_small
    sharp = sf.integrate({"rna": rna, "st": st}, seed=0, **FAST)  # plan_eps None: = ot_eps
    z_sharp = st.obsm["X_scferry"].copy()
    diffuse = sf.integrate({"rna": rna, "st": st}, seed=0, **FAST, plan_eps=0.1)
    np.testing.assert_array_equal(st.obsm["X_scferry"], z_sharp)

    def row_entropy(model):
        P = model.module.plan(0, 1).to_csr().toarray()  # spots x reference cells
        P = P[P.sum(1) > 0] / P[P.sum(1) > 0].sum(1, keepdims=True)
        return float(np.mean(-(P * np.log(np.where(P > 0, P, 1))).sum(1)))

    assert row_entropy(diffuse) > row_entropy(sharp) + 0.1
    for m in (sharp, diffuse):
        with pytest.warns(UserWarning, match="fewer than 25 cells"):
            props = sf.deconvolve(m, "rna", "st", "cell_type", readout="type_mean")
        np.testing.assert_allclose(props.sum(axis=1), 1.0, atol=1e-9)


def test_deconvolve_cells_changed_after_training(small_model):
    model, rna, st = small_model
    st._inplace_subset_obs(np.arange(st.n_obs - 5))
    _fails_cleanly(lambda: sf.deconvolve(model, "rna", "st", "cell_type"), "cells of dataset 'st' changed", rna, st)


def test_deconvolve_unreached_spots_and_batch_key(pdac_small):
    rna, st = pdac_small
    one_step = sf.integrate({"rna": rna, "st": st}, seed=0, **{**FAST, "max_iter": 1})  # 128 of 150 spots seen
    with pytest.warns(UserWarning, match="never reached 22 of 150 spots"):
        props = sf.deconvolve(one_step, "rna", "st", "cell_type", readout="type_mean")
    np.testing.assert_allclose(props.sum(axis=1), 1.0, atol=1e-6)

    st.obs["cell_type"] = "spot"  # ad.concat keeps only obs columns every input has
    both = ad.concat({"rna": rna, "st": st}, label="source", index_unique="-")
    model = sf.integrate(both, batch_key="source", seed=0, **FAST)
    props = sf.deconvolve(model, "rna", "st", "cell_type")
    is_st = (both.obs["source"] == "st").to_numpy()
    assert props.shape == (st.n_obs, rna.obs["cell_type"].nunique())
    np.testing.assert_allclose(both.obsm["scferry_proportions"][is_st], props.to_numpy(), atol=1e-6)
    assert np.isnan(both.obsm["scferry_proportions"][~is_st]).all()


def test_knn_fallback_encodes_attached_data_after_load(small_model, tmp_path):
    """A loaded model attached to objects without obsm["X_scferry"] encodes them for kNN."""
    model, rna, st = small_model
    before = sf.transfer_labels(model, "rna", "st", "cell_type", method="knn")
    model.save(tmp_path / "m.pt")
    rna2, st2 = rna.copy(), st.copy()
    del rna2.obsm["X_scferry"], st2.obsm["X_scferry"]
    loaded = sf.load(tmp_path / "m.pt", adatas={"rna": rna2, "st": st2})
    after = sf.transfer_labels(loaded, "rna", "st", "cell_type", method="knn")
    pd.testing.assert_frame_equal(before, after, check_exact=False, atol=1e-5)
    assert "X_scferry" not in rna2.obsm and "X_scferry" not in st2.obsm


def test_spatial_proportions_plot(small_model, tmp_path):
    model, rna, st = small_model
    props = sf.deconvolve(model, "rna", "st", "cell_type")
    snap = snapshot(st)
    fig = sf.pl.spatial_proportions(st, tmp_path / "p.png", types=["Ductal", "Cancer clone A"])
    assert (tmp_path / "p.png").stat().st_size > 10_000
    assert sum(ax.get_visible() for ax in fig.axes if ax.get_label() != "<colorbar>") == 3
    assert_unchanged(st, snap)
    with pytest.raises(ValueError, match="not among"):
        sf.pl.spatial_proportions(st, types=["Beta cells"])
    with pytest.raises(KeyError, match="deconvolve"):
        sf.pl.spatial_proportions(rna)
    assert props.shape == (st.n_obs, rna.obs["cell_type"].nunique())


# ------------------------------------------------------------------------------- project
@pytest.fixture(scope="module", params=[False, pytest.param(True, marks=pytest.mark.shared_data)],
                ids=["demo", "full_pdac"])
def projection(request, pdac_rna):
    """Train on 70% of the cells of six PDAC types (+ the ST spots), project the other 30%. On the
    demo pair (5,591 genes) and on the full shared PDAC-A files (19,736 genes, same cells).
    Returns the 10-NN label accuracy per type of the held-out cells, of the training cells
    (leave-one-out), and of the baseline: PCA fitted on the training cells."""
    full = request.param
    if full:
        pdac_rna = ad.read_h5ad(shared_file("pdac_a_scrna.h5ad"))
    rng = np.random.default_rng(1)
    labels = pdac_rna.obs["cell_type"].astype(str)
    keep = np.flatnonzero(labels.isin(TYPES).to_numpy())
    keep = keep[(labels.iloc[keep] != "Ductal").to_numpy() | (rng.random(len(keep)) < 0.25)]  # fewer ductal
    test_mask = rng.random(len(keep)) < 0.3
    train, held = pdac_rna[keep[~test_mask]].copy(), pdac_rna[keep[test_mask]].copy()
    st = ad.read_h5ad(shared_file("pdac_a_st.h5ad") if full else DEMO / "pdac_demo_st.h5ad")
    model = sf.integrate({"rna": train, "st": st}, seed=0, max_iter=300, progress=False,
                         n_common_genes=1000, n_specific_genes=1000)

    snap = snapshot(held)
    z = sf.project(model, held, dataset="rna")
    assert z.shape == (held.n_obs, 24) and z.dtype == np.float32 and np.isfinite(z).all()
    np.testing.assert_array_equal(held.obsm["X_scferry"], z)
    assert_unchanged(held, snap, allowed_obsm={"X_scferry"})

    again = sf.project(model, train.copy(), dataset="rna")  # training cells: same embedding
    np.testing.assert_allclose(again, train.obsm["X_scferry"], atol=1e-5)

    train_labels = train.obs["cell_type"].astype(str).to_numpy()

    def accuracy(idx, truth):  # 10-NN majority label, accuracy per type
        pred = pd.DataFrame(train_labels[idx]).mode(axis=1)[0].to_numpy()
        return pd.Series(pred == truth).groupby(truth).mean()

    nn = NearestNeighbors(n_neighbors=11).fit(train.obsm["X_scferry"])
    held_acc = accuracy(nn.kneighbors(z, n_neighbors=10)[1], held.obs["cell_type"].astype(str).to_numpy())
    loo_acc = accuracy(nn.kneighbors(train.obsm["X_scferry"])[1][:, 1:], train_labels)  # leave-one-out
    # baseline on the same cells: PCA (log1p counts per 10,000 over the model's common genes,
    # scaled, 16 components) fitted on the training cells, held-out cells through it, same 10-NN
    from sklearn.decomposition import PCA
    genes = list(model.preprocessing.common_genes)
    log = lambda a: normalize_log1p(sp.csr_matrix(a[:, genes].X)).toarray()  # noqa: E731
    L_train, L_held = log(train), log(held)
    mu, sd = L_train.mean(0), L_train.std(0) + 1e-6
    pca = PCA(16, random_state=0).fit((L_train - mu) / sd)
    p_train, p_held = pca.transform((L_train - mu) / sd), pca.transform((L_held - mu) / sd)
    nn_pca = NearestNeighbors(n_neighbors=10).fit(p_train)
    pca_acc = accuracy(nn_pca.kneighbors(p_held)[1], held.obs["cell_type"].astype(str).to_numpy())
    print(f"\nprojection of {held.n_obs} held-out cells (model: {train.n_obs} cells + {st.n_obs} spots, "
          f"300 steps), 10-NN label accuracy per type:\n"
          f"{pd.DataFrame({'held_out': held_acc, 'pca_held_out': pca_acc, 'training_loo': loo_acc}).round(3)}\n"
          f"balanced: held-out {held_acc.mean():.3f} (PCA {pca_acc.mean():.3f}), training cells {loo_acc.mean():.3f}")
    return held_acc, loo_acc, pca_acc


def test_project_held_out_cells_land_near_their_type(projection):
    held_acc, loo_acc, _ = projection
    # chance (balanced) is 1/6; the smallest held-out types have 10-13 cells
    assert held_acc.mean() > 1 / 6 + 0.4 and held_acc.mean() > 0.8 * loo_acc.mean()
    assert held_acc["Ductal"] > 0.85 and held_acc.min() > 0.4


@pytest.mark.xfail(strict=True, reason="known weakness: held-out PDAC cells projected through the "
                   "uniPort encoder find their type by 10-NN less often than in a PCA of the same genes")
def test_project_beats_pca_knn(projection):
    held_acc, _, pca_acc = projection
    assert held_acc.mean() > pca_acc.mean(), (held_acc.mean(), pca_acc.mean())


def test_project_bad_input(small_model):
    model, rna, st = small_model
    genes = model.preprocessing.common_genes
    new = rna[:50, ~rna.var_names.isin(genes[:12])].copy()
    _fails_cleanly(lambda: sf.project(model, new, dataset="rna"),
                   r"new_adata lacks 12 of the 500 genes .* \['" + genes[0], new)
    new = rna[:50].copy()
    _fails_cleanly(lambda: sf.project(model, new, dataset="atac"), r"not a dataset .*\['rna', 'st'\]", new)
    _fails_cleanly(lambda: sf.project(model, new.X, dataset="rna"), "must be an AnnData", new, exc=TypeError)
    neg = new.copy()
    neg.X = neg.X.toarray()
    neg.X[0, 0] = -1
    _fails_cleanly(lambda: sf.project(model, neg, dataset="rna"), "negative values", neg)
    empty = new.copy()
    empty.X = sp.csr_matrix(empty.X.shape, dtype=np.float32)
    _fails_cleanly(lambda: sf.project(model, empty, dataset="rna"), "zero counts", empty)


# ------------------------------------------------------------------------------- impute
def test_impute_merfish_held_out_genes():
    """Held-out MERFISH panel genes imputed from a scRNA reference. With the paper's unguided OT
    (pca_prior=False) the decoder beats the mean of the 30 nearest reference cells in the same
    embedding; the default PCA guidance matches MERFISH cells to reference cells of their kind
    better, so that kNN baseline rises (and the decoder stays positive on most genes)."""
    ref = read_fixture("merfish_hypothalamus_ref.h5ad")
    st = read_fixture("merfish_hypothalamus_st.h5ad")
    ref = ref[np.asarray(ref.X.sum(axis=1)).ravel() > 0].copy()  # 4 reference cells have no counts
    # Hold out 20 random panel genes detected in >= 5% of the cells of both datasets.
    detected = np.minimum(np.asarray((st.X > 0).mean(axis=0)).ravel(), np.asarray((ref.X > 0).mean(axis=0)).ravel())
    held = list(np.random.default_rng(0).choice(st.var_names[detected >= 0.05], 20, replace=False))
    st_train = st[:, ~st.var_names.isin(held)].copy()
    measured = pd.DataFrame(normalize_log1p(sp.csr_matrix(st.X)).toarray(), columns=st.var_names)[held]
    ref_log = pd.DataFrame(normalize_log1p(sp.csr_matrix(ref.X)).toarray(), columns=ref.var_names)[held]
    r = {}
    for guided in (False, True):
        # 40 reference HVGs would not include all held-out genes: specific_genes forces them in
        extra = {} if guided else {"pca_prior": False}
        model = sf.integrate({"ref": ref, "st": st_train}, seed=0, max_iter=1000, progress=False,
                             n_specific_genes=40, specific_genes={"ref": held}, **extra)
        assert model.params["pca_prior"] is guided
        spec = model.preprocessing.specific_genes["ref"]
        assert set(held) <= set(spec) and len(spec) < ref.n_vars

        snap = snapshot(st_train)
        imp = sf.impute(model, st_train, target="ref")
        assert_unchanged(st_train, snap)
        assert isinstance(imp, ad.AnnData) and imp.shape == (st_train.n_obs, len(spec))
        assert list(imp.var_names) == spec and list(imp.obs_names) == list(st_train.obs_names)
        assert imp.uns["scferry_impute"] == {"target": "ref", "dataset": "st", "method": "decoder",
                                             "units": "log1p(counts per 10000)"}
        np.testing.assert_allclose(imp.obsm["X_scferry"], st_train.obsm["X_scferry"], atol=1e-5)
        assert np.isfinite(imp.X).all() and (imp.X >= 0).all()

        _, idx = NearestNeighbors(n_neighbors=30).fit(ref.obsm["X_scferry"]).kneighbors(st_train.obsm["X_scferry"])
        knn = ref_log.to_numpy()[idx].mean(axis=1)  # baseline: mean of the 30 nearest reference cells
        r[guided] = (np.array([np.corrcoef(imp[:, g].X.ravel(), measured[g])[0, 1] for g in held]),
                     np.array([np.corrcoef(knn[:, i], measured[g])[0, 1] for i, g in enumerate(held)]))
        table = pd.DataFrame({"scferry": r[guided][0], "knn30": r[guided][1]}, index=held)
        print(f"\nguided={guided}: imputed vs measured MERFISH, Pearson r per held-out gene:\n"
              f"{table.round(3)}\nmedian {np.median(r[guided][0]):.3f} (kNN {np.median(r[guided][1]):.3f}), "
              f"mean {r[guided][0].mean():.3f} (kNN {r[guided][1].mean():.3f})")
    # Measured: unguided decoder median 0.35, mean 0.32 vs kNN 0.24 / 0.23; guided decoder 0.38 /
    # 0.33, kNN mean 0.36; shuffled cells would give ~0.
    ours, knn = r[False]
    assert np.median(ours) > 0.25 and ours.mean() > knn.mean()
    assert (ours > 0).mean() >= 0.8
    ours_g, knn_g = r[True]
    assert knn_g.mean() > knn.mean() + 0.05
    assert np.median(ours_g) > 0.25 and (ours_g > 0).mean() >= 0.8


def test_impute_bad_input(small_model):
    model, rna, st = small_model
    snaps = snapshot(rna), snapshot(st)
    imp = sf.impute(model, st, target="rna")  # default dataset: the other one
    assert imp.shape == (st.n_obs, len(model.preprocessing.specific_genes["rna"]))
    assert imp.uns["scferry_impute"]["dataset"] == "st"
    assert_unchanged(rna, snaps[0])
    assert_unchanged(st, snaps[1])
    with pytest.raises(ValueError, match=r"target 'atac' is not a dataset"):
        sf.impute(model, st, target="atac")
    with pytest.raises(ValueError, match="lacks 5 of the 500 genes"):
        sf.impute(model, st[:, ~st.var_names.isin(model.preprocessing.common_genes[:5])].copy(), target="rna")
    a, b = rna[:150].copy(), rna[150:].copy()
    three = sf.integrate({"a": a, "b": b, "st": st}, seed=0, **FAST)
    with pytest.raises(ValueError, match="say which one"):
        sf.impute(three, st, target="a")
    assert sf.impute(three, st, target="a", dataset="st").n_obs == st.n_obs
    no_spec = sf.integrate({"rna": rna, "st": st}, seed=0, preprocess=False, max_iter=5, progress=False)
    with pytest.raises(ValueError, match="no specific genes"):
        sf.impute(no_spec, st, target="rna")


def test_specific_genes_validation(pdac_small):
    rna, st = pdac_small
    with pytest.raises(ValueError, match="not one of the datasets"):
        sf.integrate({"rna": rna, "st": st}, specific_genes={"sc": ["KRT19"]}, **FAST)
    with pytest.raises(ValueError, match=r"2 of 3 genes are not in dataset 'rna'.*NOT_A_GENE"):
        sf.integrate({"rna": rna, "st": st}, specific_genes={"rna": [rna.var_names[0], "NOT_A_GENE", "X2"]}, **FAST)
    with pytest.raises(TypeError, match="list of gene names"):
        sf.integrate({"rna": rna, "st": st}, specific_genes={"rna": "KRT19"}, **FAST)
    assert "X_scferry" not in rna.obsm and "X_scferry" not in st.obsm  # nothing ran
