"""Helpers shared by the test modules: leave-the-input-untouched checks, splitting by batch,
and the baselines quality tests compare against (computed in the same test on the same cells)."""
from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import scanpy as sc
import scipy.sparse as sp

from scferry import metrics


def _dense(X):
    return X.toarray() if sp.issparse(X) else np.array(X)


def snapshot(a: ad.AnnData) -> dict:
    """Everything a function must leave as it found it (values of X, obs, var, obsm; keys of
    uns and layers; the shape)."""
    return dict(X=_dense(a.X), obs=a.obs.copy(), var=a.var.copy(), shape=a.shape,
                obsm={k: np.array(v) for k, v in a.obsm.items()},
                uns=set(a.uns.keys()), layers=set(a.layers.keys()))


def assert_unchanged(a: ad.AnnData, snap: dict, allowed_obsm=()) -> None:
    """`a` is as `snapshot` saw it, except for the obsm keys in `allowed_obsm` (written by the
    function under test; with "X_scferry", also uns["scferry"], the record of its model)."""
    assert a.shape == snap["shape"]
    np.testing.assert_array_equal(_dense(a.X), snap["X"])
    pd.testing.assert_frame_equal(a.obs, snap["obs"])
    pd.testing.assert_frame_equal(a.var, snap["var"])
    assert set(a.obsm.keys()) - set(allowed_obsm) == set(snap["obsm"]) - set(allowed_obsm)
    for k, v in snap["obsm"].items():
        if k not in allowed_obsm:
            np.testing.assert_array_equal(np.asarray(a.obsm[k]), v)
    # uns["scferry"] records which model wrote obsm["X_scferry"]: it comes with the embedding
    allowed_uns = {"scferry"} if "X_scferry" in allowed_obsm else set()
    assert set(a.uns.keys()) - allowed_uns == set(snap["uns"]) - allowed_uns
    assert set(a.layers.keys()) == snap["layers"]


def split(adata: ad.AnnData, key: str = "batch") -> dict:
    """One AnnData per level of obs[key] (fresh copies), in category order."""
    return {b: adata[(adata.obs[key] == b).to_numpy()].copy() for b in adata.obs[key].cat.categories}


# ------------------------------------------------------------------ baselines
def pca_embedding(adata: ad.AnnData, n_comps: int = 20, n_top_genes: int | None = None,
                  batch_key: str | None = None) -> np.ndarray:
    """The plain baseline: log-normalise, (HVGs,) scale, PCA, on a copy."""
    a = adata.copy()
    sc.pp.normalize_total(a, target_sum=1e4)
    sc.pp.log1p(a)
    if n_top_genes is not None:
        sc.pp.highly_variable_genes(a, n_top_genes=n_top_genes, batch_key=batch_key)
        a = a[:, a.var.highly_variable].copy()
    sc.pp.scale(a, max_value=10)
    sc.tl.pca(a, n_comps=n_comps, random_state=0)
    return a.obsm["X_pca"].astype(np.float32)


def random_embedding(n: int, d: int, seed: int = 0) -> np.ndarray:
    """The no-information baseline for alignment and mixing (FOSCTTM 0.5, batches fully mixed)."""
    return np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)


def paired_cca(train_a, train_b, new_a=None, new_b=None, n_pcs: int = 30, n_comps: int = 10):
    """The paired baseline for cross-modal alignment: each modality log-normalised (counts per
    10,000, log1p), scaled and reduced by PCA, then CCA fitted on the training pairs (rows are the
    same cells). Returns the canonical scores (a, b) of the training cells, and of `new_a` /
    `new_b` (count matrices of held-apart cells, transformed by the fitted maps) when given."""
    from sklearn.cross_decomposition import CCA
    from sklearn.decomposition import PCA
    from scferry.pp import normalize_log1p

    def fit(X):
        L = _dense(normalize_log1p(sp.csr_matrix(X, dtype=np.float32)))
        mu, sd = L.mean(0), L.std(0) + 1e-6
        pca = PCA(n_components=min(n_pcs, L.shape[1] - 1), random_state=0).fit((L - mu) / sd)
        return lambda Y: pca.transform((_dense(normalize_log1p(sp.csr_matrix(Y, dtype=np.float32))) - mu) / sd)

    fa, fb = fit(train_a), fit(train_b)
    cca = CCA(n_components=n_comps, max_iter=2000).fit(fa(train_a), fb(train_b))
    out = cca.transform(fa(train_a), fb(train_b))
    if new_a is not None:
        out = out + cca.transform(fa(new_a), fb(new_b))
    return tuple(np.asarray(z, np.float32) for z in out)


def majority_accuracy(train_labels, test_labels) -> float:
    """Accuracy of always answering the training set's most frequent label."""
    top = pd.Series(np.asarray(train_labels)).value_counts().index[0]
    return float(np.mean(np.asarray(test_labels) == top))


def knn_accuracy(Z_train, y_train, Z_test, y_test, k: int = 15) -> float:
    pred, _ = metrics.knn_label_transfer(Z_train, pd.Series(np.asarray(y_train)), Z_test, k=k)
    return float(np.mean(np.asarray(pred) == np.asarray(y_test)))


def leave_one_batch_out(X, obs, label_key: str = "cell_type", batch_key: str = "batch", k: int = 15) -> float:
    """Mean over batches of the kNN label-transfer accuracy from the other batches."""
    acc = []
    labels = obs[label_key].astype(str)
    for b in obs[batch_key].cat.categories:
        held = (obs[batch_key] == b).to_numpy()
        acc.append(knn_accuracy(X[~held], labels[~held], X[held], labels[held], k=k))
    return float(np.mean(acc))


def integration_scores(embeddings: dict, obs, label_key: str = "cell_type",
                       batch_key: str = "batch") -> pd.DataFrame:
    """Mixing (batch entropy, scaled iLISI) and conservation (label silhouette, leave-one-batch-out
    kNN transfer) of each embedding (rows: names of `embeddings`), on the same cells."""
    b, t = obs[batch_key], obs[label_key]
    rows = {name: {"batch_entropy": metrics.batch_entropy(X, b),
                   "ilisi": metrics.ilisi(X, b, scaled=True),
                   "silhouette": metrics.silhouette(X, t),
                   "transfer": leave_one_batch_out(X, obs, label_key, batch_key)}
            for name, X in embeddings.items()}
    table = pd.DataFrame(rows).T
    print("\n" + table.round(3).to_string())
    return table


def check_integration(X, obs, pca, *, entropy_gain=0.05, ilisi_factor=1.5, silhouette_tol=0.03,
                      transfer_tol=0.1, silhouette_gain=0.1, label_key="cell_type",
                      batch_key="batch") -> pd.DataFrame:
    """Judge a batch-integrated embedding against baselines on the same cells: PCA (no correction)
    and a random embedding (perfect mixing, no cell types). Batches mix better than in PCA; cell
    types stay about as apart as in PCA (within the tolerances given) and far more than in the
    random embedding. Returns the table of scores (rows: method, pca, random)."""
    s = integration_scores({"method": X, "pca": pca, "random": random_embedding(*X.shape)}, obs,
                           label_key, batch_key)
    ours, base, rand = s.loc["method"], s.loc["pca"], s.loc["random"]
    assert ours.batch_entropy > base.batch_entropy + entropy_gain, s
    assert ours.ilisi > ilisi_factor * base.ilisi, s
    assert ours.silhouette > base.silhouette - silhouette_tol, s
    assert ours.silhouette > rand.silhouette + silhouette_gain, s
    assert ours.transfer > base.transfer - transfer_tol and ours.transfer > rand.transfer + 0.3, s
    return s


def unpair(a, b, seed=0):
    """Shuffle and rename the second modality's cells; return the permutation to undo it."""
    perm = np.random.default_rng(seed).permutation(b.n_obs)
    b = b[perm].copy()
    b.obs_names = [f"cell{i}" for i in range(b.n_obs)]
    return a.copy(), b, perm


def snare_held_apart_foscttm(**integrate_kw) -> tuple[float, float]:
    """Issue 17's held-apart protocol on all 10,309 SNARE-seq nuclei (shared data), RNA vs ATAC
    gene activity: ``sf.integrate(..., **integrate_kw)`` trained on 80 % of each cell type's nuclei
    unpaired (the second modality's rows shuffled and renamed), the held-apart 20 % (the first
    split of bench/multiome's protocol) embedded one modality at a time through the encoders
    (``sf.project``), the pairing used only to score. Returns (the held-apart nuclei's FOSCTTM,
    that of the Seurat CCA of the shared genes fitted on all nuclei: transductive, so favoured)."""
    import scferry as sf
    from conftest import shared_file
    from scferry.methods.scmodal_cca import seurat_cca
    from scferry.pp import normalize_log1p
    rna = ad.read_h5ad(shared_file("snare_cortex_rna.h5ad"))
    act = ad.read_h5ad(shared_file("snare_cortex_atac_gene.h5ad"))
    assert (rna.obs_names == act.obs_names).all()
    test = np.zeros(rna.n_obs, bool)
    rng = np.random.default_rng(1)
    types = rna.obs["cell_type"].astype(str).to_numpy()
    for _, idx in pd.Series(np.arange(rna.n_obs)).groupby(types):
        idx = rng.permutation(idx.to_numpy())
        test[idx[:max(int(round(0.2 * len(idx))), 1)] if len(idx) >= 2 else []] = True
    train_rna, train_act, _ = unpair(rna[~test], act[~test])
    model = sf.integrate({"rna": train_rna, "atac": train_act}, seed=0, progress=False,
                         **integrate_kw)
    score = metrics.foscttm(sf.project(model, rna[test].copy(), dataset="rna"),
                            sf.project(model, act[test].copy(), dataset="atac"))
    genes = [g for g in rna.var_names if g in act.var_names]
    U, V = seurat_cca(normalize_log1p(rna[:, genes].X), normalize_log1p(act[:, genes].X),
                      n_components=20, seed=0)
    return score, metrics.foscttm(U[test], V[test])
