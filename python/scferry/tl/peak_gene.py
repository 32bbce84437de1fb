"""Peak-gene links: Spearman correlation of each gene with the peaks near its TSS (MinNet, Genome
Biology 2023, Methods "cis-regulatory element inference"), with Benjamini-Hochberg FDR. Ranks are
computed in dense blocks of bounded size."""
from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData

from ..errors import ScferryWarning
from ._common import _check_adata, _matrix

# dense rank blocks in peak_gene_links hold at most this many float64 entries (~128 MiB)
_RANK_ENTRIES = 2 ** 24


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


def _check_tss(tss, rna: AnnData | None, genes) -> pd.DataFrame:
    if isinstance(tss, str) and tss in TSS_GENOMES:  # a shipped assembly's table
        tss = tss_table(tss)
    if not isinstance(tss, pd.DataFrame):
        raise TypeError("tss must be a pandas DataFrame with one row per gene: the gene name (index "
                        "or a 'gene' column), 'chrom', 'tss' (position) and optionally 'strand' "
                        f"('+'/'-'), or a shipped assembly {list(TSS_GENOMES)}; got {tss!r}.")
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
    if genes is None and rna is None:
        use = t.index
    elif genes is None:
        use = t.index[t.index.isin(rna.var_names)]
        if len(use) == 0:
            raise ValueError(f"none of the {len(t)} genes in tss is a gene of rna (e.g. tss has "
                             f"{list(t.index[:3])}, rna has {list(rna.var_names[:3])}); the names must "
                             "match rna.var_names (symbols vs Ensembl ids?).")
    else:
        use = pd.Index([genes] if isinstance(genes, str) else list(genes)).astype(str)
        if len(use) == 0:
            raise ValueError("genes is empty; pass gene names or None for every gene with a TSS.")
        known_in = ([] if rna is None else [("rna.var_names", rna.var_names)]) + [("tss", t.index)]
        for where, known in known_in:
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

    t = t.iloc[np.lexsort((t["tss"].to_numpy(), t["chrom"].to_numpy()))]  # neighbours share peaks
    gene_col = rna.var_names.get_indexer(t.index)
    pos = t["tss"].to_numpy()
    pairs = _peaks_in_windows(peaks, t["chrom"].to_numpy(), pos - window, pos + window)
    cols = ["gene", "peak", "chrom", "tss", "peak_start", "peak_end", "distance", "rho", "pvalue",
            "fdr", "n_obs"]
    if not pairs:
        warnings.warn(f"no peak lies within {window} bp of any TSS; the table is empty.", ScferryWarning, stacklevel=2)
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


def _peaks_in_windows(peaks: pd.DataFrame, chrom: np.ndarray, lo: np.ndarray,
                      hi: np.ndarray) -> list[tuple[int, np.ndarray]]:
    """For each window ``i`` (``chrom[i]``, ``[lo[i], hi[i]]``), the indices of the peaks that
    overlap it, as ``(i, indices)`` for the windows with at least one: each chromosome's peaks
    sorted by start, binary search on starts."""
    chroms, starts, ends = (peaks[c].to_numpy() for c in ("chrom", "start", "end"))
    order = np.lexsort((starts, chroms))
    by_chrom = {}
    for c in np.unique(chroms):
        idx = order[chroms[order] == c]
        by_chrom[c] = (idx, starts[idx], ends[idx], int((ends[idx] - starts[idx]).max()))
    pairs = []
    for i, (c, a, b) in enumerate(zip(chrom, lo, hi)):
        if c not in by_chrom:
            continue
        idx, st, en, longest = by_chrom[c]
        first = np.searchsorted(st, a - longest, side="left")
        last = np.searchsorted(st, b, side="right")
        hit = idx[first:last][en[first:last] >= a]
        if len(hit):
            pairs.append((i, hit))
    return pairs


#: Genome assemblies whose TSS tables ship with scferry (``tss_table``).
TSS_GENOMES = ("hg19", "hg38", "mm9", "mm10")
#: ``promoter_fractions``: a peak within this many bp of a TSS counts as a promoter peak.
PROMOTER_BP = 1_000


def tss_table(genome: str) -> pd.DataFrame:
    """The TSS table shipped for ``genome`` (one of ``TSS_GENOMES``: hg19, hg38, mm9, mm10), one
    row per gene: ``gene``, ``chrom``, ``tss`` (the gene's 5'-most TSS), ``strand``. Source:
    HOMER's promoter annotation (Heinz et al., Mol Cell 38, 576 (2010)) as shipped in CellOracle
    0.20.0 (Kamimoto et al., Nature 614, 742 (2023); Apache-2.0), converted by
    ``inst/scripts/make_tss_tables.py``. For :func:`gene_activity` and
    ``tss=`` of ``method="gw"`` (where the genome name may be given instead of the table)."""
    if not isinstance(genome, str) or genome not in TSS_GENOMES:
        raise ValueError(f"genome must be one of {list(TSS_GENOMES)} (the TSS tables scferry "
                         f"ships); got {genome!r}. For another assembly pass your own table "
                         "(columns 'gene', 'chrom', 'tss', 'strand').")
    from importlib.resources import files
    with (files(__package__) / "tss" / f"{genome}.tsv.gz").open("rb") as f:
        return pd.read_csv(f, sep="\t", compression="gzip", dtype={"chrom": str})


def promoter_fractions(atac: AnnData) -> dict[str, float]:
    """For each shipped genome, the fraction of ``atac``'s peaks (var ``chrom``, ``start``,
    ``end``) within ``PROMOTER_BP`` of one of its TSSs. Open chromatin is enriched at promoters, so
    peaks called on an assembly overlap that assembly's TSSs far more often than another's, whose
    coordinates are shifted (another assembly) or unrelated (another species)."""
    peaks = _check_peaks(atac)
    n = max(len(peaks), 1)
    prefixed = peaks["chrom"].str.lower().str.startswith("chr").any()
    out = {}
    for genome in TSS_GENOMES:
        t = tss_table(genome)
        chrom = t["chrom"] if prefixed else t["chrom"].str.replace("^chr", "", regex=True)
        chrom = chrom.to_numpy()
        pos = t["tss"].to_numpy()
        hits = _peaks_in_windows(peaks, chrom, pos - PROMOTER_BP, pos + PROMOTER_BP)
        out[genome] = len(np.unique(np.concatenate([h for _, h in hits]))) / n if hits else 0.0
    return out


def gene_activity(atac: AnnData, tss: pd.DataFrame, *, upstream: int = 100_000,
                  downstream: int = 100_000, half_life: float | None = 10_000,
                  layer: str | None = None) -> AnnData:
    """Gene activity from ATAC peaks: each gene's count is the weighted sum of the counts of the
    peaks that overlap its window, ``upstream`` bp before the TSS to ``downstream`` bp after it
    (strand-aware), each peak weighted by ``2 ** (-d / half_life)``, ``d`` its distance to the TSS
    (0 when it covers it). The defaults are MAESTRO's regulatory potential (Wang et al., Genome
    Biol 21, 198 (2020): peaks within 100 kb, half-life 10 kb; ArchR's gene scores weight distal
    peaks down likewise). ``half_life=None`` sums the peaks unweighted: with ``upstream=2_000``
    and ``downstream`` about a gene length, Signac's ``GeneActivity`` (Stuart et al., Nat Methods
    18, 1333 (2021): gene body + 2 kb upstream; here the body is approximated from the TSS).

    ``atac``: cells x peaks, ``var`` columns ``chrom``, ``start``, ``end``. ``tss``: one row per
    gene (names as index or a ``gene`` column) with ``chrom``, ``tss`` and optionally ``strand``
    (``'+'`` when absent), or a shipped assembly's name (:func:`tss_table`). Returns a new
    AnnData, cells x genes (the genes with at least one peak in their window), sparse float32
    counts, ``obs`` copied; ``uns["gene_activity"]`` records the window. The input is not
    modified."""
    _check_adata(atac, "atac")
    for name, v in (("upstream", upstream), ("downstream", downstream)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0:
            raise ValueError(f"{name} must be a non-negative number of base pairs; got {v!r}.")
    if half_life is not None and (isinstance(half_life, bool) or not isinstance(half_life, (int, float))
                                  or not np.isfinite(half_life) or half_life <= 0):
        raise ValueError(f"half_life must be None (no distance weighting) or a positive number of base "
                         f"pairs, e.g. 10_000; got {half_life!r}.")
    peaks = _check_peaks(atac)
    t = _check_tss(tss, None, None)
    _check_chrom_names(set(t["chrom"]), set(peaks["chrom"]))
    pos, minus = t["tss"].to_numpy(), t["strand"].to_numpy() == "-"
    lo = np.where(minus, pos - downstream, pos - upstream)
    hi = np.where(minus, pos + upstream, pos + downstream)
    pairs = _peaks_in_windows(peaks, t["chrom"].to_numpy(), lo, hi)
    if not pairs:
        raise ValueError(f"no peak overlaps any gene window ({upstream} bp upstream to {downstream} bp "
                         "downstream of the TSS): are the peaks and the TSS table from the same assembly?")
    genes = np.array([i for i, _ in pairs])  # rows of t with at least one peak in the window
    gi = np.concatenate([np.full(len(h), j) for j, (_, h) in enumerate(pairs)])
    pi = np.concatenate([h for _, h in pairs])
    w = np.ones(len(pi))
    if half_life is not None:
        g_tss = pos[genes][gi]
        p_st, p_en = peaks["start"].to_numpy()[pi], peaks["end"].to_numpy()[pi]
        d = np.where(p_en < g_tss, g_tss - p_en, np.where(p_st > g_tss, p_st - g_tss, 0))
        w = 2.0 ** (-d / float(half_life))
    link = sp.csr_matrix((w.astype(np.float32), (pi, gi)), shape=(atac.n_vars, len(pairs)))
    X = sp.csr_matrix(_matrix(atac, layer, "atac"), dtype=np.float32) @ link  # CSR float32
    out = AnnData(X, obs=atac.obs.copy(), var=pd.DataFrame(index=t.index[genes].astype(str)))
    out.uns["gene_activity"] = {"upstream": int(upstream), "downstream": int(downstream),
                                "half_life": None if half_life is None else float(half_life),
                                "n_peaks_linked": int(len(np.unique(pi)))}
    return out


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

