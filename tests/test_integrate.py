"""integrate / transfer_labels / save-load on real data (small subset of the shipped PDAC pair)."""
import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

import scferry as sf
from conftest import DEMO
from helpers import assert_unchanged, pca_embedding, random_embedding, snapshot

FAST = dict(max_iter=40, progress=False, n_common_genes=500, n_specific_genes=300)


def test_integrate_writes_only_the_embedding(pdac_small):
    rna, st = pdac_small
    snaps = snapshot(rna), snapshot(st)
    model = sf.integrate({"rna": rna, "st": st}, seed=0, **FAST)
    for a, s in zip((rna, st), snaps):
        assert_unchanged(a, s, allowed_obsm={"X_scferry"})
        emb = a.obsm["X_scferry"]
        assert emb.shape == (a.n_obs, 24) and emb.dtype == np.float32 and np.isfinite(emb).all()
    assert model.dataset_names == ["rna", "st"] and model.train_params["iterations_run"] == 40
    # horizontal mode's latent size, chosen by mode and recorded (vertical / diagonal: the paper's 16)
    assert model.params["n_latent"] == 24 and model.choices["n_latent"]["value"] == 24
    given = sf.integrate({"rna": rna, "st": st}, seed=0, n_latent=8, **{**FAST, "max_iter": 2})
    assert given.params["n_latent"] == 8 and "n_latent" not in given.choices
    assert rna.obsm["X_scferry"].shape == (rna.n_obs, 8)
    assert len(model.history) >= 1 and {"recon", "kl", "ot"} <= set(model.history[0])


def test_same_seed_same_embedding(pdac_small):
    rna, st = pdac_small
    sf.integrate({"rna": rna, "st": st}, seed=3, **FAST)
    first = rna.obsm["X_scferry"].copy()
    sf.integrate({"rna": rna, "st": st}, seed=3, **FAST)
    np.testing.assert_array_equal(first, rna.obsm["X_scferry"])
    sf.integrate({"rna": rna, "st": st}, seed=4, **FAST)
    assert not np.allclose(first, rna.obsm["X_scferry"])


def test_transfer_labels_from_plan_and_knn(pdac_small):
    rna, st = pdac_small
    model = sf.integrate({"rna": rna, "st": st}, seed=0, **FAST)
    probs = sf.transfer_labels(model, source="rna", target="st", label_key="cell_type")
    classes = sorted(rna.obs["cell_type"].astype(str).unique())
    assert list(probs.columns) == classes and list(probs.index) == list(st.obs_names)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    assert (probs.to_numpy() >= 0).all()
    assert list(st.obs["scferry_label"].astype(str)) == list(probs.idxmax(axis=1))
    np.testing.assert_allclose(st.obs["scferry_label_score"], probs.max(axis=1))
    assert st.obsm["scferry_label_probs"].shape == probs.shape
    assert st.uns["scferry_label_probs_columns"] == classes
    knn = sf.transfer_labels(model, source="rna", target="st", label_key="cell_type", method="knn")
    np.testing.assert_allclose(knn.sum(axis=1), 1.0, atol=1e-5)
    # the plan only ever holds cells of the source: reverse direction works too
    back = sf.transfer_labels(model, source="st", target="rna", label_key="batch")
    assert back.shape == (rna.n_obs, 1)


def test_transfer_plan_follows_cell_types():
    """Two datasets made of the same well separated real-like groups: the plan must send each
    target cell's mass to source cells of its own group."""
    rng = np.random.default_rng(0)
    n_genes, groups = 200, 3
    profiles = rng.gamma(0.5, 2.0, size=(groups, n_genes))
    def make(n, shift):
        g = rng.integers(0, groups, n)
        X = rng.poisson(profiles[g] * (3 + shift)).astype(np.float32)
        a = ad.AnnData(sp.csr_matrix(X), obs=pd.DataFrame({"group": [f"g{i}" for i in g]},
                                                           index=[f"c{shift}_{i}" for i in range(n)]))
        a.var_names = [f"gene{i}" for i in range(n_genes)]
        return a
    src, tgt = make(300, 0), make(200, 1)
    model = sf.integrate({"src": src, "tgt": tgt}, seed=0, max_iter=300, progress=False)
    probs = sf.transfer_labels(model, "src", "tgt", "group", method="plan")
    acc = (probs.idxmax(axis=1).to_numpy() == tgt.obs["group"].to_numpy()).mean()
    assert acc > 0.9


def test_plan_transfer_needs_a_plan(pdac_small):
    rna, st = pdac_small
    model = sf.integrate({"rna": rna, "st": st}, keep_plan=False, **FAST)
    with pytest.raises(ValueError, match="kept no OT plan"):
        sf.transfer_labels(model, "rna", "st", "cell_type", method="plan")
    assert sf.transfer_labels(model, "rna", "st", "cell_type").shape[0] == st.n_obs  # auto -> kNN


def test_save_load_round_trip(pdac_small, tmp_path):
    rna, st = pdac_small
    model = sf.integrate({"rna": rna, "st": st}, seed=0, **FAST)
    before = sf.transfer_labels(model, "rna", "st", "cell_type")
    model.save(tmp_path / "m.pt")
    loaded = sf.load(tmp_path / "m.pt", adatas={"rna": rna, "st": st})
    assert loaded.method == "uniport" and loaded.dataset_names == ["rna", "st"]
    for k, v in model.module.state_dict().items():
        assert np.array_equal(v.numpy(), loaded.module.state_dict()[k].numpy())
    after = sf.transfer_labels(loaded, "rna", "st", "cell_type")
    pd.testing.assert_frame_equal(before, after)
    bare = sf.load(tmp_path / "m.pt")
    with pytest.raises(ValueError, match="not attached"):
        sf.transfer_labels(bare, "rna", "st", "cell_type")
    with pytest.raises(ValueError, match="differ"):
        sf.load(tmp_path / "m.pt", adatas={"rna": rna[::-1].copy(), "st": st})


def test_single_anndata_with_batch_key(pdac_small):
    rna, st = pdac_small
    st.obs["cell_type"] = "unlabelled spot"  # ad.concat keeps only obs columns every input has
    both = ad.concat({"rna": rna, "st": st}, label="source", index_unique="-")
    snap = snapshot(both)
    model = sf.integrate(both, batch_key="source", seed=0, **FAST)
    assert_unchanged(both, snap, allowed_obsm={"X_scferry"})
    assert both.obsm["X_scferry"].shape == (both.n_obs, 24) and np.isfinite(both.obsm["X_scferry"]).all()
    probs = sf.transfer_labels(model, "rna", "st", "cell_type")
    assert probs.shape[0] == st.n_obs
    is_st = (both.obs["source"] == "st").to_numpy()
    assert both.obs["scferry_label"][is_st].notna().all() and both.obs["scferry_label"][~is_st].isna().all()


def test_reference_and_three_datasets(pdac_small):
    rna, st = pdac_small
    a, b = rna[:150].copy(), rna[150:].copy()
    model = sf.integrate({"a": a, "b": b, "st": st}, reference="a", seed=0, **FAST)
    assert model.module.pairs == [(0, 1), (0, 2)]
    assert all(x.obsm["X_scferry"].shape[0] == x.n_obs for x in (a, b, st))


def test_preprocess_false_uses_given_values(pdac_small):
    rna, st = pdac_small
    model = sf.integrate({"rna": rna, "st": st}, preprocess=False, max_iter=20, progress=False)
    assert len(model.preprocessing.common_genes) == rna.n_vars


@pytest.mark.slow
def test_demo_cli_end_to_end(tmp_path):
    from scferry.cli import main
    assert main(["demo", "--out", str(tmp_path), "--no-progress"]) == 0  # the default budget
    for f in ("umap.png", "metrics.tsv", "transferred_labels.tsv", "model.pt"):
        assert (tmp_path / f).stat().st_size > 0
    m = pd.read_csv(tmp_path / "metrics.tsv", sep="\t", index_col=0)["value"]
    # baselines on the same cells and labels: PCA of the two datasets together (no integration)
    # and a random embedding (perfectly mixed, no cell types)
    rna, st = (ad.read_h5ad(DEMO / f"pdac_demo_{k}.h5ad") for k in ("scrna", "st"))
    both = ad.concat({"rna": rna, "spatial": st}, label="dataset", join="inner", index_unique="-")
    labels = pd.Series(list(rna.obs["cell_type"].astype(str)) + [None] * st.n_obs)
    mask = np.arange(both.n_obs) < rna.n_obs
    base = {name: sf.metrics.evaluate(Z, labels=labels, batches=both.obs["dataset"].to_numpy(),
                                      label_mask=mask, seed=0)
            for name, Z in (("pca", pca_embedding(both, n_comps=16, n_top_genes=2000)),
                            ("random", random_embedding(both.n_obs, 16)))}
    print(f"\ndemo: silhouette {m['silhouette']:.3f} (PCA {base['pca']['silhouette']:.3f}, random "
          f"{base['random']['silhouette']:.3f}); batch entropy {m['batch_entropy']:.3f} (PCA "
          f"{base['pca']['batch_entropy']:.3f}, random {base['random']['batch_entropy']:.3f})")
    # uniPort trades some cell-type separation for mixing on this pair (so does the reference
    # implementation: bench/uniport_reference/RESULTS.md)
    assert m["batch_entropy"] > base["pca"]["batch_entropy"] + 0.1, (m, base)
    assert m["silhouette"] > base["random"]["silhouette"] + 0.05, (m, base)
    assert m["silhouette"] > base["pca"]["silhouette"] - 0.05, (m, base)
    labels = pd.read_csv(tmp_path / "transferred_labels.tsv", sep="\t", index_col=0)
    assert labels.shape[0] == 428
