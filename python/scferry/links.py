"""Downstream of a joint embedding (MinNet, Genome Biology 2023, Methods "Data smoothing, mini-bulk
synthesis, and cis-regulatory element inference"): kNN smoothing in the joint space, mini-bulks
within cell types, and Spearman correlation of genes with the peaks near their TSS.

Everything stays sparse: the neighbour graph holds n x (k + 1) entries and mini-bulks are a sparse
indicator product, so no cells x cells matrix is ever formed. Inputs are validated before any work;
only the keys each function documents are written.

Deliberate difference from the paper: mini-bulks come from k-means on the joint embedding within each
cell type instead of cutting a hierarchical clustering (scipy ``pdist``), which needs an n x n
distance matrix."""
from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData

from .model import EMBEDDING_KEY

SMOOTH_KEY = "scferry_smoothed"
BULK_KEY = "scferry_bulk"
# dense rank blocks in peak_gene_links hold at most this many float64 entries (~128 MiB)
_RANK_ENTRIES = 2 ** 24


# ---------------------------------------------------------------------------- input checks
def _check_adata(adata, role: str) -> None:
    if not isinstance(adata, AnnData):
        raise TypeError(f"{role} must be an AnnData; got {type(adata).__name__}.")
    if adata.n_obs == 0 or adata.n_vars == 0:
        raise ValueError(f"{role} is empty ({adata.n_obs} x {adata.n_vars}).")


def _check_int(value, name: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}; got {value!r}.")
    return int(value)


def _basis(adata: AnnData, basis, role: str) -> np.ndarray:
    """The cells x d embedding: ``obsm[basis]`` (default the one integrate writes) or an array."""
    if isinstance(basis, str):
        if basis not in adata.obsm:
            fix = ("run scferry.integrate (or scferry.project) on it first, or pass basis= the key "
                   "of another embedding" if basis == EMBEDDING_KEY else "pass basis= an existing key")
            raise KeyError(f"{role} has no obsm[{basis!r}]: {fix}; obsm keys: {list(adata.obsm.keys())}.")
        X, what = adata.obsm[basis], f"{role}.obsm[{basis!r}]"
    else:
        X, what = basis, f"basis given for {role}"
    X = np.asarray(X.toarray() if sp.issparse(X) else X, dtype=np.float64)
    if X.ndim != 2 or X.shape[0] != adata.n_obs:
        raise ValueError(f"{what} must be {adata.n_obs} cells x dimensions; got shape {X.shape}.")
    if not np.isfinite(X).all():
        raise ValueError(f"{what} contains NaN or infinite values; recompute the embedding.")
    return X


def _matrix(adata: AnnData, layer: str | None, role: str) -> sp.csr_matrix:
    """``X`` or ``layers[layer]`` as CSR float32 (a copy only where the type differs), checked finite
    and non-negative (counts or normalised values)."""
    if layer is not None:
        if layer not in adata.layers:
            raise KeyError(f"{role} has no layers[{layer!r}]; layers: {list(adata.layers.keys())}.")
        X, what = adata.layers[layer], f"{role}.layers[{layer!r}]"
    else:
        X, what = adata.X, f"{role}.X"
    if X is None:
        raise ValueError(f"{what} is empty (None); pass layer= the matrix to use.")
    X = sp.csr_matrix(X, dtype=np.float32)
    if not np.isfinite(X.data).all():
        raise ValueError(f"{what} contains NaN or infinite values.")
    if (X.data < 0).any():
        raise ValueError(f"{what} has negative values; pass counts or normalised (non-negative) "
                         "values, e.g. layer='counts'.")
    return X


def _labels(adata: AnnData, key: str, role: str) -> pd.Series:
    if key not in adata.obs.columns:
        raise KeyError(f"label_key {key!r} is not a column of {role}.obs; columns: {list(adata.obs.columns)}. "
                       "For a modality without labels, transfer them first (scferry.transfer_labels "
                       "writes obs['scferry_label']).")
    col = adata.obs[key]
    if col.isna().any():
        raise ValueError(f"label_key {key!r} has {int(col.isna().sum())} missing values in {role}; "
                         "fill them (e.g. 'unknown') or drop those cells.")
    return col.astype(str)


# ---------------------------------------------------------------------------- smoothing
def knn_smooth(adata: AnnData, *, k: int = 5, basis: str | np.ndarray = EMBEDDING_KEY,
               layer: str | None = None, quantile: float = 0.95,
               key_added: str = SMOOTH_KEY) -> sp.csr_matrix:
    """Complement each cell's values with those of its ``k`` nearest neighbours in the joint space.

    As in MinNet: the binarised kNN graph (each cell plus its ``k`` nearest cells of the same
    AnnData in ``obsm[basis]``, euclidean; neighbours farther than the ``quantile`` of all kNN
    distances dropped) times the count matrix, so each cell becomes the sum of itself and its
    retained neighbours. Sparse throughout (n x (k + 1) graph entries).

    Writes ``adata.layers[key_added]`` (CSR float32, cells x features); returns that matrix.
    """
    _check_adata(adata, "adata")
    n = adata.n_obs
    if n < 2:
        raise ValueError("adata needs at least 2 cells to smooth over neighbours.")
    k = _check_int(k, "k")
    if k > n - 1:
        raise ValueError(f"k = {k} neighbours but adata has only {n} cells; use k <= {n - 1}.")
    if isinstance(quantile, bool) or not isinstance(quantile, (int, float)) or not 0 < quantile <= 1:
        raise ValueError(f"quantile must be in (0, 1] (1 keeps every neighbour); got {quantile!r}.")
    if not isinstance(key_added, str) or not key_added:
        raise ValueError(f"key_added must be a non-empty string; got {key_added!r}.")
    Z = _basis(adata, basis, "adata")
    X = _matrix(adata, layer, "adata")

    from .metrics import _knn
    dist, idx = _knn(Z, k)
    keep = dist <= np.quantile(dist, quantile)
    rows = np.concatenate([np.arange(n), np.repeat(np.arange(n), k)[keep.ravel()]])
    cols = np.concatenate([np.arange(n), idx.ravel()[keep.ravel()]])
    graph = sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=(n, n))
    out = (graph @ X).tocsr().astype(np.float32)
    out.sort_indices()
    adata.layers[key_added] = out
    return out


# ---------------------------------------------------------------------------- mini-bulks
def _split_counts(sizes: np.ndarray, total: int) -> np.ndarray:
    """``total`` bulks over groups in proportion to their sizes (largest remainder), each group at
    least 1 and at most its size."""
    share = sizes / sizes.sum() * total
    out = np.clip(np.floor(share).astype(int), 1, sizes)
    order = np.argsort(-(share - np.floor(share)), kind="stable")
    i = 0
    while out.sum() < total and (out < sizes).any():
        g = order[i % len(order)]
        if out[g] < sizes[g]:
            out[g] += 1
        i += 1
    return out


def mini_bulk(datasets: Mapping[str, AnnData] | AnnData, *, n_bulks: int = 100,
              label_key: str | None = None, basis: str = EMBEDDING_KEY,
              layer: str | Mapping[str, str | None] | None = None, seed: int = 0
              ) -> dict[str, AnnData]:
    """Aggregate cells into mini-bulks that are neighbourhoods of the joint space.

    All cells of all datasets (e.g. RNA and ATAC, paired or not) are pooled in ``obsm[basis]`` and
    cut into ``n_bulks`` groups by k-means, within each cell type when ``label_key`` is given
    (bulks split over types in proportion to their cells, at least one each), so a bulk never mixes
    types. Each dataset's profile of a bulk is the sum of its own cells' rows (``X``, or ``layer``,
    e.g. ``"scferry_smoothed"`` from :func:`knn_smooth`). Bulks that hold no cell of some dataset
    are dropped (with a warning): they cannot be correlated across modalities.

    Writes ``obs["scferry_bulk"]`` (categorical bulk id, missing for cells of dropped bulks) on each
    input. Returns ``{name: AnnData}`` with the same bulks (rows, in the same order) for every
    dataset: ``X`` = summed values (CSR float32), ``obs`` = ``label`` (when ``label_key``) and
    ``n_cells`` (this dataset's cells in the bulk), ``var`` copied from the input.
    """
    if isinstance(datasets, AnnData):
        datasets = {"data": datasets}
    if not isinstance(datasets, Mapping) or not datasets:
        raise TypeError("datasets must be a non-empty dict name -> AnnData (or one AnnData).")
    names = list(datasets)
    for name in names:
        if not isinstance(name, str):
            raise TypeError(f"dataset names must be strings; got {name!r}.")
        _check_adata(datasets[name], f"dataset {name!r}")
    n_bulks = _check_int(n_bulks, "n_bulks", 2)
    seed = _check_int(seed, "seed", 0)
    layers = layer if isinstance(layer, Mapping) else {n: layer for n in names}
    unknown = set(layers) - set(names)
    if unknown:
        raise KeyError(f"layer names datasets {sorted(unknown)} that are not in datasets {names}.")
    Z = [_basis(datasets[n], basis, f"dataset {n!r}") for n in names]
    dims = {z.shape[1] for z in Z}
    if len(dims) > 1:
        raise ValueError(f"obsm[{basis!r}] has different widths across datasets ({sorted(dims)}): "
                         "the datasets must share one joint embedding (integrate them together).")
    mats = [_matrix(datasets[n], layers.get(n), f"dataset {n!r}") for n in names]
    labels = (np.concatenate([_labels(datasets[n], label_key, f"dataset {n!r}").to_numpy() for n in names])
              if label_key is not None else np.full(sum(len(z) for z in Z), "all", dtype=object))
    total = len(labels)
    if n_bulks > total:
        raise ValueError(f"n_bulks = {n_bulks} but there are only {total} cells in all; use fewer bulks.")

    from sklearn.cluster import KMeans
    Zall = np.vstack(Z)
    owner = np.repeat(np.arange(len(names)), [len(z) for z in Z])
    types, codes = np.unique(labels.astype(str), return_inverse=True)
    per_type = _split_counts(np.bincount(codes, minlength=len(types)), n_bulks)
    bulk = np.empty(total, np.int64)
    bulk_label, start = [], 0
    for t, m in enumerate(per_type):
        members = np.flatnonzero(codes == t)
        if m == 1:
            assign = np.zeros(len(members), np.int64)
        else:
            km = KMeans(n_clusters=int(m), n_init=3, random_state=seed).fit(Zall[members])
            assign = km.labels_.astype(np.int64)
        # renumber clusters by first appearance: stable ids, no empty ones
        _, assign = np.unique(assign, return_inverse=True)
        bulk[members] = start + assign
        bulk_label += [types[t]] * (assign.max() + 1)
        start += assign.max() + 1
    n_found = start
    counts = np.zeros((len(names), n_found), np.int64)
    for d in range(len(names)):
        counts[d] = np.bincount(bulk[owner == d], minlength=n_found)
    kept = np.flatnonzero((counts > 0).all(axis=0))
    if len(kept) < n_found:
        warnings.warn(f"{n_found - len(kept)} of {n_found} mini-bulks held no cell of some dataset "
                      "and were dropped (the modalities do not overlap there in the joint space).",
                      stacklevel=2)
    if len(kept) == 0:
        raise ValueError("no mini-bulk holds cells of every dataset: the datasets do not overlap in "
                         f"obsm[{basis!r}]; check the integration.")
    new_id = np.full(n_found, -1, np.int64)
    new_id[kept] = np.arange(len(kept))
    bulk_names = [f"bulk{i}" for i in range(len(kept))]
    out = {}
    for d, name in enumerate(names):
        adata = datasets[name]
        ids = new_id[bulk[owner == d]]
        cells = np.flatnonzero(ids >= 0)
        ind = sp.csr_matrix((np.ones(len(cells), np.float32), (ids[cells], cells)),
                            shape=(len(kept), adata.n_obs))
        obs = pd.DataFrame({"n_cells": counts[d, kept]}, index=pd.Index(bulk_names))
        if label_key is not None:
            obs.insert(0, "label", pd.Categorical(np.asarray(bulk_label, dtype=object)[kept]))
        res = AnnData((ind @ mats[d]).tocsr().astype(np.float32), obs=obs, var=adata.var.copy())
        res.uns["scferry_mini_bulk"] = {"n_bulks": n_bulks, "label_key": label_key, "basis": basis,
                                        "layer": layers.get(name), "seed": seed}
        out[name] = res
    for d, name in enumerate(names):  # written only once everything has succeeded
        ids = new_id[bulk[owner == d]]
        col = pd.Categorical.from_codes(ids, categories=bulk_names)
        datasets[name].obs[BULK_KEY] = col
    return out


# ---------------------------------------------------------------------------- peak-gene links
def _check_peaks(atac: AnnData) -> pd.DataFrame:
    missing = [c for c in ("chrom", "start", "end") if c not in atac.var.columns]
    if missing:
        raise KeyError(
            f"atac.var lacks the peak coordinate column(s) {missing}: peaks need var columns 'chrom', "
            "'start', 'end'. If the peak names hold them (e.g. 'chr1:100-600' or 'chr1-100-600'), "
            "split them: atac.var[['chrom', 'start', 'end']] = "
            "atac.var_names.str.extract(r'^(.+)[:_-](\\d+)[_-](\\d+)$') and convert start/end to int.")
    v = atac.var
    if v["chrom"].isna().any():
        raise ValueError(f"atac.var['chrom'] has {int(v['chrom'].isna().sum())} missing values; every "
                         "peak needs a chromosome.")
    pos = {}
    for c in ("start", "end"):
        x = pd.to_numeric(v[c], errors="coerce")
        bad = x.isna() | ~np.isfinite(x) | (x < 0) | (x != np.floor(x))
        if bad.any():
            raise ValueError(f"atac.var[{c!r}] must hold non-negative integer positions; "
                             f"{int(bad.sum())} peaks do not (e.g. {v.index[bad.to_numpy()][0]!r}: "
                             f"{v[c][bad].iloc[0]!r}).")
        pos[c] = x.to_numpy(np.int64)
    if (pos["end"] < pos["start"]).any():
        bad = np.flatnonzero(pos["end"] < pos["start"])
        raise ValueError(f"{len(bad)} peaks end before they start (e.g. {v.index[bad[0]]!r}); "
                         "check the start/end columns.")
    return pd.DataFrame({"chrom": v["chrom"].astype(str).to_numpy(), **pos})


def _check_tss(tss, rna: AnnData, genes) -> pd.DataFrame:
    if not isinstance(tss, pd.DataFrame):
        raise TypeError("tss must be a pandas DataFrame with one row per gene: the gene name (index "
                        "or a 'gene' column), 'chrom', 'tss' (position) and optionally 'strand' "
                        f"('+'/'-'); got {type(tss).__name__}.")
    t = tss.set_index("gene") if "gene" in tss.columns else tss
    missing = [c for c in ("chrom", "tss") if c not in t.columns]
    if missing:
        raise KeyError(f"tss lacks the column(s) {missing}; it needs 'chrom' and 'tss' (and gene names "
                       f"as index or a 'gene' column); columns: {list(tss.columns)}.")
    t = t.copy()  # never touch the user's table
    t.index = t.index.astype(str)
    if t.index.duplicated().any():
        dup = t.index[t.index.duplicated()].unique()
        raise ValueError(f"tss lists {len(dup)} genes more than once (e.g. {list(dup[:3])}); keep one "
                         "TSS per gene (e.g. the canonical transcript's).")
    if genes is None:
        use = t.index[t.index.isin(rna.var_names)]
        if len(use) == 0:
            raise ValueError(f"none of the {len(t)} genes in tss is a gene of rna (e.g. tss has "
                             f"{list(t.index[:3])}, rna has {list(rna.var_names[:3])}); the names must "
                             "match rna.var_names (symbols vs Ensembl ids?).")
    else:
        use = pd.Index([genes] if isinstance(genes, str) else list(genes)).astype(str)
        if len(use) == 0:
            raise ValueError("genes is empty; pass gene names or None for every gene with a TSS.")
        for where, known in (("rna.var_names", rna.var_names), ("tss", t.index)):
            absent = use[~use.isin(known)]
            if len(absent):
                raise KeyError(f"{len(absent)} of the genes are not in {where} (e.g. {list(absent[:5])}).")
        use = use.unique()
    t = t.loc[use]
    if t["chrom"].isna().any():
        raise ValueError(f"tss['chrom'] is missing for {int(t['chrom'].isna().sum())} genes.")
    pos = pd.to_numeric(t["tss"], errors="coerce")
    bad = pos.isna() | ~np.isfinite(pos) | (pos < 0) | (pos != np.floor(pos))
    if bad.any():
        raise ValueError(f"tss['tss'] must be non-negative integer positions; {int(bad.sum())} genes are "
                         f"not (e.g. {t.index[bad.to_numpy()][0]!r}: {t['tss'][bad].iloc[0]!r}).")
    strand = t["strand"].astype(str) if "strand" in t.columns else pd.Series("+", index=t.index)
    if "strand" in t.columns and not strand.isin(["+", "-"]).all():
        raise ValueError("tss['strand'] must be '+' or '-'; got "
                         f"{sorted(set(strand[~strand.isin(['+', '-'])]))[:5]}.")
    return pd.DataFrame({"chrom": t["chrom"].astype(str).to_numpy(), "tss": pos.to_numpy(np.int64),
                         "strand": strand.to_numpy()},
                        index=t.index)


def _check_chrom_names(gene_chroms: set, peak_chroms: set) -> None:
    if gene_chroms & peak_chroms:
        return
    strip = lambda s: {c[3:] if c.lower().startswith("chr") else c for c in s}  # noqa: E731
    eg_g, eg_p = sorted(gene_chroms)[:3], sorted(peak_chroms)[:3]
    if strip(gene_chroms) & strip(peak_chroms):
        if any(c.lower().startswith("chr") for c in peak_chroms):
            fix = "add the prefix: tss['chrom'] = 'chr' + tss['chrom'].astype(str)"
        else:
            fix = "drop the prefix: tss['chrom'] = tss['chrom'].astype(str).str.replace('^chr', '', regex=True)"
        raise ValueError(f"chromosome names differ: tss uses {eg_g} but the peaks use {eg_p} "
                         f"('1' vs 'chr1'); {fix}.")
    raise ValueError(f"no gene's chromosome is a peak chromosome: tss uses {eg_g}, the peaks {eg_p}; "
                     "are both from the same genome assembly and naming?")


def _ranks(M: np.ndarray) -> np.ndarray:
    """Column-wise average ranks, centred and scaled to unit norm (NaN for constant columns), so a
    dot product of two columns is their Spearman correlation."""
    from scipy.stats import rankdata
    R = rankdata(M, axis=0) if M.shape[1] else M.astype(np.float64)
    R = R - R.mean(axis=0)
    norm = np.sqrt((R ** 2).sum(axis=0))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(norm > 1e-12, R / np.where(norm > 1e-12, norm, 1.0), np.nan)


def peak_gene_links(rna: AnnData, atac: AnnData, tss: pd.DataFrame, *, window: int = 150_000,
                    genes: Sequence[str] | None = None, rna_layer: str | None = None,
                    atac_layer: str | None = None, normalize: bool = True) -> pd.DataFrame:
    """Spearman correlation of each gene with every peak within ``window`` bp of its TSS.

    ``rna`` and ``atac`` hold the same observations in the same order: mini-bulks from
    :func:`mini_bulk` (the MinNet analysis) or paired cells. Peaks need ``atac.var`` columns
    ``chrom``, ``start``, ``end``; ``tss`` is the user's table, one row per gene (gene names as
    index or a ``gene`` column) with ``chrom``, ``tss`` and optionally ``strand``. A peak is within
    the window when it overlaps ``[tss - window, tss + window]``. With ``normalize`` (default) each
    observation's values are first divided by its total in that modality: mini-bulks differ in
    size, and raw sums would make every gene correlate with every peak through bulk depth.

    Returns a tidy DataFrame, one row per gene-peak pair, sorted by gene then distance: ``gene``,
    ``peak``, ``chrom``, ``tss``, ``peak_start``, ``peak_end``, ``distance`` (bp from the TSS to the
    nearest base of the peak, 0 when it covers the TSS; negative = upstream, by ``strand`` when
    given, else by genome coordinate), ``rho`` (NaN where the gene or the peak is constant),
    ``pvalue`` (two-sided, t approximation with n - 2 degrees of freedom, as scipy's spearmanr),
    ``fdr`` (Benjamini-Hochberg over the table) and ``n_obs``. Nothing is written to the inputs.
    """
    _check_adata(rna, "rna")
    _check_adata(atac, "atac")
    if rna.n_obs != atac.n_obs or not (rna.obs_names == atac.obs_names).all():
        raise ValueError("rna and atac must hold the same observations in the same order (paired cells, "
                         "or the mini-bulks scferry.tl.mini_bulk returns for both); got "
                         f"{rna.n_obs} and {atac.n_obs} rows with different names.")
    if rna.n_obs < 3:
        raise ValueError(f"Spearman correlation needs at least 3 observations; got {rna.n_obs}.")
    if isinstance(window, bool) or not isinstance(window, (int, np.integer)) or window <= 0:
        raise ValueError(f"window must be a positive number of base pairs (e.g. 150_000, or 2_000 for "
                         f"promoter peaks); got {window!r}.")
    peaks = _check_peaks(atac)
    t = _check_tss(tss, rna, genes)
    _check_chrom_names(set(t["chrom"]), set(peaks["chrom"]))
    if not isinstance(normalize, (bool, np.bool_)):
        raise TypeError(f"normalize must be True or False; got {normalize!r}.")
    Xg = _matrix(rna, rna_layer, "rna")
    Xp = _matrix(atac, atac_layer, "atac")
    if normalize:
        Xg, Xp = (sp.diags(1.0 / np.maximum(np.asarray(M.sum(axis=1), np.float64).ravel(), 1e-12)) @ M
                  for M in (Xg, Xp))
        Xg, Xp = Xg.tocsr(), Xp.tocsr()

    # candidate peaks per gene: each chromosome's peaks sorted by start, binary search on starts
    chroms, starts, ends = (peaks[c].to_numpy() for c in ("chrom", "start", "end"))
    order = np.lexsort((starts, chroms))
    by_chrom = {}
    for c in np.unique(chroms):
        idx = order[chroms[order] == c]
        by_chrom[c] = (idx, starts[idx], ends[idx], int((ends[idx] - starts[idx]).max()))
    pairs = []  # (gene row in t, peak indices)
    t = t.iloc[np.lexsort((t["tss"].to_numpy(), t["chrom"].to_numpy()))]  # neighbours share peaks
    gene_col = rna.var_names.get_indexer(t.index)
    for i, (c, pos) in enumerate(zip(t["chrom"], t["tss"])):
        if c not in by_chrom:
            continue
        idx, st, en, longest = by_chrom[c]
        lo = np.searchsorted(st, pos - window - longest, side="left")
        hi = np.searchsorted(st, pos + window, side="right")
        hit = idx[lo:hi][en[lo:hi] >= pos - window]
        if len(hit):
            pairs.append((i, hit))
    cols = ["gene", "peak", "chrom", "tss", "peak_start", "peak_end", "distance", "rho", "pvalue",
            "fdr", "n_obs"]
    if not pairs:
        warnings.warn(f"no peak lies within {window} bp of any TSS; the table is empty.", stacklevel=2)
        return pd.DataFrame(columns=cols)

    # Spearman in blocks of genes whose peaks' dense ranks fit in _RANK_ENTRIES
    n = rna.n_obs
    rho_parts, block, cols_in_block = [], [], set()

    def flush():
        if not block:
            return
        union = np.unique(np.concatenate([h for _, h in block]))
        Rp = _ranks(Xp[:, union].toarray())
        Rg = _ranks(Xg[:, gene_col[[i for i, _ in block]]].toarray())
        for j, (_, hit) in enumerate(block):
            rho_parts.append(Rg[:, j] @ Rp[:, np.searchsorted(union, hit)])
        block.clear()
        cols_in_block.clear()

    budget = max(1, _RANK_ENTRIES // n)
    for item in pairs:
        if block and len(cols_in_block | set(item[1].tolist())) > budget:
            flush()
        block.append(item)
        cols_in_block.update(item[1].tolist())
    flush()

    gi = np.concatenate([np.full(len(h), i) for i, h in pairs])
    pi = np.concatenate([h for _, h in pairs])
    rho = np.clip(np.concatenate(rho_parts), -1.0, 1.0)
    g_tss = t["tss"].to_numpy()[gi]
    p_st, p_en = peaks["start"].to_numpy()[pi], peaks["end"].to_numpy()[pi]
    dist = np.where(p_en < g_tss, p_en - g_tss, np.where(p_st > g_tss, p_st - g_tss, 0))
    dist = np.where(t["strand"].to_numpy()[gi] == "-", -dist, dist)

    from scipy.stats import t as student_t
    df = n - 2
    with np.errstate(divide="ignore", invalid="ignore"):
        tstat = rho * np.sqrt(df / np.maximum(1.0 - rho ** 2, 1e-300))
    pval = np.where(np.isnan(rho), np.nan, 2 * student_t.sf(np.abs(tstat), df))
    table = pd.DataFrame({
        "gene": t.index.to_numpy()[gi], "peak": atac.var_names.to_numpy()[pi],
        "chrom": t["chrom"].to_numpy()[gi], "tss": g_tss, "peak_start": p_st, "peak_end": p_en,
        "distance": dist.astype(np.int64), "rho": rho, "pvalue": pval, "fdr": _bh(pval), "n_obs": n})
    table = table.sort_values(["gene", "distance"], key=lambda s: s.abs() if s.name == "distance" else s,
                              kind="stable").reset_index(drop=True)
    return table[cols]


def _bh(p: np.ndarray) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values over the finite entries (NaN kept)."""
    out = np.full(len(p), np.nan)
    ok = np.flatnonzero(np.isfinite(p))
    if len(ok):
        order = ok[np.argsort(p[ok], kind="stable")]
        m = len(ok)
        adj = p[order] * m / np.arange(1, m + 1)
        out[order] = np.minimum(np.minimum.accumulate(adj[::-1])[::-1], 1.0)
    return out
