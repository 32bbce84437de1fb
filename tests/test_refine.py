"""sf.refine (scBIOT OT refinement) on real data: better batch mixing than PCA with the cell-type
structure kept, reproducibility, input checks that leave the AnnData untouched."""
import warnings

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scanpy as sc
import torch

import scferry as sf
from scferry import metrics
from scferry.refine import DEFAULTS
from scferry.refine._geometry import _knn, _trustworthiness

from conftest import DEMO, read_fixture
from helpers import random_embedding


def _pca(adata: ad.AnnData, n_comps: int = 20) -> ad.AnnData:
    a = adata.copy()
    sc.pp.normalize_total(a, target_sum=1e4)
    sc.pp.log1p(a)
    sc.pp.highly_variable_genes(a, n_top_genes=1000, batch_key="batch")
    a = a[:, a.var.highly_variable].copy()
    sc.pp.scale(a, max_value=10)
    sc.tl.pca(a, n_comps=n_comps, random_state=0)
    return ad.AnnData(obs=a.obs.copy(), obsm={"X_pca": a.obsm["X_pca"].astype(np.float32)})


@pytest.fixture(scope="module")
def pbmc():
    return _pca(read_fixture("symphony_pbmc.h5ad"))


def test_refine_mixes_batches_and_keeps_cell_types(pbmc):
    a = pbmc.copy()
    before = a.obsm["X_pca"].copy()
    with pytest.warns(sf.ScferryWarning, match="pre-aligned first") as caught:
        rec = sf.refine(a, basis="X_pca", batch_key="batch", seed=0, progress=False)
    assert not any("unchanged" in str(w.message) for w in caught)
    np.testing.assert_array_equal(a.obsm["X_pca"], before)  # input untouched
    X = a.obsm["X_scferry_refined"]
    assert X.shape == before.shape and X.dtype == np.float32 and np.isfinite(X).all()
    assert a.uns["X_scferry_refined"] is rec
    assert rec["prealign_strength"] > 0 and not rec["start_competed"]  # PCA: not mixed
    assert 1 <= rec["best_iter"] <= rec["n_iter"] <= 15
    assert rec["centring_clusters"] == 100  # 1,200 cells: the default's 100 clusters
    assert rec["history"]["accepted"][rec["best_iter"] - 1]
    assert rec["mix"] == pytest.approx(rec["history"]["mix"][rec["best_iter"] - 1])
    assert 0.9 < rec["trustworthiness"] <= 1.0

    batches, types = a.obs["batch"].values, a.obs["cell_type"].values
    ilisi0, ilisi1 = metrics.ilisi(before, batches), metrics.ilisi(X, batches)
    ent0, ent1 = metrics.batch_entropy(before, batches), metrics.batch_entropy(X, batches)
    sil0, sil1 = metrics.silhouette(before, types), metrics.silhouette(X, types)
    # measured: iLISI 1.28 -> 1.86 (of 3), batch entropy 0.72 -> 0.95, silhouette 0.606 -> 0.628
    assert ilisi1 > ilisi0 + 0.2, (ilisi0, ilisi1)
    assert ent1 > ent0 + 0.1, (ent0, ent1)
    assert sil1 > sil0 - 0.02, (sil0, sil1)


def test_refine_keeps_label_transfer_between_batches(pbmc):
    """Issue 16 goal 3: the chemistries mix and leave-one-chemistry-out label transfer does not
    fall below the PCA input's. The paper's field (each cell takes its nearest prototype's whole
    barycentric displacement, after the full Gaussian pre-alignment) is run in the same test: it
    pulls the cells of a type that one chemistry has more of onto another type's partners and
    transfers below its input; the defaults must beat it (bench/batch_integration/RESULTS.md).
    So must the previous defaults of the kernel and the union reference (``soft_bandwidth=0.5``,
    ``union_size="prototypes"``): a narrower kernel and a coarser reference transfer worse; and
    the same run without the final centring within clusters (``centring=0``): it transfers and
    mixes worse."""
    batches, types = pbmc.obs["batch"].values, pbmc.obs["cell_type"].values
    X0 = pbmc.obsm["X_pca"]
    t, e = {}, {}
    for name, kw in (("default", {}),
                     ("paper", dict(assign="nearest", mass_weight=False, sharpen_within=False,
                                    prealign_linear=1.0, union_size="prototypes")),
                     ("former", dict(soft_bandwidth=0.5, union_size="prototypes")),
                     ("no_centring", dict(centring=0))):
        runs = []
        for seed in (0, 1):
            a = pbmc.copy()
            sf.refine(a, seed=seed, progress=False, **kw)
            runs.append(a.obsm["X_scferry_refined"])
        t[name] = np.mean([_lobo_transfer(X, batches, types) for X in runs])
        e[name] = np.mean([metrics.batch_entropy(X, batches) for X in runs])
    t0, e0 = _lobo_transfer(X0, batches, types), metrics.batch_entropy(X0, batches)
    # measured (mean of seeds 0, 1): transfer 0.907 (PCA) -> 0.922 (defaults), 0.915 (no
    # centring), 0.908 (former kernel and reference), 0.895 (the paper's field); batch entropy
    # 0.715 -> 0.959 (no centring 0.950)
    assert t["default"] >= t0, (t0, t)
    assert t["default"] > t["paper"], t
    assert t["default"] > t["former"], t
    assert t["default"] > t["no_centring"], t
    assert e["default"] > e["no_centring"] + 0.003, e
    assert e["default"] > e0 + 0.15, (e0, e)


def _lobo_transfer(X, batches, types, k=15):
    acc = []
    for b in np.unique(batches):
        held = batches == b
        pred, _ = metrics.knn_label_transfer(X[~held], types[~held], X[held], k=k)
        acc.append(metrics.transfer_accuracy(types[held], pred))
    return float(np.mean(acc))


def test_refine_is_reproducible(pbmc):
    a, b, c = pbmc.copy(), pbmc.copy(), pbmc.copy()
    ra = sf.refine(a, max_iter=3, seed=1, progress=False)
    rb = sf.refine(b, max_iter=3, seed=1, progress=False)
    sf.refine(c, max_iter=3, seed=2, progress=False)
    np.testing.assert_array_equal(a.obsm["X_scferry_refined"], b.obsm["X_scferry_refined"])
    assert ra["J"] == rb["J"] and ra["best_iter"] == rb["best_iter"]
    assert not np.array_equal(a.obsm["X_scferry_refined"], c.obsm["X_scferry_refined"])


def test_an_integrated_input_is_kept_unless_the_paper_selection_is_asked(pbmc):
    a = pbmc.copy()
    sf.refine(a, seed=0, progress=False)  # pre-aligned (PCA is not mixed), then refined
    start = a.obsm["X_scferry_refined"].copy()
    with pytest.warns(sf.ScferryWarning, match="kept and only centred within 100 clusters") as w:
        rec = sf.refine(a, basis="X_scferry_refined", key_added="X_again", seed=0, progress=False)
    assert not any("pre-aligned" in str(m.message) for m in w)
    # measured: the refined embedding is mixed (no pre-alignment) and no iterate beats it
    assert rec["prealign_strength"] == 0.0 and rec["start_competed"]
    assert rec["best_iter"] == 0 and rec["J"] == pytest.approx(DEFAULTS["w_overlap"])
    assert (rec["history"]["J"] <= rec["J"] + 1e-3).all()
    assert rec["centring_clusters"] == 100  # the start won and was centred within clusters
    moved = np.abs(a.obsm["X_again"] - start).mean()
    assert 0 < moved < 0.1 * np.abs(start - start.mean(0)).mean(), moved  # a small move
    with pytest.warns(sf.ScferryWarning, match="kept and returned unchanged"):
        kept = sf.refine(a, basis="X_scferry_refined", key_added="X_kept", seed=0,
                         progress=False, centring=0)
    assert kept["best_iter"] == 0 and kept["centring_clusters"] == 0
    np.testing.assert_array_equal(a.obsm["X_kept"], start)
    with warnings.catch_warnings():
        warnings.simplefilter("error", sf.ScferryWarning)  # nothing chosen for the user here
        paper = sf.refine(a, basis="X_scferry_refined", key_added="X_paper", seed=0,
                          progress=False, keep_input=False)
    assert not paper["start_competed"] and paper["best_iter"] >= 1
    assert not np.array_equal(a.obsm["X_paper"], start)


def test_a_kept_integrated_input_is_centred_within_clusters(pbmc):
    """An integrated input that wins the selection (here sf.refine's own output without the
    centring) still gets the last centring within clusters: leave-one-chemistry-out transfer
    and batch mixing rise above the input's (kang's PCA in bench/batch_integration/RESULTS.md:
    batch entropy 0.866 -> 0.917 at the same transfer). Returning the input as it was fails."""
    batches, types = pbmc.obs["batch"].values, pbmc.obs["cell_type"].values
    t0, t1, e0, e1 = [], [], [], []
    for seed in (0, 1):
        a = pbmc.copy()
        sf.refine(a, seed=seed, progress=False, centring=0, key_added="X_in")
        with pytest.warns(sf.ScferryWarning, match="kept and only centred"):
            rec = sf.refine(a, basis="X_in", seed=seed, progress=False, key_added="X_out")
        assert rec["best_iter"] == 0
        X0, X1 = a.obsm["X_in"], a.obsm["X_out"]
        t0.append(_lobo_transfer(X0, batches, types))
        t1.append(_lobo_transfer(X1, batches, types))
        e0.append(metrics.batch_entropy(X0, batches))
        e1.append(metrics.batch_entropy(X1, batches))
    # measured (seeds 0, 1): transfer 0.913 / 0.917 -> 0.921 / 0.924, batch entropy 0.952 /
    # 0.947 -> 0.961 / 0.956
    assert np.mean(t1) > np.mean(t0), (t0, t1)
    assert np.mean(e1) > np.mean(e0) + 0.005, (e0, e1)


def test_an_integrated_input_with_unequal_batches_is_not_prealigned(pbmc):
    a = pbmc.copy()
    sf.refine(a, seed=0, progress=False)
    # the mixed embedding with one batch at 78 % of the cells (290 of 372): perfect mixing gives
    # an other-batch share of 0.37, under scbiot's fixed bar of 0.45 (measured: 0.33)
    batches = a.obs["batch"].astype(str).to_numpy()
    first = batches == np.unique(batches)[0]
    rng = np.random.default_rng(0)
    keep = first | (rng.random(len(batches)) < 0.1)
    b = ad.AnnData(obs=a.obs[keep].copy(), obsm={"X_mixed": a.obsm["X_scferry_refined"][keep]})
    rec = sf.refine(b, basis="X_mixed", seed=0, progress=False)
    assert 0.5 <= rec["input_mixing"] <= 1.2, rec["input_mixing"]
    assert rec["prealign_strength"] == 0.0 and rec["start_competed"]
    # the unintegrated PCA of the same cells is still pre-aligned
    c = ad.AnnData(obs=a.obs[keep].copy(), obsm={"X_pca": a.obsm["X_pca"][keep]})
    rec = sf.refine(c, seed=0, progress=False)
    assert rec["input_mixing"] < 0.5 and rec["prealign_strength"] > 0
    assert not rec["start_competed"]


def test_a_centring_that_adds_no_mixing_is_skipped(pbmc, monkeypatch):
    """The last centring within clusters is applied only when it raises the batch mixing. On a
    DAVAE embedding of MERFISH cells it lowered the batch entropy from 0.81 to 0.66
    (bench/batch_integration/RESULTS.md, session 37). Here the centring is replaced by a move
    that pulls each batch away from the others: it must be skipped (the selected iterate is
    returned, as with centring=0) and announced; the real centring on the same cells is applied."""
    from scferry.refine import _loop

    a = pbmc.copy()
    rec = sf.refine(a, seed=0, progress=False)  # the real centring: adds mixing, applied
    assert rec["centring_clusters"] == 100 and rec["centring_gain"] > 0
    sf.refine(a, seed=0, progress=False, centring=0, key_added="X_uncentred")

    def apart(X, codes, n_batches, p, seed):
        return X + 5.0 * X.std() * torch.nn.functional.one_hot(codes.long(), X.shape[1]), None, 7

    monkeypatch.setattr(_loop, "_centre_within_clusters", apart)
    with pytest.warns(sf.ScferryWarning, match="last centring within clusters was skipped"):
        rec = sf.refine(a, seed=0, progress=False, key_added="X_judged")
    assert rec["centring_clusters"] == 0 and rec["centring_gain"] < 0
    np.testing.assert_array_equal(a.obsm["X_judged"], a.obsm["X_uncentred"])


def test_prealign_shift_ot_moves_a_batch_of_one_cell_type_onto_that_type(pbmc):
    """A chemistry holding only B cells beside one holding every type (a sorted population). The
    default pre-alignment (scbiot 1.2's Gaussian map) moves the B cells to the other
    chemistry's mean, among its T cells: their kNN transfer from that chemistry falls from 1.00
    to 0.26 (a documented limitation; scBIOT 1.2.1 does the same). ``prealign_shift="ot"``
    estimates the shift by unbalanced OT and moves them onto the other chemistry's B cells
    (bench/batch_integration/RESULTS.md, session 37)."""
    batches = pbmc.obs["batch"].astype(str).to_numpy()
    types = pbmc.obs["cell_type"].astype(str).to_numpy()
    names = np.unique(batches)
    keep = (batches == names[0]) | ((batches == names[1]) & (types == "B"))
    a = ad.AnnData(obs=pbmc.obs[keep].copy(), obsm={"X_pca": pbmc.obsm["X_pca"][keep]})
    query = batches[keep] == names[1]

    def b_cells_transfer(X):
        pred, _ = metrics.knn_label_transfer(X[~query], types[keep][~query], X[query], k=15)
        return metrics.transfer_accuracy(types[keep][query], pred)

    gauss = sf.refine(a, seed=0, progress=False, key_added="X_gaussian")
    ot = sf.refine(a, seed=0, progress=False, prealign_shift="ot", key_added="X_ot")
    assert gauss["prealign_strength"] > 0 and ot["prealign_strength"] > 0  # both pre-aligned
    assert gauss["params"]["prealign_shift"] == "gaussian"
    assert ot["params"]["prealign_shift"] == "ot"
    X, Xg = a.obsm["X_ot"], a.obsm["X_gaussian"]
    # measured: PCA 1.000, unbalanced-OT shift 0.935, Gaussian map 0.258
    assert b_cells_transfer(a.obsm["X_pca"]) == 1.0
    assert b_cells_transfer(X) >= 0.9
    assert b_cells_transfer(Xg) < 0.5
    # and the batches mix more than in the PCA
    assert metrics.batch_entropy(X, batches[keep]) > metrics.batch_entropy(a.obsm["X_pca"], batches[keep])


def test_paper_only_mode_and_largest_reference(pbmc):
    a = pbmc.copy()
    rec = sf.refine(a, max_iter=4, prealign="none", reference="largest", key_added="X_r",
                    progress=False)
    assert rec["prealign_strength"] == 0.0
    assert rec["reference"] == a.obs["batch"].value_counts().index[0]
    assert rec["mix"] > rec["mix_start"]  # the OT steps alone raise neighbour batch entropy
    assert set(a.obsm.keys()) == {"X_pca", "X_r"}


def _frozen(a: ad.AnnData):
    return (sorted(a.obsm.keys()), sorted(a.uns.keys()), a.obs.copy(),
            {k: np.array(v, copy=True) for k, v in a.obsm.items()})


@pytest.mark.parametrize("change, kwargs, error, words", [
    (None, dict(basis="X_umap"), KeyError, ["X_umap", "X_pca", "sc.pp.pca"]),
    (None, dict(batch_key="sample"), KeyError, ["sample", "cell_type"]),
    ("one_batch", {}, ValueError, ["only one batch", "at least two"]),
    ("nan", {}, ValueError, ["non-finite", "X_pca"]),
    ("tiny_batch", {}, ValueError, ["fewer cells than", "prototypes"]),
    ("few_cells", {}, ValueError, ["fewer than refine needs", "k_pseudo"]),
    ("missing_batch", {}, ValueError, ["missing values"]),
    (None, dict(key_added="X_pca"), ValueError, ["never overwrites"]),
    (None, dict(reg_eps=0.1), ValueError, ["unknown refine parameter", "reg"]),
    (None, dict(reg=-1.0), ValueError, ["reg must be"]),
    (None, dict(reference="10x_9p"), ValueError, ["reference", "10x_3p_v1"]),
    (None, dict(prealign="yes"), ValueError, ["prealign"]),
    (None, dict(keep_input="yes"), ValueError, ["keep_input", "'auto'"]),
    (None, dict(assign="mean"), ValueError, ["assign", "'soft'"]),
    (None, dict(mass_weight="yes"), ValueError, ["mass_weight", "True or False"]),
    (None, dict(sharpen_within=1), ValueError, ["sharpen_within", "True or False"]),
    (None, dict(prealign_linear=1.5), ValueError, ["prealign_linear", "[0, 1]"]),
    (None, dict(prealign_shift="mean"), ValueError, ["prealign_shift", "'gaussian'", "'ot'"]),
    (None, dict(soft_bandwidth=0.0), ValueError, ["soft_bandwidth must be > 0"]),
    (None, dict(union_size="all"), ValueError, ["union_size", "'cells'"]),
    (None, dict(max_iter=0), ValueError, ["max_iter"]),
    (None, dict(device="tpu"), ValueError, ["device"]),
])
def test_bad_inputs_raise_before_anything_is_written(pbmc, change, kwargs, error, words):
    a = pbmc.copy()
    if change == "one_batch":
        a.obs["batch"] = "b1"
    elif change == "nan":
        a.obsm["X_pca"][5, 2] = np.nan
    elif change == "tiny_batch":
        a.obs["batch"] = a.obs["batch"].astype(str)
        a.obs.iloc[:3, a.obs.columns.get_loc("batch")] = "tiny"
    elif change == "few_cells":
        a = a[:20].copy()
        a.obs["batch"] = np.repeat(["x", "y"], 10)
    elif change == "missing_batch":
        a.obs["batch"] = a.obs["batch"].astype(object)
        a.obs.iloc[0, a.obs.columns.get_loc("batch")] = None
    keys, uns, obs, obsm = _frozen(a)
    with pytest.raises(error) as err:
        sf.refine(a, **{"basis": "X_pca", "batch_key": "batch", "progress": False, **kwargs})
    for w in words:
        assert w in str(err.value), (w, str(err.value))
    assert sorted(a.obsm.keys()) == keys and sorted(a.uns.keys()) == uns
    pd.testing.assert_frame_equal(a.obs, obs)
    for k, v in obsm.items():
        np.testing.assert_array_equal(a.obsm[k], v)


def test_not_an_anndata():
    with pytest.raises(TypeError, match="one AnnData"):
        sf.refine({"a": 1})


def test_refine_after_integrate_on_shipped_demo():
    rna = ad.read_h5ad(DEMO / "pdac_demo_scrna.h5ad")
    st = ad.read_h5ad(DEMO / "pdac_demo_st.h5ad")
    rna_labels = rna.obs["cell_type"].astype(str).to_numpy()
    both = ad.concat({"rna": rna, "spatial": st}, label="modality_batch", join="inner")
    both.obs_names_make_unique()
    # DAVAE as it was when this test was set (no adversary ceiling, the paper's KL weight 1):
    # from the capped default's 300-step latent refine barely mixes (0.028 -> 0.030; RESULTS.md,
    # sf.refine second pass), which this test of refine on an integrated input does not cover;
    # with the cap off and KL weight 0.5 this seed's short run collapses (scRNA silhouette 0.285)
    sf.integrate(both, method="davae", batch_key="modality_batch", max_iter=300, seed=0,
                 domain_grad_cap=None, kl_weight=1.0, progress=False)
    rec = sf.refine(both, basis="X_scferry", batch_key="modality_batch", max_iter=5, seed=0,
                    progress=False)
    X0, X = both.obsm["X_scferry"], both.obsm["X_scferry_refined"]
    assert X.shape == X0.shape
    b = both.obs["modality_batch"].values
    # baselines on the same cells: the integrated input, and a random embedding (mixed, no types).
    # Mixing goes up and the scRNA cells' types stay as apart as in the input: a collapsed or
    # scrambled embedding, which also mixes, fails the second check.
    rna = b == "rna"
    types = rna_labels  # the scRNA cells come first in `both`
    rand = random_embedding(*X.shape)
    sil0, sil1, sil_rand = (metrics.silhouette(Z[rna], types) for Z in (X0, X, rand))
    mix0, mix1 = metrics.batch_entropy(X0, b), metrics.batch_entropy(X, b)
    print(f"\nPDAC demo, refine after DAVAE: batch entropy {mix0:.3f} -> {mix1:.3f}; scRNA "
          f"cell-type silhouette {sil0:.3f} -> {sil1:.3f} (random {sil_rand:.3f})")
    # measured: batch entropy 0.026 -> 0.108 (0.030 -> 0.098 before sf.refine's second pass;
    # iLISI, perplexity 30, stays at 1.01-1.02 of 2)
    assert mix1 > 2 * mix0, rec
    assert sil1 > sil0 - 0.03 and sil1 > sil_rand + 0.05, (sil0, sil1, sil_rand)


def test_trustworthiness_matches_scikit_learn():
    from sklearn.manifold import trustworthiness

    rng = np.random.default_rng(0)
    X0 = rng.normal(size=(300, 8)).astype(np.float32)
    X = (X0 + rng.normal(scale=0.7, size=X0.shape)).astype(np.float32)
    ours = _trustworthiness(torch.from_numpy(X0), torch.from_numpy(X), 10, seed=0)
    assert ours == pytest.approx(trustworthiness(X0, X, n_neighbors=10), abs=1e-6)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU")
def test_gpu_knn_matches_cpu():
    rng = np.random.default_rng(0)
    X = torch.from_numpy(rng.normal(size=(2000, 16)).astype(np.float32))
    d_cpu, i_cpu = _knn(X, 15, seed=0)
    d_gpu, i_gpu = _knn(X.cuda(), 15, seed=0)
    np.testing.assert_allclose(d_gpu.cpu().numpy(), d_cpu.numpy(), rtol=1e-3, atol=1e-3)
    assert (i_gpu.cpu().numpy() == i_cpu.numpy()).mean() > 0.99
