"""``method="gw"``: Gromov-Wasserstein alignment of two unpaired modalities, no training.

SCOT (Demetci et al., J Comput Biol 29, 3 (2022)) and Pamona (Cao et al., Bioinformatics 38, 211
(2022)) align two modalities measured on unrelated features by matching each modality's
kNN-graph geodesic distances with (entropic) Gromov-Wasserstein OT, then embed one modality in
the other by barycentric projection. ``scferry.gw`` does the same between metacells (so memory
stays linear in cells) and lifts the coupling to cells; this module turns it into a fitted
result like :class:`scferry.Model`: ``obsm["X_scferry"]`` on both inputs, the metacell coupling,
and a record of every choice made for the user.

The joint embedding (:meth:`scferry.gw.Alignment.joint`) is symmetric: without linked features
each cell gets ``[X-space coordinates, Y-space coordinates]``, its own modality's
(metacell-smoothed) and its barycentric projection into the other; with linked features it is
built in their CCA space (see there). Linked features make it fused GW (``linked="auto"``: the
feature names both datasets share, when there are >= 50; or a DataFrame pairing features, e.g.
genes with the proteins they code). RNA vs ATAC peaks share no features; with ``tss=`` (a table
of gene TSS positions: gene names as index or a ``gene`` column, ``chrom``, ``tss``, optionally
``strand``; or a shipped assembly's name, :func:`scferry.tl.tss_table`; the peaks need ``var``
columns ``chrom``, ``start``, ``end`` or names such as ``chr1-100-600``) the peaks' gene
activity (:func:`scferry.tl.gene_activity`) is linked to the RNA genes of the same name, as
Seurat/Signac and GLUE link the two modalities (announced and recorded). ``tss="auto"``
(default): with one peaks dataset and nothing else linking the two, the shipped assembly whose
TSSs the peaks lie near is used when one clearly stands out (open chromatin gathers at
promoters; :func:`_auto_tss`), else plain GW; announced and recorded either way. An explicit
``tss=`` that cannot be used (no peaks dataset or two, ``linked=None`` or a linked table) is an
error, never ignored.

``refine`` (default 1): rounds of refinement after GW (:meth:`scferry.gw.Alignment.refined`,
MaxFuse, Chen et al., Nat Biotech 2023): cells matched one-to-one in the joint space, a CCA over
each modality's whole own embedding (plus the linked features' CCA coordinates) fitted on the best
80% of matches, all cells projected and smoothed over their own-modality neighbours; the embedding
is then ``[refined, joint]`` with linked features, the refined space alone without them.
``refine=0``: the joint embedding as GW gives it. Recorded in ``params["refine"]`` /
``params["refine_info"]``.

It is transductive: new cells cannot be encoded later
(:func:`scferry.project` says so); rerun on all cells, or use ``method="uniport"`` (diagonal
mode, which uses this alignment as its OT guidance) to get encoders.
"""
from __future__ import annotations

import uuid
import warnings
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
from anndata import AnnData

from .. import gw as _gw
from ..data import collect_datasets
from ..errors import ScferryWarning, record_choice

DEFAULTS = dict(_gw.DEFAULTS, kinds=None, linked="auto", tss="auto", refine=1)
#: ``tss="auto"`` reads the peaks as the shipped assembly whose TSSs they overlap most, when that
#: assembly's promoter fraction is at least this and this many times the next one's.
AUTO_TSS_MIN_FRACTION, AUTO_TSS_MIN_RATIO = 0.04, 2.0
PEAK_NAME = r"^(.+)[:_-](\d+)[_-](\d+)$"  # chr1:100-600, chr1-100-600, chr1_100_600
MIN_LINKED = 50  # shared features below which fused GW is not used by default


class GWModel:
    """The result of ``integrate(..., method="gw")``.

    Attributes
    ----------
    method : "gw"
    dataset_names, obs_names
        The two datasets' names and cell names.
    alignment : :class:`scferry.gw.Alignment`
        Metacells, their coupling (``alignment.coupling``) and each modality's own embedding.
    params
        Every setting used, including the choices made from the data (``kinds``, ``fused``).
    choices
        The choices made for the user, ``{name: {"value": ..., "reason": ...}}`` as on every
        scferry model (also announced as :class:`scferry.ScferryWarning`).
    """

    method = "gw"

    def __init__(self, alignment: _gw.Alignment, datasets, params: dict[str, Any], choices: dict[str, dict]):
        self.alignment = alignment
        self.datasets = datasets
        self.dataset_names = [d.name for d in datasets]
        self.obs_names = {d.name: list(map(str, d.obs_names)) for d in datasets}
        self.params = params
        self.choices = choices
        self.train_params: dict[str, Any] = {}
        self.history: list[dict] = []
        self.id = uuid.uuid4().hex  # recorded in uns["scferry"] beside the embedding it writes

    @property
    def adatas(self) -> dict[str, AnnData]:
        return {d.name: d.adata for d in self.datasets}

    def __repr__(self) -> str:
        sizes = ", ".join(f"{n}: {len(self.obs_names[n])} cells" for n in self.dataset_names)
        return f"scferry.GWModel(method='gw', {sizes}, kinds={self.params['kinds']})"

    def transform(self, *args, **kwargs):
        raise NotImplementedError(
            "method='gw' is transductive: it aligns the cells it was given and has no encoder for new "
            "cells. Rerun scferry.integrate(..., method='gw') with the new cells included, or use "
            "method='uniport' (diagonal mode, guided by this GW alignment) to get encoders for "
            "scferry.project / scferry.impute.")

    def save(self, *args, **kwargs):
        raise NotImplementedError("a method='gw' result is not saved; keep obsm['X_scferry'] of the "
                                  "AnnData objects, or rerun (it takes seconds to a minute).")


def check_params(params: dict[str, Any]) -> None:
    """Reject bad GW settings before any data is touched."""
    r = params["refine"]
    if not isinstance(r, (int, np.integer)) or isinstance(r, bool) or r < 0:
        raise ValueError(f"refine must be an integer >= 0 (rounds of matching + CCA over all features "
                         f"after GW, scferry.gw.refine; 0: off); got {r!r}.")
    for key in ("n_metacells", "k", "n_components", "n_features", "n_soft", "max_iter", "n_starts",
                "n_smooth"):
        v = params[key]
        low = 1 if key in ("n_soft", "n_starts", "n_smooth") else 2
        if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < low:
            raise ValueError(f"{key} must be an integer >= {low}; got {v!r}.")
    eps = params["epsilon"]
    if not isinstance(eps, (int, float)) or isinstance(eps, bool) or not np.isfinite(eps) or eps <= 0:
        raise ValueError(f"epsilon must be a number > 0 (entropic regularisation of GW, relative to "
                         f"geodesic distances scaled to [0, 1]); got {eps!r}.")
    a = params["fused_alpha"]
    if not isinstance(a, (int, float)) or isinstance(a, bool) or not 0 < a <= 1:
        raise ValueError(f"fused_alpha must be in (0, 1] (weight of the GW term in fused GW); got {a!r}.")
    m = params["mass"]
    if not isinstance(m, (int, float)) or isinstance(m, bool) or not 0 < m <= 1:
        raise ValueError(f"mass must be in (0, 1]: the fraction of cells transported (1: balanced GW; "
                         f"below 1: partial GW, cells without a counterpart may stay unmatched); got {m!r}.")
    kinds = params["kinds"]
    if kinds is not None and (not isinstance(kinds, Mapping)
                              or any(v not in _gw.KINDS for v in kinds.values())):
        raise ValueError(f"kinds must be None (guessed from the data) or a dict of dataset name -> one of "
                         f"{_gw.KINDS}, e.g. {{'atac': 'peaks'}}; got {kinds!r}.")
    tss = params["tss"]
    from ..tl.peak_gene import TSS_GENOMES
    if not (tss is None or isinstance(tss, pd.DataFrame) or (isinstance(tss, str) and tss in
                                                              ("auto", *TSS_GENOMES))):
        raise ValueError("tss must be 'auto' (the default: ATAC peaks read as the shipped "
                         "assembly whose TSSs they overlap, if one clearly does), a shipped "
                         f"assembly {list(TSS_GENOMES)}, a DataFrame of gene TSS positions (gene "
                         "names as index or a 'gene' column; columns 'chrom', 'tss', optionally "
                         "'strand'), or None (no gene activity): with it, ATAC peaks are aligned "
                         f"through their gene activity; got {tss!r}.")
    tss = None if isinstance(tss, str) and tss == "auto" else tss
    linked = params["linked"]
    if not (linked is None or (isinstance(linked, str) and linked == "auto")
            or isinstance(linked, pd.DataFrame)):
        raise ValueError("linked must be 'auto' (fused GW on the feature names both datasets share, when "
                         f"there are >= {MIN_LINKED}), None (plain GW), or a DataFrame with one column "
                         f"per dataset name listing linked features; got {type(linked).__name__}.")
    if tss is not None and not (isinstance(linked, str) and linked == "auto"):
        given = "linked=None (plain GW)" if linked is None else "a linked table"
        raise ValueError(f"tss was given together with {given}: tss links the ATAC peaks to the genes "
                         "through their gene activity, which replaces the linked features. Pass either "
                         "tss= (with linked='auto', the default) or linked=, not both.")


def fit(data, params: dict[str, Any], *, seed: int, progress: bool,
        announce: bool = True) -> tuple[_gw.Alignment, dict[str, Any], dict[str, dict]]:
    """GW alignment of two validated :class:`scferry.data.Dataset` objects; returns the alignment,
    the plain settings used and the choices made for the user (warned when ``announce``)."""
    if len(data) != 2:
        raise ValueError(f"GW alignment takes exactly two datasets (modalities); got {len(data)} "
                         f"({[d.name for d in data]}). Align them pairwise against one reference.")
    names = [d.name for d in data]
    kinds_given = dict(params.get("kinds") or {})
    unknown = sorted(set(kinds_given) - set(names))
    if unknown:
        raise ValueError(f"kinds names {unknown}, not datasets {names}.")
    mats = [d.counts() for d in data]
    choices: dict[str, dict] = {}
    kinds = []
    for d, X in zip(data, mats):
        kind = kinds_given.get(d.name) or _gw.guess_kind(X, d.adata.var, d.var_names)
        if d.name not in kinds_given:
            record_choice(choices, f"kind_{d.name}", kind,
                          f"dataset {d.name!r} preprocessed as {kind!r} (guessed from its values and "
                          f"feature names; pass kinds={{{d.name!r}: ...}} to choose)")
        kinds.append(kind)
    linked = params.get("linked", "auto")
    tss = params.get("tss")
    auto = isinstance(tss, str) and tss == "auto"
    if auto:
        tss = _auto_tss(data, kinds, linked, choices)
    elif tss is not None:
        _check_tss_applies(names, kinds)
        if isinstance(tss, str):
            from ..tl.peak_gene import tss_table
            tss = tss_table(tss)
    pair = L = None
    if isinstance(linked, pd.DataFrame):
        missing = [n for n in names if n not in linked.columns]
        if missing:
            raise ValueError(f"linked needs one column per dataset {names}; missing {missing}.")
        pair = [list(map(str, linked[n])) for n in names]
    elif tss is not None:  # linked == "auto" and one peaks dataset (checked above)
        try:
            L, pair = _gene_activity_link(data, mats, kinds, tss, choices)
        except ValueError as e:  # tss="auto" falls back to plain GW, and says why
            if not auto:
                raise
            record_choice(choices, "tss", None, f"{choices['tss']['reason']}; but {e} So plain GW "
                          "aligns them, which matches peaks to RNA poorly")
    elif linked == "auto":
        shared = data[0].var_names.intersection(data[1].var_names)
        if len(shared) >= MIN_LINKED:
            pair = [list(shared), list(shared)]
            record_choice(choices, "fused", len(shared),
                          f"fused GW on the {len(shared)} feature names both datasets share (pass "
                          "linked=None for plain GW)")
    if pair is not None and L is None:
        idx = [d.var_names.get_indexer(p) for d, p in zip(data, pair)]
        bad = [n for n, i in zip(names, idx) if (i < 0).any()]
        if bad:
            raise ValueError(f"linked lists features that datasets {bad} do not have.")
        L = tuple(X[:, i] for X, i in zip(mats, idx))
    kw = {k: params[k] for k in _gw.DEFAULTS}
    al = _gw.align(mats[0], mats[1], kinds=tuple(kinds), linked=L, seed=seed, progress=progress, **kw)
    if announce:
        for c in choices.values():
            warnings.warn(f"scferry gw: {c['reason']}.", ScferryWarning, stacklevel=4)
    plain = {**kw, **al.params, "linked": None if pair is None else len(pair[0])}
    return al, plain, choices


def _check_tss_applies(names: list[str], kinds: list[str]) -> None:
    """``tss=`` is used only with exactly one ATAC peaks dataset (``linked="auto"`` is checked in
    :func:`check_params`): anything else would silently ignore it, so it is an error."""
    n_peaks = kinds.count("peaks")
    if n_peaks != 1:
        seen = ", ".join(f"{n!r}: {k!r}" for n, k in zip(names, kinds))
        what = "neither dataset is" if n_peaks == 0 else "both datasets are"
        raise ValueError(f"tss was given, but {what} ATAC peaks (kinds {{{seen}}}): the TSS table is used "
                         "only to derive one peaks dataset's gene activity. Drop tss=, or pass "
                         "kinds={name: 'peaks'} naming the one peaks dataset.")


def _peak_coordinates(peaks) -> pd.DataFrame | None:
    """The peaks' ``chrom``, ``start``, ``end``: from ``var`` columns, else parsed from every peak
    name (``chr1:100-600``, ``chr1-100-600``, ``chr1_100_600``, as Signac and 10x name them);
    None when neither gives them."""
    var = peaks.adata.var
    if {"chrom", "start", "end"} <= set(var.columns):
        return var[["chrom", "start", "end"]].copy()
    parts = pd.Index(peaks.var_names).astype(str).str.extract(PEAK_NAME)
    if parts.isna().any().any():
        return None
    return pd.DataFrame({"chrom": parts[0].to_numpy(),
                         "start": parts[1].astype(np.int64).to_numpy(),
                         "end": parts[2].astype(np.int64).to_numpy()}, index=peaks.var_names)


def _auto_tss(data, kinds: list[str], linked, choices: dict) -> pd.DataFrame | None:
    """``tss="auto"``: with one ATAC peaks dataset and one other, nothing else linking them
    (``linked="auto"`` and fewer than ``MIN_LINKED`` shared names) and peak coordinates, the
    peaks are read as the shipped assembly whose TSSs the most of them lie near
    (:func:`scferry.tl.peak_gene.promoter_fractions`), if that fraction is at least
    ``AUTO_TSS_MIN_FRACTION`` and ``AUTO_TSS_MIN_RATIO`` times the next assembly's and the other
    dataset has at least ``MIN_LINKED`` of its genes; its TSS table is returned. Either way the
    outcome is recorded (and announced) when the rest applies."""
    from ..tl.peak_gene import PROMOTER_BP, promoter_fractions, tss_table
    if not (isinstance(linked, str) and linked == "auto") or kinds.count("peaks") != 1:
        return None
    ip = kinds.index("peaks")
    peaks, other = data[ip], data[1 - ip]
    if len(peaks.var_names.intersection(other.var_names)) >= MIN_LINKED:
        return None  # shared names link them (fused GW on those)
    coords = _peak_coordinates(peaks)
    how = (f"pass tss= a TSS table or one of the shipped assemblies to link the peaks of "
           f"{peaks.name!r} to the genes of {other.name!r} through their gene activity")
    if coords is None:
        record_choice(choices, "tss", None,
                      f"dataset {peaks.name!r} is read as ATAC peaks but has no peak coordinates "
                      "(var columns 'chrom', 'start', 'end' or names such as 'chr1-100-600'), so "
                      f"plain GW aligns it, which matches peaks to RNA poorly; {how}")
        return None
    frac = promoter_fractions(AnnData(var=coords))
    ranked = sorted(frac, key=frac.get, reverse=True)
    best, second = ranked[0], ranked[1]
    shown = ", ".join(f"{g} {100 * frac[g]:.1f}%" for g in ranked)
    table = tss_table(best)
    n_genes = len(other.var_names.intersection(pd.Index(table["gene"])))
    if frac[best] < AUTO_TSS_MIN_FRACTION or frac[best] < AUTO_TSS_MIN_RATIO * frac[second] \
            or n_genes < MIN_LINKED:
        why = (f"only {n_genes} of {other.name!r}'s gene names are in {best}'s table"
               if n_genes < MIN_LINKED else "no assembly stands out")
        record_choice(choices, "tss", None,
                      f"the peaks of {peaks.name!r} near the TSSs of the shipped assemblies: "
                      f"{shown}; {why}, so plain GW aligns them, which matches peaks to RNA "
                      f"poorly; {how}")
        return None
    record_choice(choices, "tss", best,
                  f"the peaks of {peaks.name!r} read as assembly {best} (peaks within "
                  f"{PROMOTER_BP / 1000:g} kb of its TSSs: {shown}); their gene activity links "
                  f"them to {other.name!r}'s genes (pass tss= another assembly or table to "
                  "choose, tss=None for plain GW)")
    return table


def _gene_activity_link(data, mats, kinds, tss: pd.DataFrame, choices: dict) -> tuple[tuple, list]:
    """Peaks aligned through their own gene activity: the peaks dataset's gene activity
    (:func:`scferry.tl.gene_activity` at its defaults: MAESTRO's regulatory potential) is linked to the other dataset's
    genes of the same name, for the fused term. Returns the linked matrices ``(X, Y)`` and the
    linked feature names, and records the choice."""
    from ..tl.peak_gene import gene_activity
    ip = kinds.index("peaks")
    peaks, other = data[ip], data[1 - ip]
    coords = _peak_coordinates(peaks)
    if coords is None:
        raise ValueError(f"tss was given but dataset {peaks.name!r} has no peak coordinates: its "
                         "var needs columns 'chrom', 'start', 'end' (or peak names such as "
                         "'chr1-100-600') to derive gene activity.")
    view = AnnData(mats[ip], var=coords)
    ga = gene_activity(view, tss)
    genes = other.var_names.intersection(ga.var_names)
    if len(genes) < MIN_LINKED:
        raise ValueError(f"tss was given, but only {len(genes)} genes of dataset {other.name!r} have peaks of "
                         f"{peaks.name!r} in their window (need >= {MIN_LINKED}): do the gene names of tss "
                         f"match {other.name!r}'s var_names (symbols vs Ensembl ids)?")
    linked = [None, None]
    linked[ip] = ga.X[:, ga.var_names.get_indexer(genes)]
    linked[1 - ip] = mats[1 - ip][:, other.var_names.get_indexer(genes)]
    record_choice(choices, "fused", len(genes),
                  f"fused GW on the gene activity of {peaks.name!r} (scferry.tl.gene_activity: peaks within "
                  f"{ga.uns['gene_activity']['upstream'] // 1000} kb of each TSS, weighted by distance with a "
                  f"{ga.uns['gene_activity']['half_life'] / 1000:g} kb half-life) linked to the {len(genes)} genes of "
                  f"{other.name!r} with the same names (pass linked=None for plain GW)")
    return tuple(linked), [list(genes), list(genes)]


def embedding(al: _gw.Alignment, record: dict[str, Any], refine: int, *, seed: int,
              progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """The joint embedding of a GW alignment: :meth:`scferry.gw.Alignment.refined` after ``refine``
    rounds, :meth:`scferry.gw.Alignment.joint` when ``refine`` is 0. Records ``refine`` (and the
    refinement's canonical correlations and pivots' distances) in ``record``."""
    record["refine"] = int(refine)
    if not refine:
        return al.joint()
    z, info = al.refined(int(refine), seed=seed, progress=progress)
    info.pop("pivots", None)
    record["refine_info"] = info
    return z


def integrate_gw(datasets: Mapping[str, AnnData] | Sequence[AnnData] | AnnData, *,
                 batch_key: str | None = None, layer: str | None = None, seed: int = 0,
                 progress: bool = True, **params: Any) -> GWModel:
    """``scferry.integrate(datasets, method="gw", **params)``: see the module docstring."""
    unknown = sorted(set(params) - set(DEFAULTS))
    if unknown:
        raise TypeError(f"unknown parameter(s) {unknown} for method 'gw'; its parameters: "
                        f"{sorted(DEFAULTS)}.")
    hp = {**DEFAULTS, **params}
    check_params(hp)
    if not isinstance(seed, int):
        raise TypeError(f"seed must be an int; got {seed!r}.")
    data = collect_datasets(datasets, batch_key=batch_key, layer=layer, allow_negative=True)
    al, plain, choices = fit(data, hp, seed=seed, progress=progress)
    model = GWModel(al, data, plain, choices)
    from ..model import Model, EMBEDDING_KEY
    z = embedding(al, model.params, hp["refine"], seed=seed, progress=progress)
    Model.write_embedding(model, {d.name: e for d, e in zip(data, z)}, EMBEDDING_KEY)
    return model
