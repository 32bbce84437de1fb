"""MinNet (paired multiome Siamese network) through the shared spine, on real SNARE-seq cortex
nuclei (RNA + ATAC of the same nuclei) and the paired CITE-seq fixture."""
import anndata as ad
import numpy as np
import pytest
import scipy.sparse as sp
from scipy.sparse.csgraph import dijkstra

import scferry as sf
from scferry import metrics
from scferry.methods.minnet import feature_stats, knn_path_graph, landmark_distances
from scferry.pp import normalize_log1p
from conftest import read_fixture
from helpers import (assert_unchanged, knn_accuracy, majority_accuracy, paired_cca, random_embedding,
                     snapshot)

# quick settings for the checks that are not about quality
SMALL = dict(label_key="cell_type", progress=False, n_specific_genes=300, n_hidden=(64,))


@pytest.fixture(scope="module")
def snare_full():
    return read_fixture("snare_cortex_rna.h5ad"), read_fixture("snare_cortex_atac_gene.h5ad")


@pytest.fixture()
def snare(snare_full):
    """1,500 real nuclei (fresh copies), split 80% training / 20% held apart."""
    rna, atac = snare_full
    rng = np.random.default_rng(0)
    keep = np.sort(rng.choice(rna.n_obs, 1500, replace=False))
    rna, atac = rna[keep].copy(), atac[keep].copy()
    ok = (np.asarray(rna.X.sum(1)).ravel() > 0) & (np.asarray(atac.X.sum(1)).ravel() > 0)
    rna, atac = rna[ok].copy(), atac[ok].copy()
    test = np.zeros(rna.n_obs, bool)
    test[rng.choice(rna.n_obs, rna.n_obs // 5, replace=False)] = True
    return rna[~test].copy(), atac[~test].copy(), rna[test].copy(), atac[test].copy()


def test_held_apart_nuclei_are_matched_and_labelled(snare):
    rna, atac, rna_new, atac_new = snare
    snaps = snapshot(rna), snapshot(atac)
    model = sf.integrate({"rna": rna, "atac": atac}, method="minnet", seed=0, max_iter=250,
                         label_key="cell_type", progress=False)
    for a, s in zip((rna, atac), snaps):
        assert_unchanged(a, s, allowed_obsm={"X_scferry"})
        assert a.obsm["X_scferry"].shape == (a.n_obs, 32) and a.obsm["X_scferry"].dtype == np.float32
    assert {"classification", "contrastive", "positive_d2", "margin"} <= set(model.history[-1])

    # held-apart nuclei, each modality through its own encoder, as unpaired new data
    zr = sf.project(model, rna_new, dataset="rna")
    za = sf.project(model, atac_new, dataset="atac")
    f = metrics.foscttm(zr, za)
    # baselines on the same nuclei (the paper-style split, 80% train / 20% held apart): CCA of the
    # two modalities' PCAs fitted on the training pairs, held-apart nuclei through the fitted maps;
    # a random embedding; always answering the most frequent type
    cr, ca, cr_new, ca_new = paired_cca(rna.X, atac.X, rna_new.X, atac_new.X)
    f_cca = metrics.foscttm(cr_new, ca_new)
    f_rand = metrics.foscttm(random_embedding(len(zr), 32, 1), random_embedding(len(zr), 32, 2))
    labels = rna.obs["cell_type"].astype(str)
    truth = atac_new.obs["cell_type"].astype(str).to_numpy()
    acc = knn_accuracy(rna.obsm["X_scferry"], labels, za, truth, k=30)
    acc_cca = knn_accuracy(cr, labels, ca_new, truth, k=30)
    majority = majority_accuracy(labels, truth)
    print(f"\nheld-apart nuclei: FOSCTTM MinNet {f:.3f}, CCA {f_cca:.3f}, random {f_rand:.3f}; RNA->ATAC "
          f"kNN transfer MinNet {acc:.3f}, CCA {acc_cca:.3f}, majority type {majority:.3f}")
    assert f < f_cca and f < f_rand - 0.2, (f, f_cca, f_rand)
    assert acc > majority + 0.08 and acc > acc_cca, (acc, acc_cca, majority)

    # transfer_labels RNA -> ATAC on the training nuclei (kNN in the joint space)
    probs = sf.transfer_labels(model, source="rna", target="atac", label_key="cell_type")
    assert np.allclose(probs.sum(1), 1)
    assert np.mean(atac.obs["scferry_label"].astype(str) == atac.obs["cell_type"].astype(str)) > majority


def test_paired_checks_before_training(snare):
    rna, atac, _, _ = snare
    snaps = snapshot(rna), snapshot(atac)
    order = np.random.default_rng(1).permutation(atac.n_obs)
    with pytest.raises(ValueError, match="same order"):
        sf.integrate({"rna": rna, "atac": atac[order].copy()}, method="minnet", **SMALL)
    renamed = atac.copy()
    renamed.obs_names = [f"x{i}" for i in range(renamed.n_obs)]
    with pytest.raises(ValueError, match="cell names differ"):
        sf.integrate({"rna": rna, "atac": renamed}, method="minnet", **SMALL)
    with pytest.raises(ValueError, match="same cells"):
        sf.integrate({"rna": rna, "atac": atac[:-5].copy()}, method="minnet", **SMALL)
    with pytest.raises(ValueError, match="exactly two"):
        sf.integrate({"rna": rna, "atac": atac, "rna2": rna.copy()}, method="minnet", **SMALL)
    for bad in (dict(negatives="random"), dict(n_landmarks=0), dict(margin=-1.0),
                dict(graph_dataset="protein"), dict(n_hidden=256), dict(objective="clip"),
                dict(temperature=0.0), dict(temperature=True)):
        with pytest.raises(ValueError):
            sf.integrate({"rna": rna, "atac": atac}, method="minnet", **{**SMALL, **bad})
    for a, s in zip((rna, atac), snaps):  # nothing written
        assert_unchanged(a, s)


@pytest.mark.parametrize("kw", [dict(), dict(objective="infonce", label_key="cell_type")],
                         ids=["pairing-alone", "infonce-labels"])
def test_self_supervised_and_infonce_align_held_apart_nuclei(snare, kw):
    """Without labels (the pairing alone: InfoNCE by default) and with the InfoNCE objective and
    labels, held-apart nuclei embedded per modality align better than CCA fitted on the same
    training pairs, and RNA imputed from their ATAC (kNN) beats the same imputation in CCA space."""
    rna, atac, rna_new, atac_new = snare
    if "label_key" not in kw:
        with pytest.warns(sf.ScferryWarning, match="pairing alone"):
            model = sf.integrate({"rna": rna, "atac": atac}, method="minnet", seed=0, max_iter=250,
                                 progress=False, **kw)
        assert model.choices["labels"]["value"] is None
        assert model.choices["objective"]["value"] == model.params["objective"] == "infonce"
    else:
        model = sf.integrate({"rna": rna, "atac": atac}, method="minnet", seed=0, max_iter=250,
                             progress=False, **kw)
    f = metrics.foscttm(sf.project(model, rna_new, dataset="rna"), sf.project(model, atac_new, dataset="atac"))
    _, _, cr_new, ca_new = paired_cca(rna.X, atac.X, rna_new.X, atac_new.X)
    f_cca = metrics.foscttm(cr_new, ca_new)
    print(f"\nheld-apart nuclei {kw}: FOSCTTM MinNet {f:.3f}, CCA {f_cca:.3f}")
    assert f < f_cca, (f, f_cca)
    # RNA imputed from the held-apart ATAC (no decoder: kNN over the training RNA in the joint
    # space) against the same kNN imputation in the CCA space: per-gene Pearson r, genes seen in
    # at least 10% of the held-apart nuclei
    with pytest.warns(sf.ScferryWarning, match="nearest"):
        imp = sf.impute(model, atac_new, target="rna", k=15)
    assert imp.uns["scferry_impute"]["method"] == "knn" and imp.n_obs == atac_new.n_obs
    genes = list(imp.var_names)
    truth = normalize_log1p(sp.csr_matrix(rna_new.X, dtype=np.float32))[:, rna_new.var_names.get_indexer(genes)]
    truth = truth.toarray()
    train = normalize_log1p(sp.csr_matrix(rna.X, dtype=np.float32))[:, rna.var_names.get_indexer(genes)].toarray()
    cr, _, _, ca_new = paired_cca(rna.X, atac.X, rna_new.X, atac_new.X)
    nn = np.argsort(((ca_new[:, None, :] - cr[None, :, :]) ** 2).sum(-1), axis=1)[:, :15]
    base = train[nn].mean(1)
    keep = (truth > 0).mean(0) >= 0.1
    r = lambda P: np.nanmean([np.corrcoef(P[:, j], truth[:, j])[0, 1] for j in np.flatnonzero(keep)])  # noqa: E731
    r_m, r_cca = r(imp.X), r(base)
    print(f"RNA from held-apart ATAC, mean per-gene r ({keep.sum()} genes): MinNet kNN {r_m:.3f}, CCA kNN {r_cca:.3f}")
    assert r_m > r_cca, (r_m, r_cca)
    if kw.get("objective") == "infonce":  # unit-norm embedding, no graph built
        assert np.allclose(np.linalg.norm(rna.obsm["X_scferry"], axis=1), 1, atol=1e-4)
        assert model.module.landmark_dist is None


def test_same_seed_same_result_and_save_load(snare, tmp_path):
    rna, atac, rna_new, _ = snare
    rna, atac = rna[:400].copy(), atac[:400].copy()
    fast = dict(SMALL, max_iter=40)
    sf.integrate({"rna": rna, "atac": atac}, method="minnet", seed=3, **fast)
    first = rna.obsm["X_scferry"].copy()
    model = sf.integrate({"rna": rna, "atac": atac}, method="minnet", seed=3, **fast)
    np.testing.assert_array_equal(rna.obsm["X_scferry"], first)
    sf.integrate({"rna": rna, "atac": atac}, method="minnet", seed=4, **fast)
    assert not np.allclose(rna.obsm["X_scferry"], first)

    z = sf.project(model, rna_new, dataset="rna")
    model.save(tmp_path / "minnet.pt")
    loaded = sf.load(tmp_path / "minnet.pt", adatas={"rna": rna, "atac": atac})
    assert loaded.method == "minnet" and loaded.params["n_latent"] == 32
    np.testing.assert_allclose(sf.project(loaded, rna_new.copy(), dataset="rna"), z, rtol=1e-5, atol=1e-5)


def test_landmark_bound_is_an_upper_bound_and_exact_with_all_landmarks(snare):
    rna = snare[0][:400]
    from scferry.pp import normalize_log1p
    X = normalize_log1p(sp.csr_matrix(rna.X, dtype=np.float32))
    mean, std = feature_stats(X)
    G = knn_path_graph(X, mean, std, 15, 30)
    assert G.shape == (400, 400) and G.nnz < 400 * 40  # sparse
    assert G.data.min() >= 0.01 - 1e-9 and G.data.max() <= 1.01 + 1e-9  # 1.01 - connectivity
    exact = dijkstra(G, directed=False)
    allmarks = landmark_distances(G, np.arange(400))
    np.testing.assert_allclose(allmarks, exact, rtol=1e-5)
    L = landmark_distances(G, np.arange(0, 400, 20))
    rng = np.random.default_rng(0)
    a, b = rng.integers(0, 400, 500), rng.integers(0, 400, 500)
    bound = (L[:, a] + L[:, b]).min(0)
    assert np.all(bound >= exact[a, b] - 1e-5)
    assert np.corrcoef(bound, exact[a, b])[0, 1] > 0.8


def test_cite_seq_within_modality_negatives():
    rna = read_fixture("pbmc10k_cite_small_rna.h5ad")
    adt = read_fixture("pbmc10k_cite_small_adt.h5ad")
    model = sf.integrate({"rna": rna, "adt": adt}, method="minnet", seed=0, max_iter=150,
                         negatives="within", **SMALL)
    assert model.params["negatives"] == "within"
    f = metrics.foscttm(rna.obsm["X_scferry"], adt.obsm["X_scferry"])
    cr, ca = paired_cca(rna.X, adt.X, n_pcs=13)  # baseline: CCA of the two PCAs, same cells
    f_cca = metrics.foscttm(cr, ca)
    print(f"\nCITE-seq 200 cells: FOSCTTM MinNet {f:.3f}, CCA {f_cca:.3f}")
    assert f < 0.2 and f < f_cca + 0.05, (f, f_cca)
