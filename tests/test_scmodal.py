"""scMODAL (GAN + MNN anchors on linked features) through the shared spine, on real CITE-seq and
SNARE-seq data. The pairs are known but the method is told nothing about them: the second
modality's cells are shuffled and renamed before integrating."""
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch

import scferry as sf
from scferry import metrics
from scferry.methods.scmodal import mnn_mask
from conftest import read_fixture
from helpers import (assert_unchanged, knn_accuracy, random_embedding, snapshot,
                     snare_held_apart_foscttm, unpair)
from scferry.methods.scmodal_cca import seurat_cca
from scferry.pp import normalize_log1p

# RNA gene for each of the 14 TotalSeq-B proteins of pbmc10k_cite_small
GENE_PROTEIN = [("CD3E", "CD3"), ("CD4", "CD4"), ("CD8A", "CD8a"), ("CD14", "CD14"), ("FUT4", "CD15"),
                ("FCGR3A", "CD16"), ("NCAM1", "CD56"), ("CD19", "CD19"), ("IL2RA", "CD25"),
                ("PTPRC", "CD45RA"), ("PTPRC", "CD45RO"), ("PDCD1", "PD-1"), ("TIGIT", "TIGIT"),
                ("IL7R", "CD127")]
FAST = dict(max_iter=150, batch_size=400, progress=False, n_specific_genes=1000)


@pytest.fixture(scope="module")
def cite_full():
    return read_fixture("pbmc10k_cite_small_rna.h5ad"), read_fixture("pbmc10k_cite_small_adt.h5ad")


@pytest.fixture()
def cite(cite_full):
    return unpair(*cite_full)


def linked_features(rna, adt, perm):
    """The gene-protein table's features with no training: log1p(counts per 10,000) of each
    linked gene and of its protein, scaled per feature, rows back in the RNA's cell order."""
    r = normalize_log1p(sp.csr_matrix(rna.X)).toarray()[:, rna.var_names.get_indexer([g for g, _ in GENE_PROTEIN])]
    p = np.empty((adt.n_obs, adt.n_vars), np.float32)
    p[perm] = normalize_log1p(sp.csr_matrix(adt.X)).toarray()
    p = p[:, adt.var_names.get_indexer([q for _, q in GENE_PROTEIN])]
    z = lambda M: (M - M.mean(0)) / (M.std(0) + 1e-6)  # noqa: E731
    return z(r), z(p)


def paired_embeddings(a, b, perm):
    zb = np.empty_like(b.obsm["X_scferry"])
    zb[perm] = b.obsm["X_scferry"]
    return a.obsm["X_scferry"], zb


@pytest.fixture(scope="module")
def cite_run(cite_full):
    """scMODAL on the unpaired CITE-seq cells with the gene-protein table, and the baselines on
    the same cells: the linked features alone (log1p counts per 10,000 of the 14 genes and of
    their proteins, each scaled; the same table, no training), a random embedding (FOSCTTM 0.5)
    and always answering the most frequent type."""
    rna, adt, perm = unpair(*cite_full)
    table = pd.DataFrame(GENE_PROTEIN, columns=["rna", "adt"])
    model = sf.integrate({"rna": rna, "adt": adt}, method="scmodal", linked=table, seed=0, **FAST)
    za, zb = paired_embeddings(rna, adt, perm)
    lab = rna.obs["cell_type"].astype(str).to_numpy()
    ok = lab != "unknown"
    lin_r, lin_a = linked_features(rna, adt, perm)
    r = dict(model=model, za=za, f=metrics.foscttm(za, zb), f_lin=metrics.foscttm(lin_r, lin_a),
             acc=knn_accuracy(za[ok], lab[ok], zb[ok], lab[ok], k=10),
             acc_lin=knn_accuracy(lin_r[ok], lab[ok], lin_a[ok], lab[ok], k=10),
             chance=pd.Series(lab[ok]).value_counts(normalize=True).max())
    print(f"\nCITE-seq 200 cells: FOSCTTM scMODAL {r['f']:.3f}, linked features {r['f_lin']:.3f} "
          f"(random 0.5); RNA->ADT kNN transfer scMODAL {r['acc']:.3f}, linked features "
          f"{r['acc_lin']:.3f}, majority {r['chance']:.3f}")
    return r


def test_scmodal_aligns_cite_seq_with_a_gene_protein_table(cite_run):
    r = cite_run
    assert r["za"].shape == (200, 20) and np.isfinite(r["za"]).all()
    assert r["f"] < 0.3, r  # random: 0.5
    assert r["acc"] > r["chance"] + 0.2, r
    model = r["model"]
    assert model.params["linked"]["pairs"][0] == ["CD3E", "CD3"]  # plain values, saved with the model
    assert min(h["mnn_pairs"] for h in model.history) > 0


def test_scmodal_cite_seq_aligns_better_than_the_linked_features_alone(cite_run):
    r = cite_run
    assert r["f"] < r["f_lin"] - 0.02, r


@pytest.mark.xfail(strict=True, reason="known weakness: on 200 CITE-seq cells scMODAL transfers labels "
                   "slightly worse than its own linked features used directly (it aligns better)")
def test_scmodal_cite_seq_transfers_better_than_the_linked_features_alone(cite_run):
    r = cite_run
    assert r["acc"] > r["acc_lin"], r


def test_scmodal_reproducible_save_load_and_impute(cite, tmp_path):
    rna, adt, perm = cite
    kw = dict(method="scmodal", linked=GENE_PROTEIN, seed=1, **{**FAST, "max_iter": 30})
    m1 = sf.integrate({"rna": rna, "adt": adt}, **kw)
    first = rna.obsm["X_scferry"].copy()
    sf.integrate({"rna": rna, "adt": adt}, **kw)
    np.testing.assert_array_equal(rna.obsm["X_scferry"], first)

    m1.save(tmp_path / "m.pt")
    m2 = sf.load(tmp_path / "m.pt", adatas={"rna": rna, "adt": adt})
    np.testing.assert_allclose(sf.project(m2, rna.copy(), dataset="rna"), first, atol=1e-5)

    snap = snapshot(rna)
    imp = sf.impute(m2, rna, target="adt")
    assert list(imp.var_names) == list(adt.var_names) and imp.n_obs == rna.n_obs
    assert np.isfinite(imp.X).all() and (imp.X >= 0).all()
    assert_unchanged(rna, snap)


def test_scmodal_imputes_proteins_that_follow_the_measured_ones(cite):
    rna, adt, perm = cite
    model = sf.integrate({"rna": rna, "adt": adt}, method="scmodal", linked=GENE_PROTEIN, seed=0, **FAST)
    imp = sf.impute(model, rna, target="adt").X
    measured = sf.pp.normalize_log1p(adt.X)[np.argsort(perm)].toarray()  # back to RNA order
    r = [np.corrcoef(imp[:, j], measured[:, j])[0, 1] for j in range(adt.n_vars)]
    assert np.nanmedian(r) > 0.3


def test_bad_linked_tables_fail_before_training_and_change_nothing(cite):
    rna, adt, _ = cite
    snaps = snapshot(rna), snapshot(adt)
    with pytest.raises(ValueError, match=r"absent from dataset 'adt'.*CD999"):
        sf.integrate({"rna": rna, "adt": adt}, method="scmodal", linked=[("CD4", "CD999")], progress=False)
    with pytest.raises(ValueError, match=r"absent from dataset 'rna'.*NOTAGENE"):
        sf.integrate({"rna": rna, "adt": adt}, method="scmodal",
                     linked=pd.DataFrame({"rna": ["NOTAGENE"], "adt": ["CD4"]}), progress=False)
    with pytest.raises(ValueError, match="2 columns"):
        sf.integrate({"rna": rna, "adt": adt}, method="scmodal", linked=pd.DataFrame({"a": ["x"]}))
    with pytest.raises(ValueError, match="'shared', 'cca'"):
        sf.integrate({"rna": rna, "adt": adt}, method="scmodal", linked="genes")
    with pytest.raises(ValueError, match="exactly two datasets"):
        sf.integrate({"rna": rna, "adt": adt, "x": adt.copy()}, method="scmodal", progress=False)
    renamed = adt.copy()
    renamed.var_names = [f"adt_{v}" for v in adt.var_names]
    with pytest.raises(ValueError, match="share none"):
        sf.integrate({"rna": rna, "adt": renamed}, method="scmodal", linked="shared", progress=False)
    with pytest.raises(ValueError, match="label_key"):
        sf.integrate({"rna": rna, "adt": renamed}, method="scmodal", linked="cca", progress=False)
    assert_unchanged(rna, snaps[0])
    assert_unchanged(adt, snaps[1])


def test_dataframe_columns_named_after_the_datasets_match_by_name(cite):
    rna, adt, _ = cite
    table = pd.DataFrame(GENE_PROTEIN, columns=["rna", "adt"])[["adt", "rna"]]  # other order
    model = sf.integrate({"rna": rna, "adt": adt}, method="scmodal", linked=table, seed=0,
                         **{**FAST, "max_iter": 5})
    assert model.params["linked"]["columns"] == ["adt", "rna"]


def test_mnn_mask_is_mutual():
    a = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    b = torch.tensor([[0.9, 0.1], [0.1, 0.9]])
    m = mnn_mask(a, b, k=1)
    assert m.tolist() == [[True, False], [False, True], [False, False]]


@pytest.fixture(scope="module")
def snare_run():
    """SNARE-seq cortex, RNA vs ATAC gene activity (same gene names), 600 nuclei, the user's plain
    call (linked features: the shared gene names; anchors in their denoised CCA space);
    baselines on the same nuclei, told nothing about the pairs either: Seurat CCA of the two
    log-normalised matrices over their shared genes, and a random embedding."""
    rna = read_fixture("snare_cortex_rna.h5ad")
    act = read_fixture("snare_cortex_atac_gene.h5ad")
    rows = np.sort(np.random.default_rng(0).choice(rna.n_obs, 600, replace=False))
    a, b, perm = unpair(rna[rows].copy(), act[rows].copy())
    sf.integrate({"rna": a, "atac": b}, method="scmodal", seed=0,
                 **{**FAST, "max_iter": 150, "batch_size": 600})
    za, zb = paired_embeddings(a, b, perm)
    U, V = seurat_cca(normalize_log1p(rna.X[rows]), normalize_log1p(act.X[rows]), n_components=20, seed=0)
    r = dict(f=metrics.foscttm(za, zb), f_cca=metrics.foscttm(U, V),
             f_rand=metrics.foscttm(random_embedding(600, 20, 1), random_embedding(600, 20, 2)))
    print(f"\nSNARE 600 nuclei FOSCTTM: scMODAL {r['f']:.3f}, Seurat CCA {r['f_cca']:.3f}, random {r['f_rand']:.3f}")
    return r


def test_scmodal_snare_rna_vs_gene_activity_shared_names(snare_run):
    assert snare_run["f"] < snare_run["f_rand"] - 0.2, snare_run


def test_scmodal_snare_beats_seurat_cca(snare_run):
    """Quality: better than the Seurat CCA of the same linked features computed here (before the
    denoised anchor space, the embedding-space geometry and the latent batch norm: a strict xfail,
    FOSCTTM near random)."""
    assert snare_run["f"] < snare_run["f_cca"] - 0.01, snare_run


def test_scmodal_anchor_options_are_validated(cite):
    rna, adt, _ = cite
    with pytest.raises(ValueError, match="anchor_space must be one of"):
        sf.integrate({"rna": rna, "adt": adt}, method="scmodal", linked=GENE_PROTEIN, anchor_space="pca")
    with pytest.raises(ValueError, match="geometry must be"):
        sf.integrate({"rna": rna, "adt": adt}, method="scmodal", linked=GENE_PROTEIN, geometry="raw")
    with pytest.raises(ValueError, match="n_smooth"):
        sf.integrate({"rna": rna, "adt": adt}, method="scmodal", linked=GENE_PROTEIN, n_smooth=0)


def test_scmodal_anchor_space_follows_the_fit_seed(cite, monkeypatch):
    """The anchor space (its Seurat CCA, own-modality embeddings, neighbours and the refinement's
    matching) is built with the fit's ``seed``, not a fixed 0: another seed gives another space,
    the same seed the same one, and the seed is recorded in the model's params."""
    from scferry.methods import scmodal as scm
    rna, adt, _ = cite
    seen = []
    build = scm._anchor_space

    def spy(params, own, L1, L2):
        views = build(params, own, L1, L2)
        seen.append((params.get("seed"), views[0]["linked"].copy(), views[1]["linked"].copy()))
        return views

    monkeypatch.setattr(scm, "_anchor_space", spy)
    for seed in (0, 1, 1):
        model = sf.integrate({"rna": rna.copy(), "adt": adt.copy()}, method="scmodal", linked=GENE_PROTEIN,
                             seed=seed, **{**FAST, "max_iter": 2})
        assert model.params["seed"] == seed
    assert [s for s, _, _ in seen] == [0, 1, 1]
    assert not (np.allclose(seen[0][1], seen[1][1], atol=1e-3) and np.allclose(seen[0][2], seen[1][2], atol=1e-3))
    np.testing.assert_array_equal(seen[1][1], seen[2][1])
    np.testing.assert_array_equal(seen[1][2], seen[2][2])


@pytest.mark.shared_data
def test_scmodal_held_apart_snare_nuclei_reach_the_issue_goal():
    """Issue 17's scMODAL goal on all SNARE-seq nuclei (shared data), RNA vs ATAC gene activity,
    the user's plain call, held-apart protocol (``helpers.snare_held_apart_foscttm``): FOSCTTM
    <= 0.15 and below the Seurat CCA of the shared genes fitted on all nuclei."""
    score, cca = snare_held_apart_foscttm(method="scmodal")
    print(f"\nSNARE held-apart FOSCTTM: scMODAL {score:.3f}, Seurat CCA {cca:.3f}")
    assert score <= 0.15, (score, cca)
    assert score < cca - 0.03, (score, cca)
