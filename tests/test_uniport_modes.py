"""uniPort's vertical and diagonal modes, per-cell OT marginal weights and the cell-type prior.

Real data: SNARE-seq cortex and sci-CAR A549 (paired RNA + ATAC of the same cells), Pamona PBMC
(scRNA + scATAC with no shared features). Small subsets and short runs: each test stays well
under a minute on one thread.
"""
import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

import scferry as sf
from helpers import assert_unchanged, snapshot
from scferry.metrics import foscttm, knn_label_transfer
from scferry.pp import normalize_log1p

from conftest import read_fixture, shared_file
from helpers import majority_accuracy, paired_cca, random_embedding

SMALL = dict(progress=False, seed=0, n_hidden=(128,), n_specific_genes=500)


def paired(prefix, second, n, seed=0, full=False):
    """n cells of a paired pair: from the shipped fixture, or from the full shared data."""
    read = (lambda f: ad.read_h5ad(shared_file(f))) if full else read_fixture
    rna, other = read(f"{prefix}_rna.h5ad"), read(f"{prefix}_{second}.h5ad")
    idx = np.sort(np.random.default_rng(seed).choice(rna.n_obs, n, replace=False))
    return rna[idx].copy(), other[idx].copy()


def transfer_accuracy(src, tgt, key="cell_type", zs=None, zt=None):
    """kNN transfer of src's labels onto tgt (in X_scferry, or in the embeddings zs / zt)."""
    zs = src.obsm["X_scferry"] if zs is None else zs
    zt = tgt.obsm["X_scferry"] if zt is None else zt
    lab_t = tgt.obs[key].astype(str).to_numpy()
    keep = lab_t != "Mis"  # SNARE-seq: "Mis" = unknown type
    pred, _ = knn_label_transfer(zs, src.obs[key].astype(str).to_numpy(), zt[keep], k=15)
    return (np.asarray(pred) == lab_t[keep]).mean()


def chance(src, tgt, key="cell_type"):
    """Accuracy of always answering the source's most frequent type."""
    lab_t = tgt.obs[key].astype(str)
    lab_t = lab_t[lab_t != "Mis"]
    return (lab_t == src.obs[key].astype(str).value_counts().index[0]).mean()


# ------------------------------------------------------------------ vertical
@pytest.fixture(scope="module")
def snare_vertical():
    """SNARE-seq RNA + ATAC peaks, 1,100 nuclei: 1,000 to train, 100 held apart."""
    rna, atac = paired("snare_cortex", "atac", 1100)
    rna_tr, atac_tr = rna[:1000].copy(), atac[:1000].copy()
    model = sf.integrate({"rna": rna_tr, "atac": atac_tr}, max_iter=250, **SMALL)
    return model, rna_tr, atac_tr, rna[1000:].copy(), atac[1000:].copy()


def test_vertical_snare_is_detected_and_aligns(snare_vertical):
    model, rna, atac, rna_new, atac_new = snare_vertical
    assert model.params["mode"] == "vertical" and model.module.paired
    assert model.module.encode_inputs == ("specific",) and not model.preprocessing.common_genes
    assert rna.obsm["X_scferry"].shape == (1000, 16) and np.isfinite(atac.obsm["X_scferry"]).all()
    # baseline on the same nuclei: CCA of the two modalities' PCAs fitted on the training pairs
    za, zb = paired_cca(rna.X, atac.X)
    f, f_cca = foscttm(rna.obsm["X_scferry"], atac.obsm["X_scferry"]), foscttm(za, zb)
    acc, acc_cca, base = transfer_accuracy(rna, atac), transfer_accuracy(rna, atac, zs=za, zt=zb), chance(rna, atac)
    print(f"\ntraining nuclei: FOSCTTM uniPort {f:.3f}, CCA {f_cca:.3f}; RNA->ATAC kNN transfer "
          f"uniPort {acc:.3f}, CCA {acc_cca:.3f}, majority type {base:.3f}")
    assert f < 0.1 and f < f_cca, (f, f_cca)
    assert acc > base + 0.03 and acc > acc_cca - 0.05, (acc, acc_cca, base)
    # each modality embedded alone through its own encoder: training nuclei land where
    # integrate put them; held-apart nuclei get finite coordinates (their alignment is much
    # weaker than the training nuclei's: see bench/multiome/bench_uniport_modes.py)
    np.testing.assert_allclose(sf.project(model, atac[:50].copy(), "atac"), atac.obsm["X_scferry"][:50],
                               atol=1e-5)
    z_rna = sf.project(model, rna_new, "rna")
    z_atac = sf.project(model, atac_new, "atac")
    assert atac_new.obsm["X_scferry"].shape == (100, 16) and np.isfinite(z_rna).all()
    # no OT plan in vertical mode (the pairing is the plan): transfer falls back to kNN
    assert model.module.plan(0, 1) is None
    probs = sf.transfer_labels(model, "rna", "atac", "cell_type")
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)


@pytest.mark.xfail(strict=True, reason="known weakness at this test's budget (250 steps, 1,000 nuclei): "
                   "vertical uniPort does not align held-apart nuclei better than CCA fitted on the same "
                   "training pairs (near random); at the default 2,000 steps with its default 10,000 peaks "
                   "it does on 2,000 nuclei (bench/multiome/RESULTS.md)")
def test_vertical_held_apart_nuclei_align_better_than_cca(snare_vertical):
    """Held-apart nuclei, each modality through its own encoder, against CCA fitted on the same
    training pairs (held-apart nuclei through its maps) and a random embedding. Strict xfail: the
    day the method generalises, this XPASSes and the suite says so."""
    model, rna, atac, rna_new, atac_new = snare_vertical
    _, _, za_new, zb_new = paired_cca(rna.X, atac.X, rna_new.X, atac_new.X)
    z_rna, z_atac = sf.project(model, rna_new.copy(), "rna"), sf.project(model, atac_new.copy(), "atac")
    f_new, f_cca = foscttm(z_rna, z_atac), foscttm(za_new, zb_new)
    f_rand = foscttm(random_embedding(100, 16, 1), random_embedding(100, 16, 2))
    print(f"\nheld-apart nuclei: FOSCTTM uniPort {f_new:.3f}, CCA {f_cca:.3f}, random {f_rand:.3f}")
    assert f_new < f_cca, (f_new, f_cca, f_rand)


def test_vertical_features_follow_each_modalitys_sparsity():
    """Vertical mode by default reads 10,000 features of a sparse modality (ATAC peaks: under 2 %
    of entries non-zero) and 2,000 of a denser one (RNA); an integer or a dict overrides it."""
    rna, atac = paired("snare_cortex", "atac", 200)
    model = sf.integrate({"rna": rna, "atac": atac}, max_iter=2, progress=False, seed=0)
    assert model.params["n_specific_genes"] == {"rna": 2000, "atac": 10000}
    assert len(model.features("atac", "specific")) == min(10000, atac.n_vars) > 2000
    assert len(model.features("rna", "specific")) == min(2000, rna.n_vars)
    model = sf.integrate({"rna": rna, "atac": atac}, max_iter=2, progress=False, seed=0,
                         n_specific_genes={"rna": 300, "atac": 700})
    n_rna, n_atac = len(model.features("rna", "specific")), len(model.features("atac", "specific"))
    assert 300 <= n_rna < 330 and 700 <= n_atac < 770, (n_rna, n_atac)  # ties at the cut are kept
    model = sf.integrate({"rna": rna, "atac": atac}, max_iter=2, progress=False, seed=0, n_specific_genes=400)
    assert model.params["n_specific_genes"] == 400 and 400 <= len(model.features("atac", "specific")) < 440
    with pytest.raises(ValueError, match="one entry per dataset"):
        sf.integrate({"rna": rna, "atac": atac}, max_iter=2, progress=False, n_specific_genes={"rna": 300})
    with pytest.raises(ValueError, match=r"n_specific_genes\['atac'\] must be an integer"):
        sf.integrate({"rna": rna, "atac": atac}, max_iter=2, progress=False,
                     n_specific_genes={"rna": 300, "atac": -1})


def test_vertical_impute_predicts_rna_from_atac(snare_vertical):
    model, rna, atac, rna_new, atac_new = snare_vertical
    # RNA predicted from the ATAC of the training nuclei (the decoders were trained on these
    # nuclei's RNA; on held-apart nuclei the prediction is much weaker, see the report)
    imp = sf.impute(model, atac[:300].copy(), target="rna")
    genes = list(imp.var_names)
    assert genes == model.features("rna", "specific") and imp.n_obs == 300
    assert "X_scferry" not in atac_new.obsm or atac_new.obsm["X_scferry"].shape[0] == 100
    # measured values in the same units (log1p of counts per 10,000 over all genes)
    measured = normalize_log1p(sp.csr_matrix(rna[:300].X))[:, rna.var_names.get_indexer(genes)].toarray()
    # single nuclei hold ~250 RNA UMIs, too few for per-gene correlations; compare cell-type
    # profiles instead: each type's mean minus the overall mean, imputed vs measured
    types = rna.obs["cell_type"].astype(str).to_numpy()[:300]
    kept = [t for t in np.unique(types) if (types == t).sum() >= 10 and t != "Mis"]
    dev = lambda M, lab: np.stack([M[lab == t].mean(0) for t in kept]) - M.mean(0)  # noqa: E731
    r = np.corrcoef(dev(imp.X, types).ravel(), dev(measured, types).ravel())[0, 1]
    shuffled = np.random.default_rng(0).permutation(types)  # control: profiles of random groups
    r0 = np.corrcoef(dev(imp.X, shuffled).ravel(), dev(measured, shuffled).ravel())[0, 1]
    assert r > 0.1 and r > r0 + 0.05, (r, r0)


def test_vertical_save_load(snare_vertical, tmp_path):
    model, rna, atac, rna_new, atac_new = snare_vertical
    model.save(tmp_path / "v.pt")
    loaded = sf.load(tmp_path / "v.pt", adatas={"rna": rna, "atac": atac})
    assert loaded.params["mode"] == "vertical" and loaded.module.paired
    new = atac_new.copy()
    np.testing.assert_array_equal(sf.project(loaded, new, "atac"), sf.project(model, atac_new, "atac"))


@pytest.mark.parametrize("n, full", [(600, False), pytest.param(1000, True, marks=pytest.mark.shared_data)])
def test_vertical_scicar(n, full):
    rna, atac = paired("scicar_a549", "atac", n, full=full)
    model = sf.integrate({"rna": rna, "atac": atac}, max_iter=200, **SMALL)
    assert model.params["mode"] == "vertical"
    za, zb = paired_cca(rna.X, atac.X)
    f, f_cca = foscttm(rna.obsm["X_scferry"], atac.obsm["X_scferry"]), foscttm(za, zb)
    acc, acc_cca, base = transfer_accuracy(rna, atac), transfer_accuracy(rna, atac, zs=za, zt=zb), chance(rna, atac)
    print(f"\nsci-CAR {n} cells: FOSCTTM uniPort {f:.3f}, CCA {f_cca:.3f}; RNA->ATAC kNN transfer "
          f"(dex time) uniPort {acc:.3f}, CCA {acc_cca:.3f}, majority {base:.3f}")
    assert f < 0.1 and f < f_cca, (f, f_cca)
    assert acc > base and acc > acc_cca, (acc, acc_cca, base)


def test_same_seed_same_result_vertical():
    rna, atac = paired("scicar_a549", "atac", 300)
    out = []
    for _ in range(2):
        r, a = rna.copy(), atac.copy()
        sf.integrate({"rna": r, "atac": a}, max_iter=20, **SMALL)
        out.append(a.obsm["X_scferry"])
    np.testing.assert_array_equal(*out)


# ------------------------------------------------------------------ diagonal
def pamona(n=None):
    """Pamona PBMC: 50 real-valued features per modality, no names in common; shifted to >= 0
    (scferry takes non-negative values) and used as given (preprocess=False)."""
    out = []
    for kind in ("rna", "atac"):
        a = read_fixture(f"pamona_pbmc_{kind}.h5ad")
        X = np.asarray(a.X, np.float32)
        out.append(ad.AnnData(X - X.min(axis=0), obs=a.obs.copy(), var=a.var.copy()))
    return out


def test_diagonal_pamona_with_prior():
    """No shared features: auto diagonal mode. With the prior (labels of both datasets) the global
    plan sends each ATAC cell's mass to RNA cells of its type; without labels the default prior is
    the Gromov-Wasserstein coupling of the two geometries (scferry.gw), which must also beat the
    majority-type baseline, by less than the labels do."""
    rna, atac = pamona()
    accs = {}
    for label_key in (None, "cell_type"):
        r, a = rna.copy(), atac.copy()
        model = sf.integrate({"rna": r, "atac": a}, preprocess=False, max_iter=150, progress=False,
                             seed=0, label_key=label_key, prior_alpha=10.0)
        assert model.params["mode"] == "diagonal" and model.module.encode_inputs == ("specific",)
        probs = sf.transfer_labels(model, "rna", "atac", "cell_type", method="plan")
        lab = a.obs["cell_type"].astype(str).to_numpy()
        keep = np.isin(lab, r.obs["cell_type"].astype(str).to_numpy())  # types both datasets have
        accs[label_key] = (probs.idxmax(axis=1).to_numpy()[keep] == lab[keep]).mean()
    # baseline on the same cells: always answering the RNA side's most frequent (shared) type
    lab = atac.obs["cell_type"].astype(str).to_numpy()
    shared = np.isin(lab, rna.obs["cell_type"].astype(str).to_numpy())
    rna_lab = rna.obs["cell_type"].astype(str)
    majority = majority_accuracy(rna_lab[rna_lab.isin(lab[shared])], lab[shared])
    print(f"\ndiagonal Pamona PBMC, plan transfer accuracy on shared types: with labels "
          f"{accs['cell_type']:.3f}, without {accs[None]:.3f}, majority type {majority:.3f}")
    # with the label prior: far above the baseline; with the GW prior (no labels): above it, and
    # below the labelled run (labels carry what geometry alone cannot)
    assert accs["cell_type"] > 0.8 and accs["cell_type"] > majority + 0.3, (accs, majority)
    assert accs[None] > majority + 0.15, (accs, majority)
    assert accs["cell_type"] > accs[None] + 0.05, accs
    # project / impute in diagonal mode
    z = sf.project(model, atac[:50].copy(), "atac")
    np.testing.assert_allclose(z, a.obsm["X_scferry"][:50], atol=1e-5)
    imp = sf.impute(model, atac[:50].copy(), target="rna")
    assert imp.shape == (50, 50) and np.isfinite(imp.X).all()


def test_diagonal_save_load(tmp_path):
    rna, atac = pamona()
    rna, atac = rna[:300].copy(), atac[:300].copy()
    model = sf.integrate({"rna": rna, "atac": atac}, preprocess=False, max_iter=30, progress=False,
                         ot_marginals={"atac": np.linspace(0, 1, 300)})
    model.save(tmp_path / "d.pt")
    loaded = sf.load(tmp_path / "d.pt", adatas={"rna": rna, "atac": atac})
    assert loaded.params["mode"] == "diagonal" and loaded.params["ot_marginals"] == ["atac"]
    for k, v in model.module.state_dict().items():
        assert np.array_equal(v.numpy(), loaded.module.state_dict()[k].numpy()), k
    pd.testing.assert_frame_equal(sf.transfer_labels(model, "rna", "atac", "cell_type"),
                                  sf.transfer_labels(loaded, "rna", "atac", "cell_type"))


def test_diagonal_on_paired_data_when_asked():
    rna, atac = paired("scicar_a549", "atac", 300)
    model = sf.integrate({"rna": rna, "atac": atac}, mode="diagonal", max_iter=10, **SMALL)
    assert model.params["mode"] == "diagonal" and not model.module.paired


# ------------------------------------------------------------------ mode choice
def toy(n, genes, prefix="c", seed=0):
    rng = np.random.default_rng(seed)
    a = ad.AnnData(sp.csr_matrix(rng.poisson(1.0, (n, len(genes))).astype(np.float32)),
                   obs=pd.DataFrame({"cell_type": rng.choice(["A", "B"], n)},
                                    index=[f"{prefix}{i}" for i in range(n)]))
    a.var_names = genes
    return a


GENES = [f"g{i}" for i in range(60)]
PEAKS = [f"p{i}" for i in range(80)]


@pytest.mark.parametrize("make, mode", [
    (lambda: (toy(80, GENES, "x"), toy(70, GENES, "y", 1)), "horizontal"),
    (lambda: (toy(80, GENES, "x"), toy(80, PEAKS, "x", 1)), "vertical"),
    (lambda: (toy(80, GENES, "x"), toy(70, PEAKS, "y", 1)), "diagonal"),
])
def test_mode_is_chosen_from_the_inputs(make, mode):
    a, b = make()
    if mode == "diagonal":  # might be mismatched gene identifiers: a warning says so
        with pytest.warns(UserWarning, match="share no feature names.*diagonal mode"):
            model = sf.integrate({"a": a, "b": b}, max_iter=3, progress=False)
    else:
        model = sf.integrate({"a": a, "b": b}, max_iter=3, progress=False)
    assert model.params["mode"] == mode
    assert model.module.paired == (mode == "vertical")
    # the latent size follows the mode (horizontal 24; the paper's 16 otherwise), recorded
    latent = 24 if mode == "horizontal" else 16
    assert a.obsm["X_scferry"].shape == (a.n_obs, latent)
    assert model.choices["n_latent"] == {"value": latent, "reason": f"uniPort {mode} mode's default "
                                                                    "(pass n_latent= to set it)"}


def test_explicit_mode_that_does_not_fit_is_an_error():
    a, b = toy(80, GENES, "x"), toy(80, PEAKS, "x", 1)
    b.obs_names = [f"x{i}" for i in range(79)] + ["other"]
    snaps = snapshot(a), snapshot(b)
    with pytest.raises(ValueError, match=r"1 of 80 cell names differ.*'x79' vs 'other'"):
        sf.integrate({"a": a, "b": b}, mode="vertical", max_iter=3, progress=False)
    with pytest.raises(ValueError, match="share no feature names.*mode='diagonal'"):
        sf.integrate({"a": a, "b": b}, mode="horizontal", max_iter=3, progress=False)
    with pytest.raises(ValueError, match="mode must be"):
        sf.integrate({"a": a, "b": b}, mode="sideways", max_iter=3, progress=False)
    c = toy(70, PEAKS, "x", 1)
    with pytest.raises(ValueError, match="same cells: dataset 'a' has 80 cells, dataset 'c' has 70"):
        sf.integrate({"a": a, "c": c}, mode="vertical", max_iter=3, progress=False)
    assert_unchanged(a, snaps[0]), assert_unchanged(b, snaps[1])


# ------------------------------------------------------------------ guidance: validation and effect
def test_marginal_weights_and_prior_are_validated():
    a, b = toy(80, GENES, "x"), toy(70, GENES, "y", 1)
    snaps = snapshot(a), snapshot(b)
    bad = [
        (dict(ot_marginals=[1.0] * 80), TypeError, "dict of dataset name"),
        (dict(ot_marginals={"z": np.ones(80)}), ValueError, "'z', not one of the datasets"),
        (dict(ot_marginals={"a": np.ones(79)}), ValueError, r"one weight per cell of dataset 'a' \(80\)"),
        (dict(ot_marginals={"a": np.r_[np.ones(79), -1]}), ValueError, "1 negative weights"),
        (dict(ot_marginals={"a": np.r_[np.ones(79), np.nan]}), ValueError, "1 NaN or infinite"),
        (dict(ot_marginals={"a": np.zeros(80)}), ValueError, "all zeros"),
        (dict(ot_marginals={"a": pd.Series(1.0, index=[f"q{i}" for i in range(80)])}), ValueError,
         "index is not the cells"),
        (dict(prior_alpha=0.5), ValueError, "prior_alpha must be a number >= 1"),
        (dict(plan_eps=0.0), ValueError, r"plan_eps must be None \(= ot_eps\) or a number > 0"),
        (dict(plan_eps="0.1"), ValueError, "plan_eps must be None"),
        (dict(prior_pairs=[("A", "B")]), ValueError, "prior_pairs needs cell labels"),
        (dict(label_key="cell_type", prior_pairs=[("A", "Z")]), ValueError, r"labels \['Z'\]"),
        (dict(label_key="cell_type", prior_pairs="AB"), TypeError, "list of"),
    ]
    for kwargs, err, msg in bad:
        with pytest.raises(err, match=msg):
            sf.integrate({"a": a, "b": b}, max_iter=3, progress=False, **kwargs)
    b.obs = b.obs.drop(columns="cell_type")
    snaps = snaps[0], snapshot(b)
    with pytest.raises(ValueError, match="labels in both datasets"):
        sf.integrate({"a": a, "b": b}, max_iter=3, progress=False, label_key="cell_type")
    a.obs.loc["x3", "cell_type"] = None
    snaps = snapshot(a), snaps[1]
    with pytest.raises(ValueError, match="missing"):
        sf.integrate({"a": a, "b": toy(70, GENES, "y", 1)}, max_iter=3, progress=False, label_key="cell_type")
    assert_unchanged(a, snaps[0]), assert_unchanged(b, snaps[1])
    # vertical mode aligns by the pairing: no plan to weight or to guide
    c, d = toy(80, GENES, "x"), toy(80, PEAKS, "x", 1)
    with pytest.raises(ValueError, match="vertical mode aligns"):
        sf.integrate({"c": c, "d": d}, max_iter=3, progress=False, ot_marginals={"c": np.ones(80)})
    assert "X_scferry" not in c.obsm and "X_scferry" not in d.obsm


def test_zero_weight_cells_get_no_plan_mass():
    """Target cells given weight 0 receive (almost) nothing from the global plan; the others
    receive all of it. A Series of weights is aligned on the cell names."""
    rna, atac = pamona()
    rna, atac = rna[:400].copy(), atac[:400].copy()
    w = pd.Series(np.r_[np.zeros(200), np.ones(200)], index=atac.obs_names)[::-1]  # any order
    model = sf.integrate({"rna": rna, "atac": atac}, preprocess=False, max_iter=80, progress=False,
                         seed=0, ot_marginals={"atac": w})
    mass = model.module.plan(0, 1).row_mass().numpy()  # rows: atac cells
    assert mass[:200].sum() < 0.01 * mass[200:].sum(), (mass[:200].sum(), mass[200:].sum())


def test_prior_steers_the_plan():
    """Two toy types whose profiles are swapped between datasets: without a prior the plan
    matches by expression; with it, by label."""
    rng = np.random.default_rng(0)
    prof = rng.gamma(0.5, 2.0, (2, 60))

    def make(n, prefix, swap):
        g = rng.integers(0, 2, n)
        X = rng.poisson(prof[(1 - g) if swap else g] * 3).astype(np.float32)
        return ad.AnnData(sp.csr_matrix(X), obs=pd.DataFrame(
            {"cell_type": np.where(g == 0, "A", "B")}, index=[f"{prefix}{i}" for i in range(n)]),
            var=pd.DataFrame(index=GENES))

    src, tgt = make(200, "s", False), make(200, "t", True)
    accs = {}
    for label_key in (None, "cell_type"):
        m = sf.integrate({"src": src, "tgt": tgt}, max_iter=60, progress=False, seed=0,
                         label_key=label_key, prior_alpha=10.0)
        probs = sf.transfer_labels(m, "src", "tgt", "cell_type", method="plan")
        accs[label_key] = (probs.idxmax(axis=1).to_numpy() == tgt.obs["cell_type"].to_numpy()).mean()
    assert accs[None] < 0.3 and accs["cell_type"] > 0.8, accs
