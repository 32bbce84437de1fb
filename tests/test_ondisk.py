"""Datasets given as paths to on-disk AnnData (.h5ad / .zarr): the same results as in memory,
never read whole, clear errors, and outputs where the docs say (docs/inputs_outputs.md)."""
from __future__ import annotations

import warnings
from pathlib import Path

import anndata as ad
import h5py
import numpy as np
import pytest
import scipy.sparse as sp

import scferry as sf
from scferry import ondisk, pp
from scferry.data import Dataset

from helpers import split

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="module")
def symphony():
    return split(ad.read_h5ad(DATA / "symphony_pbmc.h5ad"))


def _write(parts: dict, where: Path, zarr_for=()) -> dict:
    paths = {}
    for name, a in parts.items():
        p = where / f"{name}.{'zarr' if name in zarr_for else 'h5ad'}"
        a.write_zarr(p) if name in zarr_for else a.write_h5ad(p)
        paths[name] = str(p)
    return paths


class ReadSpy:
    """Records the number of rows of every read from any store."""

    def __init__(self, monkeypatch):
        self.sizes: list[int] = []
        orig_range, orig_rows = ondisk.Store.read_range, ondisk.Store.read_rows
        spy = self

        def read_range(self, start, stop):
            spy.sizes.append(stop - start)
            return orig_range(self, start, stop)

        def read_rows(self, rows):
            rows = np.asarray(rows)
            if not (len(rows) and rows[-1] - rows[0] + 1 == len(rows)):  # else counted by read_range
                spy.sizes.append(len(rows))
            return orig_rows(self, rows)
        monkeypatch.setattr(ondisk.Store, "read_range", read_range)
        monkeypatch.setattr(ondisk.Store, "read_rows", read_rows)


@pytest.mark.parametrize("method", ["davae", "uniport"])
def test_same_embedding_as_in_memory_and_never_read_whole(symphony, tmp_path, monkeypatch, method):
    kw = dict(n_common_genes=400) if method == "davae" else dict(n_common_genes=400, n_specific_genes=200)
    mem = {k: v.copy() for k, v in symphony.items()}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m1 = sf.integrate(mem, method=method, max_iter=40, seed=3, progress=False, **kw)
    paths = _write(symphony, tmp_path, zarr_for=[list(symphony)[1]])
    monkeypatch.setattr(ondisk, "CHUNK", 100)
    spy = ReadSpy(monkeypatch)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m2 = sf.integrate(paths, method=method, max_iter=40, seed=3, progress=False, **kw)
    # the same preprocessing (genes and scale factors) from chunked statistics
    assert m1.preprocessing.common_genes == m2.preprocessing.common_genes
    for k in paths:
        assert m1.preprocessing.specific_genes[k] == m2.preprocessing.specific_genes[k]
        np.testing.assert_array_equal(m1.preprocessing.common_scale[k], m2.preprocessing.common_scale[k])
    # never more than a chunk (statistics, embedding) or a minibatch share at once
    n_max = max(a.n_obs for a in symphony.values())
    assert spy.sizes and max(spy.sizes) <= 100 < n_max
    for k, p in paths.items():
        z_mem, z_disk = mem[k].obsm["X_scferry"], m2.adatas[k].obsm["X_scferry"]
        if method == "davae":
            # same model inputs row by row and the same minibatches: bit-identical
            np.testing.assert_array_equal(z_mem, z_disk)
        else:
            # uniPort starts its decoders at the inputs' column means, which the in-memory path
            # sums in float32 (scipy) and the chunked path in float64: last-digit differences
            # in the initial biases, carried through 40 steps
            np.testing.assert_allclose(z_disk, z_mem, atol=5e-3)
            assert np.abs(z_disk - z_mem).max() < 0.01 * np.abs(z_mem).max()
        # documented output: obsm/X_scferry and uns/scferry in the store itself
        stored = ad.read_zarr(p) if p.endswith(".zarr") else ad.read_h5ad(p)
        np.testing.assert_array_equal(stored.obsm["X_scferry"], z_disk)
        assert stored.uns["scferry"]["model_id"] == m2.id
        np.testing.assert_array_equal(stored.X.toarray(), symphony[k].X.toarray())  # X untouched


def test_hvg_from_chunked_statistics_match_scanpy():
    for name, n_top in (("symphony_pbmc", 300), ("snare_cortex_rna", 500), ("pbmc10k_cite_small_rna", 800)):
        a = ad.read_h5ad(DATA / f"{name}.h5ad")
        d = Dataset(name, a)
        stats = ondisk.gene_stats(d, True, pp.TARGET_SUM, chunk=97)
        X = pp.normalize_log1p(d.counts())
        want = pp.highly_variable(X, a.var_names, n_top)
        got = ondisk.highly_variable([stats], [np.arange(a.n_vars)], a.var_names, n_top)
        assert list(got) == list(want), name
        np.testing.assert_array_equal(stats.max_abs, np.asarray(abs(X).max(axis=0).todense()).ravel())
    # several datasets: genes ranked by the number of datasets in which they are variable
    parts = split(ad.read_h5ad(DATA / "symphony_pbmc.h5ad"))
    ds = [Dataset(k, v) for k, v in parts.items()]
    logged = [pp.normalize_log1p(d.counts()) for d in ds]
    batches = np.repeat([d.name for d in ds], [d.n_obs for d in ds])
    genes = ds[0].var_names
    want = pp.highly_variable(sp.vstack(logged).tocsr(), genes, 250, batches)
    stats = [ondisk.gene_stats(d, True, pp.TARGET_SUM, chunk=131) for d in ds]
    got = ondisk.highly_variable(stats, [np.arange(len(genes))] * len(ds), genes, 250, [d.name for d in ds])
    assert list(got) == list(want)


def test_one_store_with_batch_key(symphony, tmp_path):
    full = ad.concat(list(symphony.values()))
    full.obs_names_make_unique()
    p = tmp_path / "all.h5ad"
    full.write_h5ad(p)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m1 = sf.integrate(full, method="davae", batch_key="batch", max_iter=20, seed=0, progress=False,
                          n_common_genes=300)
        m2 = sf.integrate(str(p), method="davae", batch_key="batch", max_iter=20, seed=0, progress=False,
                          n_common_genes=300)
    stored = ad.read_h5ad(p)
    np.testing.assert_array_equal(stored.obsm["X_scferry"], full.obsm["X_scferry"])
    assert m2.dataset_names == m1.dataset_names


def test_project_from_path_streams_into_the_store(symphony, tmp_path, monkeypatch):
    names = list(symphony)
    train = {k: symphony[k].copy() for k in names[:2]}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = sf.integrate(train, method="davae", max_iter=20, seed=0, progress=False, n_common_genes=300)
        new = symphony[names[2]].copy()
        z_mem = sf.project(model, new, names[0])
    p = tmp_path / "new.h5ad"
    symphony[names[2]].write_h5ad(p)
    monkeypatch.setattr(ondisk, "CHUNK", 64)
    spy = ReadSpy(monkeypatch)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        z_disk = sf.project(model, str(p), names[0])
    np.testing.assert_array_equal(z_disk, z_mem)
    assert max(spy.sizes) <= 64
    stored = ad.read_h5ad(p)
    np.testing.assert_array_equal(stored.obsm["X_scferry"], z_mem)
    assert stored.uns["scferry"]["model_id"] == model.id


def test_transfer_and_deconvolve_write_into_the_store(tmp_path):
    ref = ad.read_h5ad(DATA / "merfish_hypothalamus_ref.h5ad")
    ref = ref[np.asarray(ref.X.sum(axis=1)).ravel() > 0].copy()  # 4 reference cells have no counts
    st = ad.read_h5ad(DATA / "merfish_hypothalamus_st.h5ad")
    mem = {"ref": ref.copy(), "st": st.copy()}
    paths = _write({"ref": ref, "st": st}, tmp_path)
    kw = dict(method="uniport", max_iter=60, seed=0, progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m1, m2 = sf.integrate(mem, **kw), sf.integrate(paths, **kw)
        p1 = sf.transfer_labels(m1, "ref", "st", "cell_type")
        p2 = sf.transfer_labels(m2, "ref", "st", "cell_type")
        d1 = sf.deconvolve(m1, "ref", "st", "cell_type", progress=False)
        d2 = sf.deconvolve(m2, "ref", "st", "cell_type", progress=False)
    assert list(p2.index) == list(st.obs_names) and list(p2.columns) == list(p1.columns)
    assert (p1.to_numpy().argmax(1) == p2.to_numpy().argmax(1)).mean() > 0.95
    # counts readout: no model involved; chunked signature sums vs one sparse product
    np.testing.assert_allclose(d2.to_numpy(), d1.to_numpy(), atol=1e-6)
    stored = ad.read_h5ad(paths["st"])
    assert list(stored.obs["scferry_label"].astype(str)) == list(m2.adatas["st"].obs["scferry_label"].astype(str))
    np.testing.assert_array_equal(stored.obsm["scferry_label_probs"], p2.to_numpy(np.float32))
    np.testing.assert_array_equal(stored.obsm["scferry_proportions"], d2.to_numpy(np.float32))
    assert list(stored.uns["scferry_proportions_columns"]) == list(d2.columns)
    assert "scferry_label" not in ad.read_h5ad(paths["ref"]).obs  # only the target is written
    # cell states within types (n_states): the reference's cells on the fitted genes read in chunks
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        s1 = sf.deconvolve(m1, "ref", "st", "cell_type", n_states=2, progress=False)
        s2 = sf.deconvolve(m2, "ref", "st", "cell_type", n_states=2, progress=False)
    np.testing.assert_allclose(s2.to_numpy(), s1.to_numpy(), atol=1e-6)
    stored = ad.read_h5ad(paths["st"])
    assert list(stored.uns["scferry_state_proportions_columns"]) == list(m1.adatas["st"].uns["scferry_state_proportions_columns"])
    assert stored.obsm["scferry_state_proportions"].shape[1] > s2.shape[1]
    # a later call without states leaves no stale states in the store
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sf.deconvolve(m2, "ref", "st", "cell_type", progress=False)
    stored = ad.read_h5ad(paths["st"])
    assert "scferry_state_proportions" not in stored.obsm
    assert "scferry_state_proportions_columns" not in stored.uns
    assert "scferry_proportions" in stored.obsm


def test_bad_paths_and_formats(symphony, tmp_path):
    a, b = list(symphony.values())[:2]
    good = tmp_path / "b.h5ad"
    b.write_h5ad(good)
    with pytest.raises(FileNotFoundError, match="no such file"):
        sf.integrate({"a": a, "b": str(tmp_path / "missing.h5ad")}, method="davae")
    csv = tmp_path / "a.csv"
    csv.write_text("x,y\n1,2\n")
    with pytest.raises(ValueError, match=r"neither an \.h5ad file nor a \.zarr store"):
        sf.integrate({"a": str(csv), "b": str(good)}, method="davae")
    fake = tmp_path / "fake.h5ad"
    fake.write_text("not hdf5")
    with pytest.raises(ValueError, match="cannot open"):
        sf.integrate({"a": str(fake), "b": str(good)}, method="davae")
    csc = tmp_path / "csc.h5ad"
    c = a.copy()
    c.X = sp.csc_matrix(c.X)
    c.write_h5ad(csc)
    with pytest.raises(ValueError, match="CSC"):
        sf.integrate({"a": str(csc), "b": str(good)}, method="davae")
    with pytest.raises(KeyError, match="no layer 'counts'"):
        sf.integrate({"a": str(good), "b": str(good)}, method="davae", layer="counts")
    with pytest.raises(ValueError, match="needs its datasets in memory"):
        sf.integrate({"a": a, "b": str(good)}, method="minnet")
    neg = tmp_path / "neg.h5ad"
    n = a.copy()
    n.X = n.X.copy()
    n.X.data[-1] = -1
    n.write_h5ad(neg)
    with pytest.raises(ValueError, match="negative values"):
        sf.integrate({"a": str(neg), "b": str(good)}, method="davae", max_iter=2)
    with h5py.File(good, "r") as f:  # a file held open for reading elsewhere cannot be written
        with pytest.raises(ValueError, match="close other handles"):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                sf.integrate({"a": a, "b": str(good)}, method="davae", max_iter=2, progress=False)
        assert "X_scferry" not in f["obsm"]


def _lobo_transfer(Z: list, labels: list) -> float:
    """Leave-one-dataset-out kNN (k=15) label transfer between the datasets' coordinates."""
    acc = []
    for i in range(len(Z)):
        ref = np.vstack([z for j, z in enumerate(Z) if j != i])
        lab = np.concatenate([l for j, l in enumerate(labels) if j != i])
        pred, _ = sf.metrics.knn_label_transfer(ref, lab, Z[i], k=15)
        acc.append(sf.metrics.transfer_accuracy(labels[i], pred))
    return float(np.mean(acc))


def test_joint_pca_in_chunks_from_disk_and_fitted_on_a_subset(symphony, tmp_path, monkeypatch):
    """uniPort's PCA guidance (scferry.pp.joint_pca): the chunked passes give the PCA of the whole
    matrix; stores on disk give the in-memory coordinates and are read a chunk at a time; fitting
    the components on a random subset of the cells (beyond fit_cells) keeps each cell's
    neighbourhood of its own type in the other datasets."""
    from scferry.methods.uniport import shared_features
    mem = [Dataset(n, a, None, None) for n, a in symphony.items()]
    genes = shared_features(mem)
    labels = [a.obs["cell_type"].astype(str).to_numpy() for a in symphony.values()]
    full = pp.joint_pca(mem, genes, seed=0)
    assert [z.shape for z in full] == [(a.n_obs, 30) for a in symphony.values()]
    # the PCA of the dense z-scored matrix (scanpy's recipe), up to the solver's rounding
    X = pp.normalize_log1p(sp.vstack([d.counts()[:, d.var_names.get_indexer(genes)] for d in mem]).tocsr())
    direct = pp.pca(pp.zscore(X[:, pp.variable_columns(X, 2000)]), 30, 0)
    D = lambda Z: np.linalg.norm(Z[:300, None] - Z[None, :300], axis=-1)  # noqa: E731
    np.testing.assert_allclose(D(np.vstack(full)), D(direct), atol=1e-3)
    np.testing.assert_allclose(D(np.vstack(pp.joint_pca(mem, genes, seed=0, chunk=97))), D(direct), atol=1e-3)
    # scale=False (uniPort's guidance): the genes centred, not scaled or clipped
    top = X[:, pp.variable_columns(X, 2000)].toarray()
    unscaled = pp.joint_pca(mem, genes, n_components=16, scale=False, seed=0, chunk=97)
    assert [z.shape for z in unscaled] == [(a.n_obs, 16) for a in symphony.values()]
    np.testing.assert_allclose(D(np.vstack(unscaled)), D(pp.pca(top, 16, 0)), atol=1e-3)

    paths = _write(symphony, tmp_path, zarr_for=[list(symphony)[1]])
    disk = [ondisk.open_dataset(n, p) for n, p in paths.items()]
    spy = ReadSpy(monkeypatch)
    on_disk = pp.joint_pca(disk, genes, seed=0, chunk=100)
    assert spy.sizes and max(spy.sizes) <= 100
    np.testing.assert_allclose(D(np.vstack(on_disk)), D(direct), atol=1e-3)

    whole = _lobo_transfer(full, labels)
    subset = _lobo_transfer(pp.joint_pca(mem, genes, seed=0, fit_cells=600), labels)
    shuffled = _lobo_transfer(full, [np.random.default_rng(0).permutation(l) for l in labels])
    assert whole > 0.8 and subset > whole - 0.05 and shuffled < 0.5, (whole, subset, shuffled)
