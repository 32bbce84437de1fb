"""Issue 15 (Python): no silent wrong results, scferry errors instead of internal tracebacks.
Every test here failed before the hardening change."""
import warnings

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

import scferry as sf
from scferry.methods import METHODS
from helpers import assert_unchanged, snapshot
from test_integrate import FAST


def _scferry_warnings(record, match=""):
    return [w for w in record if issubclass(w.category, sf.ScferryWarning) and match in str(w.message)]


# ---------------------------------------------------------------------------- pairing
def test_default_integer_names_are_not_paired(pdac_small):
    rna, st = pdac_small
    a = ad.AnnData(rna.X[:150].copy(), var=rna.var[[]].copy())  # default names '0'..'149' in both
    b = ad.AnnData(st.X.copy(), var=st.var[[]].copy())
    assert list(a.obs_names) == list(b.obs_names)
    with pytest.warns(sf.ScferryWarning, match="mode 'horizontal'"):
        model = sf.integrate({"a": a, "b": b}, seed=0, **FAST)
    assert model.params["mode"] == "horizontal"
    assert model.choices["mode"]["value"] == "horizontal"
    assert "1500 gene names" in model.choices["mode"]["reason"]
    assert model.choices["n_common_genes"]["value"] == 500
    # the user's statement still pairs them
    paired = sf.integrate({"a": a, "b": b}, seed=0, mode="vertical", **FAST)
    assert paired.params["mode"] == "vertical" and "mode" not in paired.choices


def test_pairing_guessed_from_real_names_is_announced(pdac_small):
    _, st = pdac_small
    with pytest.warns(sf.ScferryWarning, match="mode 'vertical'.*same 150 cell names"):
        model = sf.integrate({"a": st, "b": st.copy()}, seed=0, **FAST)
    assert model.choices["mode"]["value"] == "vertical"
    assert "same 150 cell names" in model.choices["mode"]["reason"]


def test_warning_class_is_public():
    assert issubclass(sf.ScferryWarning, UserWarning)
    assert issubclass(sf.ModelFileError, ValueError)


# ---------------------------------------------------------------------------- stale embedding
def test_stale_embedding_is_refused(pdac_small, tmp_path):
    rna, st = pdac_small
    first = sf.integrate({"rna": rna, "st": st}, seed=0, **FAST)
    assert st.uns["scferry"]["model_id"] == first.id and rna.uns["scferry"]["method"] == "uniport"
    first.save(tmp_path / "m.pt")
    second = sf.integrate({"rna": rna, "st": st}, seed=1, **FAST)  # overwrites obsm["X_scferry"]
    assert second.id != first.id and st.uns["scferry"]["model_id"] == second.id
    with pytest.raises(ValueError, match="written by another model.*re-run scferry.integrate"):
        sf.transfer_labels(first, "rna", "st", "cell_type", method="knn")
    sf.transfer_labels(second, "rna", "st", "cell_type", method="knn")  # its own embedding: fine
    # a loaded model re-attached to the data its saved id wrote works
    third = sf.integrate({"rna": rna, "st": st}, seed=0, **FAST)
    third.save(tmp_path / "third.pt")
    loaded = sf.load(tmp_path / "third.pt", adatas={"rna": rna, "st": st})
    assert loaded.id == third.id
    sf.transfer_labels(loaded, "rna", "st", "cell_type", method="knn")


def test_project_records_the_model(pdac_small):
    rna, st = pdac_small
    model = sf.integrate({"rna": rna, "st": st}, seed=0, **FAST)
    new = st.copy()
    del new.uns["scferry"]
    sf.project(model, new, "st")
    assert new.uns["scferry"]["model_id"] == model.id


# ---------------------------------------------------------------------------- labels
def test_integer_and_float_labels_are_one_category(pdac_small):
    rna, st = pdac_small
    codes = pd.factorize(rna.obs["cell_type"])[0]
    rna.obs["lab"] = codes.astype(np.int64)
    model = sf.integrate({"rna": rna, "st": st}, seed=0, **FAST)
    st.obs["lab"] = np.resize(codes, st.n_obs).astype(np.float64)  # 0.0, 1.0, ... in the other one
    probs = sf.transfer_labels(model, "rna", "st", "lab", method="knn")
    assert all("." not in c for c in probs.columns)
    rna.obs["lab"] = codes.astype(np.float64)
    probs = sf.transfer_labels(model, "rna", "st", "lab", method="knn")
    assert sorted(probs.columns) == sorted(str(c) for c in np.unique(codes))
    st.obs["lab"] = np.resize(codes, st.n_obs).astype(np.int64)
    guided = sf.integrate({"rna": rna, "st": st}, seed=0, label_key="lab", **FAST)
    assert guided.module.dims["label_names"] == sorted(str(c) for c in np.unique(codes))


def test_continuous_label_column_is_refused(pdac_small):
    rna, st = pdac_small
    model = sf.integrate({"rna": rna, "st": st}, seed=0, **FAST)
    rna.obs["score"] = np.random.default_rng(0).normal(size=rna.n_obs)
    with pytest.raises(ValueError, match="'score' looks continuous.*300 distinct"):
        sf.transfer_labels(model, "rna", "st", "score")
    with pytest.raises(ValueError, match="'score' looks continuous"):
        sf.integrate({"rna": rna, "st": st}, label_key="score", **FAST)


# ---------------------------------------------------------------------------- silent data problems
def test_log_normalised_values_as_counts_warn(pdac_small):
    rna, st = pdac_small
    logged = st.copy()
    X = logged.X.toarray()
    logged.X = sp.csr_matrix(np.log1p(X / X.sum(1, keepdims=True) * 1e4))
    with pytest.warns(sf.ScferryWarning, match="'st' .X holds non-integer values.*raw counts"):
        model = sf.integrate({"rna": rna, "st": logged}, seed=0, **FAST)
    with pytest.warns(sf.ScferryWarning, match="new_adata .X holds non-integer values"):
        sf.project(model, logged.copy(), "st")
    with warnings.catch_warnings():  # raw counts: no such warning
        warnings.simplefilter("error", sf.ScferryWarning)
        sf.project(model, st.copy(), "st")


def test_project_warns_about_cells_without_model_genes(pdac_small):
    rna, st = pdac_small
    model = sf.integrate({"rna": rna, "st": st}, seed=0, **FAST)
    new = st.copy()
    X = new.X.toarray()
    read = new.var_names.isin(model.features("st", "common"))
    X[:3][:, read] = 0
    X[:3, ~read] += 1  # counts only in genes the model does not read
    new.X = sp.csr_matrix(X)
    with pytest.warns(sf.ScferryWarning, match="3 of 150 cells of new_adata have no counts in the 500 genes"):
        sf.project(model, new, "st")


def test_single_shared_gene_warns(pdac_small):
    rna, st = pdac_small
    st.var_names = [g if i == 0 else "x" + g for i, g in enumerate(st.var_names)]
    with pytest.warns(sf.ScferryWarning, match="share only 1 gene"):
        sf.integrate({"rna": rna, "st": st}, seed=0, mode="horizontal", **FAST)


@pytest.mark.parametrize("method", ["uniport", "davae"])
def test_one_cell_dataset_is_an_error(pdac_small, method):
    rna, st = pdac_small
    snap = snapshot(st[:1].copy())
    one = st[:1].copy()
    kw = FAST if method == "uniport" else dict(max_iter=40, progress=False, n_common_genes=500)
    with pytest.raises(ValueError, match="dataset 'st' has 1 cell.*at least 2"):
        sf.integrate({"rna": rna, "st": one}, method=method, **kw)
    assert_unchanged(one, snap)


# ---------------------------------------------------------------------------- parameters
@pytest.mark.parametrize("key,value,match", [
    ("n_latent", 0, "n_latent must be a positive integer"),
    ("n_latent", -3, "n_latent must be a positive integer"),
    ("n_latent", "16", "n_latent must be a positive integer"),
    ("n_hidden", 0, "n_hidden must be a non-empty sequence"),
    ("n_hidden", (0,), "n_hidden must be a non-empty sequence"),
    ("n_common_genes", 0, "n_common_genes must be a positive integer"),
    ("ot_eps", 0, "ot_eps must be a finite number > 0"),
    ("ot_eps", -1.0, "ot_eps must be a finite number > 0"),
    ("ot_rho", 0, "ot_rho must be"),
    ("ot_iter", 0, "ot_iter must be a positive integer"),
    ("kl_weight", -1, "kl_weight must be a finite number >= 0"),
    ("plan_k", 0, "plan_k must be a positive integer"),
])
def test_uniport_parameters(pdac_small, key, value, match):
    rna, st = pdac_small
    with pytest.raises(ValueError, match=match):
        sf.integrate({"rna": rna, "st": st}, **{**FAST, key: value})


@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_method_checks_n_latent_and_accepts_numpy_integers(method):
    cls = METHODS[method]
    for bad in (0, -1, "8", 2.5):
        with pytest.raises(ValueError, match="n_latent must be"):
            cls.check_params({**cls.defaults, "reference": None, "n_latent": bad})
    ok = {**cls.defaults, "reference": None, "n_latent": np.int64(8)}
    if "n_hidden" in ok:
        ok["n_hidden"] = tuple(np.int64(h) for h in np.atleast_1d(ok["n_hidden"]))
    cls.check_params(ok)


def test_seed_values(pdac_small):
    rna, st = pdac_small
    with pytest.raises(ValueError, match="seed must be an integer >= 0"):
        sf.integrate({"rna": rna, "st": st}, seed=-1, **FAST)
    with pytest.raises(ValueError, match="seed must be an integer >= 0"):
        sf.integrate({"rna": rna, "st": st}, seed=1.5, **FAST)
    sf.integrate({"rna": rna, "st": st}, seed=3, **FAST)
    ref = rna.obsm["X_scferry"].copy()
    sf.integrate({"rna": rna, "st": st}, seed=np.int64(3), **FAST)
    np.testing.assert_array_equal(ref, rna.obsm["X_scferry"])


def test_backed_anndata_is_named(pdac_small, tmp_path):
    rna, st = pdac_small
    st.write_h5ad(tmp_path / "st.h5ad")
    backed = ad.read_h5ad(tmp_path / "st.h5ad", backed="r")
    with pytest.raises(ValueError, match=r"'st' is backed on disk.*to_memory\(\)"):
        sf.integrate({"rna": rna, "st": backed}, **FAST)
    backed.file.close()


# ---------------------------------------------------------------------------- issue 14: silent fallbacks
def test_unconverged_ot_solves_are_counted_and_warned_once(pdac_small):
    rna, st = pdac_small
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        model = sf.integrate({"rna": rna, "st": st}, seed=0, ot_iter=1, **FAST)
    hits = _scferry_warnings(record, "OT solves")
    assert len(hits) == 1 and "40 of 40 minibatch OT solves" in str(hits[0].message)
    assert model.train_params["ot_unconverged"] == 40 and model.train_params["ot_solves"] == 40


def test_transfer_plan_warns_about_unreached_cells(pdac_small):
    rna, st = pdac_small
    one_step = sf.integrate({"rna": rna, "st": st}, seed=0, **{**FAST, "max_iter": 1})
    with pytest.warns(sf.ScferryWarning, match="never reached 22 of 150 cells of 'st'"):
        probs = sf.transfer_labels(one_step, "rna", "st", "cell_type", method="plan")
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-6)


# ---------------------------------------------------------------------------- refine
def test_refine_on_a_huge_basis_is_a_clear_error():
    rng = np.random.default_rng(0)
    X = np.vstack([rng.normal(size=(200, 10)), rng.normal(size=(200, 10)) + 1.0]) * 1e20
    a = ad.AnnData(np.zeros((400, 1), np.float32), obsm={"X_pca": X},
                   obs=pd.DataFrame({"batch": np.repeat(["b1", "b2"], 200)}, index=[f"c{i}" for i in range(400)]))
    with pytest.raises(ValueError, match=r"obsm\['X_pca'\] holds values up to .*e\+20.*rescale"):
        sf.refine(a, basis="X_pca", batch_key="batch", progress=False)
    assert "X_scferry_refined" not in a.obsm
