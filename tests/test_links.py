"""kNN smoothing, mini-bulks and peak-gene links (scferry.tl.smooth, scferry.tl.peak_gene)."""
import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from scipy.stats import spearmanr

import scferry as sf
from conftest import ROOT, shared_file


def _cells(n=60, genes=8, seed=0):
    rng = np.random.default_rng(seed)
    X = sp.csr_matrix(rng.poisson(0.7, (n, genes)).astype(np.float32))
    group = np.arange(n) * 3 // n
    a = ad.AnnData(X, obs=pd.DataFrame({"cell_type": np.array(["A", "B", "C"])[group]},
                                       index=[f"c{i}" for i in range(n)]),
                   var=pd.DataFrame(index=[f"g{j}" for j in range(genes)]))
    # three separated groups in a 4-d "joint space"
    a.obsm["X_scferry"] = rng.normal(size=(n, 4)) + np.eye(3, 4)[group] * 20
    return a


def _peaks(rna, n_peaks=30, seed=1):
    rng = np.random.default_rng(seed)
    X = sp.csr_matrix(rng.poisson(0.5, (rna.n_obs, n_peaks)).astype(np.float32))
    chrom = np.where(np.arange(n_peaks) < 20, "chr1", "chr2")
    start = np.concatenate([np.arange(20) * 10_000 + 1_000, np.arange(10) * 10_000 + 500])
    var = pd.DataFrame({"chrom": chrom, "start": start, "end": start + 300},
                       index=[f"p{i}" for i in range(n_peaks)])
    atac = ad.AnnData(X, obs=rna.obs.copy(), var=var)
    atac.obsm["X_scferry"] = rna.obsm["X_scferry"] + 0.1
    return atac


TSS = pd.DataFrame({"chrom": ["chr1", "chr1", "chr2"], "tss": [50_000, 120_000, 30_000],
                    "strand": ["+", "-", "+"]}, index=["g0", "g1", "g2"])


# ---------------------------------------------------------------------------- knn_smooth
def test_knn_smooth_matches_brute_force():
    a = _cells()
    out = sf.tl.knn_smooth(a, k=4, quantile=0.9)
    assert sp.issparse(out) and a.layers["scferry_smoothed"] is out
    Z = a.obsm["X_scferry"]
    D = np.linalg.norm(Z[:, None] - Z[None], axis=2)
    np.fill_diagonal(D, np.inf)
    nn = np.argsort(D, axis=1)[:, :4]
    d = np.take_along_axis(D, nn, 1)
    cut = np.quantile(d, 0.9)
    X = a.X.toarray()
    want = X + np.stack([X[nn[i][d[i] <= cut]].sum(0) for i in range(a.n_obs)])
    np.testing.assert_allclose(out.toarray(), want)
    # quantile=1 keeps every neighbour: each row is the sum of k + 1 cells
    full = sf.tl.knn_smooth(a, k=4, quantile=1.0, key_added="s1")
    np.testing.assert_allclose(full.toarray(), X + np.stack([X[nn[i]].sum(0) for i in range(a.n_obs)]))


def test_knn_smooth_bad_input_changes_nothing():
    a = _cells()
    before = set(a.layers.keys())
    with pytest.raises(KeyError, match="obsm\\['X_other'\\]"):
        sf.tl.knn_smooth(a, basis="X_other")
    with pytest.raises(ValueError, match="k = 60"):
        sf.tl.knn_smooth(a, k=60)
    with pytest.raises(ValueError, match="quantile"):
        sf.tl.knn_smooth(a, quantile=0)
    b = a.copy()
    b.obsm["X_scferry"][0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        sf.tl.knn_smooth(b)
    assert set(a.layers.keys()) == before and "scferry_smoothed" not in b.layers


# ---------------------------------------------------------------------------- mini_bulk
def test_mini_bulk_sums_within_types_and_is_reproducible():
    rna = _cells()
    atac = _peaks(rna)
    res = sf.tl.mini_bulk({"rna": rna, "atac": atac}, n_bulks=9, label_key="cell_type", seed=0)
    assert set(res) == {"rna", "atac"}
    rb, ab = res["rna"], res["atac"]
    assert list(rb.obs_names) == list(ab.obs_names) and rb.n_obs <= 9
    assert sp.issparse(rb.X) and list(ab.var.columns) == ["chrom", "start", "end"]
    bulk = rna.obs["scferry_bulk"]
    for name in rb.obs_names:  # each bulk: one cell type, profile = sum of its cells
        cells = (bulk == name).to_numpy()
        assert rna.obs["cell_type"][cells].nunique() == 1
        assert rna.obs["cell_type"][cells].iloc[0] == rb.obs.loc[name, "label"]
        assert rb.obs.loc[name, "n_cells"] == cells.sum()
        np.testing.assert_allclose(rb[name].X.toarray().ravel(), rna.X[cells].sum(0).A1)
    again = sf.tl.mini_bulk({"rna": rna.copy(), "atac": atac.copy()}, n_bulks=9, label_key="cell_type", seed=0)
    np.testing.assert_array_equal(again["atac"].X.toarray(), ab.X.toarray())


def test_mini_bulk_drops_bulks_without_every_modality():
    rna = _cells()
    atac = _peaks(rna)
    atac.obsm["X_scferry"] = atac.obsm["X_scferry"] + 1000.0  # no overlap with the RNA cells
    with pytest.warns(UserWarning, match="dropped"), pytest.raises(ValueError, match="do not overlap"):
        sf.tl.mini_bulk({"rna": rna, "atac": atac}, n_bulks=6)
    assert "scferry_bulk" not in rna.obs and "scferry_bulk" not in atac.obs


def test_mini_bulk_bad_input():
    rna = _cells()
    with pytest.raises(KeyError, match="label_key 'cell_typo'"):
        sf.tl.mini_bulk({"rna": rna}, label_key="cell_typo")
    with pytest.raises(ValueError, match="n_bulks = 100"):
        sf.tl.mini_bulk({"rna": rna}, n_bulks=100)
    other = _peaks(rna)
    other.obsm["X_scferry"] = other.obsm["X_scferry"][:, :2]
    with pytest.raises(ValueError, match="different widths"):
        sf.tl.mini_bulk({"rna": rna, "atac": other})
    assert "scferry_bulk" not in rna.obs


# ---------------------------------------------------------------------------- peak_gene_links
def test_peak_gene_links_window_distance_and_spearman():
    rna = _cells(n=40, genes=5)
    atac = _peaks(rna)
    tab = sf.tl.peak_gene_links(rna, atac, TSS, window=25_000, normalize=False)
    assert list(tab.columns) == ["gene", "peak", "chrom", "tss", "peak_start", "peak_end",
                                 "distance", "rho", "pvalue", "fdr", "n_obs"]
    # brute force: every peak overlapping [tss - w, tss + w] on the gene's chromosome
    want = set()
    for g, row in TSS.iterrows():
        ok = ((atac.var["chrom"] == row["chrom"]) & (atac.var["end"] >= row["tss"] - 25_000)
              & (atac.var["start"] <= row["tss"] + 25_000))
        want |= {(g, p) for p in atac.var_names[ok]}
    assert set(zip(tab["gene"], tab["peak"])) == want
    for _, r in tab.iterrows():
        x, y = rna[:, r["gene"]].X.toarray().ravel(), atac[:, r["peak"]].X.toarray().ravel()
        res = spearmanr(x, y)
        np.testing.assert_allclose(r["rho"], res.statistic, atol=1e-10)
        np.testing.assert_allclose(r["pvalue"], res.pvalue, rtol=1e-6)
        # distance: TSS to nearest peak base, negative upstream on the gene's strand
        st, en, t = r["peak_start"], r["peak_end"], r["tss"]
        d = en - t if en < t else (st - t if st > t else 0)
        assert r["distance"] == (-d if TSS.loc[r["gene"], "strand"] == "-" else d)
    assert (tab.groupby("gene")["distance"].apply(lambda s: s.abs().is_monotonic_increasing)).all()
    assert (tab["fdr"] >= tab["pvalue"] - 1e-12).all()
    # normalize: values divided by each observation's total first
    norm = sf.tl.peak_gene_links(rna, atac, TSS, window=25_000)
    r = norm.iloc[0]
    x = rna[:, r["gene"]].X.toarray().ravel() / np.maximum(rna.X.sum(1).A1, 1e-12)
    y = atac[:, r["peak"]].X.toarray().ravel() / np.maximum(atac.X.sum(1).A1, 1e-12)
    np.testing.assert_allclose(r["rho"], spearmanr(x, y).statistic, atol=1e-10)


def test_peak_gene_links_bad_input_changes_nothing():
    rna = _cells(n=40, genes=5)
    atac = _peaks(rna)
    snapshot = (atac.var.copy(), rna.var.copy(), TSS.copy())
    no_coords = atac.copy()
    no_coords.var = no_coords.var.drop(columns=["start"])
    with pytest.raises(KeyError, match="peak coordinate column\\(s\\) \\['start'\\]"):
        sf.tl.peak_gene_links(rna, no_coords, TSS)
    bad = atac.copy()
    bad.var.loc["p0", "end"] = 10
    with pytest.raises(ValueError, match="end before they start"):
        sf.tl.peak_gene_links(rna, bad, TSS)
    numeric = TSS.assign(chrom=["1", "1", "2"])
    with pytest.raises(ValueError, match="'1' vs 'chr1'.*add the prefix"):
        sf.tl.peak_gene_links(rna, atac, numeric)
    with pytest.raises(ValueError, match="window must be a positive"):
        sf.tl.peak_gene_links(rna, atac, TSS, window=0)
    with pytest.raises(KeyError, match="not in tss"):
        sf.tl.peak_gene_links(rna, atac, TSS, genes=["g0", "g4"])
    with pytest.raises(KeyError, match="not in rna.var_names"):
        sf.tl.peak_gene_links(rna, atac, TSS, genes=["g0", "gX"])
    with pytest.raises(KeyError, match="'tss'"):
        sf.tl.peak_gene_links(rna, atac, TSS.drop(columns=["tss"]))
    with pytest.raises(ValueError, match="more than once"):
        sf.tl.peak_gene_links(rna, atac, pd.concat([TSS, TSS.iloc[:1]]))
    with pytest.raises(ValueError, match="strand"):
        sf.tl.peak_gene_links(rna, atac, TSS.assign(strand=["+", "x", "-"]))
    with pytest.raises(ValueError, match="same observations"):
        sf.tl.peak_gene_links(rna, atac[:-1], TSS)
    pd.testing.assert_frame_equal(atac.var, snapshot[0])
    pd.testing.assert_frame_equal(rna.var, snapshot[1])
    pd.testing.assert_frame_equal(TSS, snapshot[2])


@pytest.mark.shared_data
def test_peak_gene_links_on_snare_cortex():
    """Real data: SNARE-seq cortex nuclei (paired), mini-bulks within cell types on a PCA of the RNA
    shared by both modalities (true pairs), TSSs from the shipped mm10 table (bench/multiome/)."""
    rna = ad.read_h5ad(shared_file("snare_cortex_rna.h5ad"))
    atac = ad.read_h5ad(shared_file("snare_cortex_atac.h5ad"))
    keep = np.random.default_rng(0).choice(rna.n_obs, 3000, replace=False)
    rna, atac = rna[np.sort(keep)].copy(), atac[np.sort(keep)].copy()
    import scanpy as sc
    norm = sc.pp.log1p(sc.pp.normalize_total(rna, target_sum=1e4, inplace=False)["X"])
    from sklearn.decomposition import TruncatedSVD
    rna.obsm["X_scferry"] = TruncatedSVD(20, random_state=0).fit_transform(norm)
    atac.obsm["X_scferry"] = rna.obsm["X_scferry"]
    tss = pd.read_csv(ROOT / "bench" / "multiome" / "snare_cortex_tss_mm10.tsv", sep="\t", index_col="gene")
    bulks = sf.tl.mini_bulk({"rna": rna, "atac": atac}, n_bulks=60, label_key="cell_type")
    tab = sf.tl.peak_gene_links(bulks["rna"], bulks["atac"], tss, window=150_000)
    assert len(tab) > 5000 and tab["gene"].nunique() > 1000 and (tab["n_obs"] == 60).all()
    near = tab.loc[tab["distance"].abs() <= 2_000, "rho"].mean()
    far = tab.loc[tab["distance"].abs() > 25_000, "rho"].mean()
    # promoter peaks track their gene's expression more than distal ones (measured: 0.099 vs 0.058)
    assert near > 0.05 and near > far + 0.02


# ---------------------------------------------------------------------------- gene_activity
def test_gene_activity_sums_the_peaks_in_each_strand_aware_window():
    rna = _cells(n=40, genes=5)
    atac = _peaks(rna)
    before = atac.X.copy()
    ga = sf.tl.gene_activity(atac, TSS, upstream=2_000, downstream=25_000, half_life=None)
    # brute force: '+' genes [tss - 2 kb, tss + 25 kb], '-' genes mirrored, peaks overlapping it
    for g, row in TSS.iterrows():
        lo, hi = ((row["tss"] - 2_000, row["tss"] + 25_000) if row["strand"] == "+"
                  else (row["tss"] - 25_000, row["tss"] + 2_000))
        ok = ((atac.var["chrom"] == row["chrom"]) & (atac.var["end"] >= lo) & (atac.var["start"] <= hi))
        assert ok.any()
        want = np.asarray(atac.X[:, ok.to_numpy()].sum(1)).ravel()
        np.testing.assert_allclose(ga[:, g].X.toarray().ravel(), want)
    assert list(ga.obs_names) == list(atac.obs_names) and ga.uns["gene_activity"]["upstream"] == 2_000
    # the default: MAESTRO's distance weights 2^(-d / 10 kb) over +-100 kb
    weighted = sf.tl.gene_activity(atac, TSS)
    row = TSS.loc["g0"]
    ok = (atac.var["chrom"] == row["chrom"]).to_numpy()
    st, en = atac.var["start"].to_numpy()[ok], atac.var["end"].to_numpy()[ok]
    d = np.where(en < row["tss"], row["tss"] - en, np.where(st > row["tss"], st - row["tss"], 0))
    w = np.where(d <= 100_000, 2.0 ** (-d / 10_000), 0)
    np.testing.assert_allclose(weighted[:, "g0"].X.toarray().ravel(), atac.X[:, ok] @ w, rtol=1e-5)
    assert (atac.X != before).nnz == 0
    # a window reaching no peak drops the gene; bad windows are refused
    far = TSS.assign(tss=[50_000, 120_000, 900_000])
    assert "g2" not in sf.tl.gene_activity(atac, far, downstream=1_000).var_names
    with pytest.raises(ValueError, match="upstream must be"):
        sf.tl.gene_activity(atac, TSS, upstream=-1)
    with pytest.raises(ValueError, match="half_life must be"):
        sf.tl.gene_activity(atac, TSS, half_life=0)
    with pytest.raises(KeyError, match="peak coordinate"):
        sf.tl.gene_activity(ad.AnnData(atac.X), TSS)
