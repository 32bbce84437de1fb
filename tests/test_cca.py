"""scferry.methods.scmodal_cca: Seurat CCA without the cells1 x cells2 matrix, and the scMODAL CCA-extension links."""
import anndata as ad
import numpy as np
import pytest
import scipy.sparse as sp

from scferry import metrics
from scferry.methods.scmodal_cca import cca_feature_links, seurat_cca
from scferry.pp import normalize_log1p
from conftest import read_fixture


def _dense_reference(X, Y, k):
    def std(A):
        A = A.toarray() if sp.issparse(A) else A
        return (A - A.mean(0)) / A.std(0, ddof=1)
    u, s, vt = np.linalg.svd(std(X) @ std(Y).T)  # the n x m matrix seurat_cca never forms
    u, v = u[:, :k], vt[:k].T
    f = np.where(u[0] < 0, -1, 1)
    u, v = u * f, v * f
    return (u / np.linalg.norm(u, axis=1, keepdims=True), v / np.linalg.norm(v, axis=1, keepdims=True))


def test_seurat_cca_matches_dense_svd_on_sparse_input():
    X = sp.random(70, 40, density=0.3, random_state=1, format="csr") * 5
    Y = sp.random(50, 40, density=0.3, random_state=2, format="csr") * 5
    U, V = seurat_cca(X, Y, n_components=6, seed=0)
    u, v = _dense_reference(X, Y, 6)
    assert U.shape == (70, 6) and V.shape == (50, 6) and U.dtype == np.float32
    np.testing.assert_allclose(U, u, atol=1e-4)
    np.testing.assert_allclose(V, v, atol=1e-4)
    np.testing.assert_allclose(np.linalg.norm(U, axis=1), 1, atol=1e-5)
    U2, V2 = seurat_cca(X.toarray(), Y, n_components=6, seed=0)  # dense and sparse agree
    np.testing.assert_allclose(U2, U, atol=1e-5)
    assert X.nnz == sp.csr_matrix(X).nnz  # inputs untouched


def test_seurat_cca_is_reproducible_and_validates():
    rng = np.random.default_rng(0)
    X, Y = rng.poisson(1.0, (40, 15)).astype(float), rng.poisson(1.0, (30, 15)).astype(float)
    a, b = seurat_cca(X, Y, 4, seed=3), seurat_cca(X, Y, 4, seed=3)
    np.testing.assert_array_equal(a[0], b[0])
    with pytest.raises(ValueError, match="same features"):
        seurat_cca(X, Y[:, :10])
    with pytest.raises(ValueError, match="below the smaller dataset"):
        seurat_cca(X, Y, n_components=30)
    bad = X.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="finite"):
        seurat_cca(bad, Y, 4)


def test_cca_feature_links_finds_the_planted_pair():
    rng = np.random.default_rng(0)
    g1, g2 = rng.integers(0, 4, 300), rng.integers(0, 4, 250)
    X1, X2 = rng.normal(0, 0.1, (300, 12)), rng.normal(0, 0.1, (250, 9))
    X1[:, 3] += 2.0 * g1  # feature 3 of dataset 1 and feature 5 of dataset 2 track the groups
    X2[:, 5] += 3.0 * g2
    pairs = cca_feature_links(X1, X2, g1, g2, n_components=5)
    assert pairs[0] == (3, 5)
    with pytest.raises(ValueError, match="at least 2 cell groups"):
        cca_feature_links(X1, X2, np.zeros(300), np.ones(250))


def test_seurat_cca_aligns_real_paired_modalities():
    """SNARE-seq cortex, RNA vs ATAC gene activity of the same nuclei (pairing unused by CCA)."""
    rna = read_fixture("snare_cortex_rna.h5ad")
    act = read_fixture("snare_cortex_atac_gene.h5ad")
    rows = np.sort(np.random.default_rng(0).choice(rna.n_obs, 800, replace=False))
    X, Y = normalize_log1p(rna.X[rows]), normalize_log1p(act.X[rows])
    U, V = seurat_cca(X, Y, n_components=20, seed=0)
    assert metrics.foscttm(U, V) < 0.35
