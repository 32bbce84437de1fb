"""Preprocessing shared by the methods: library-size normalisation, log1p, highly variable
genes (common across datasets and specific to each), and per-dataset MaxAbs scaling.

Everything works on sparse copies; the user's AnnData objects are never touched. The fitted
parameters (gene lists, scale factors) are kept in a :class:`Preprocessing` so that new cells can
be transformed the same way (``project``, ``impute``) and saved with the model.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import scipy.sparse as sp
import scanpy as sc
from anndata import AnnData

from .data import Dataset

TARGET_SUM = 1e4


def normalize_log1p(X: sp.csr_matrix, target_sum: float = TARGET_SUM) -> sp.csr_matrix:
    """Counts per ``target_sum`` then log1p, on a CSR copy."""
    X = sp.csr_matrix(X, dtype=np.float32, copy=True)
    totals = np.asarray(X.sum(axis=1)).ravel()
    scale = np.divide(target_sum, totals, out=np.zeros_like(totals), where=totals > 0)
    X.data *= np.repeat(scale, np.diff(X.indptr)).astype(np.float32)
    np.log1p(X.data, out=X.data)
    return X


def pca(X, n: int, seed: int) -> np.ndarray:
    """Centred PCA of a dense cells x features matrix to ``n`` components (capped by the shape),
    as float32; ``seed`` seeds the randomized solver (used when ``n`` is small against the shape).
    With ``n`` >= the number of features the data are centred only (a rotation would not change
    distances)."""
    from sklearn.decomposition import PCA
    X = np.asarray(X, dtype=np.float32)
    n = max(1, min(n, X.shape[1], X.shape[0] - 1))
    if n >= X.shape[1]:
        return (X - X.mean(0)).astype(np.float32)
    solver = "randomized" if min(X.shape) > 4 * n else "full"
    return PCA(n, svd_solver=solver, random_state=seed).fit_transform(X).astype(np.float32)


def zscore(X, clip: float = 10.0, mean=None, sd=None) -> np.ndarray:
    """Each column centred and scaled to unit variance (``ddof=1``; constant columns 0), clipped
    to +-``clip`` (scanpy's ``scale(max_value=10)``), as dense float32. ``mean`` and ``sd`` given:
    scaled with those column statistics (e.g. of all cells, for a chunk of them)."""
    X = np.asarray(X.toarray() if sp.issparse(X) else X, dtype=np.float64)
    if mean is None:
        mean = X.mean(axis=0)
    if sd is None:
        sd = X.std(axis=0, ddof=1) if len(X) > 1 else np.zeros(X.shape[1])
    Z = np.divide(X - mean, sd, out=np.zeros_like(X), where=sd > 0)
    return np.clip(Z, -clip, clip).astype(np.float32)


def variable_columns(X: sp.csr_matrix, n: int) -> np.ndarray:
    """Indices (ascending) of the ``n`` columns of highest variance, those of zero variance left out."""
    mean = np.asarray(X.mean(axis=0)).ravel()
    var = np.asarray(X.multiply(X).mean(axis=0)).ravel() - mean ** 2
    return _top_variance(var, n)


def _top_variance(var: np.ndarray, n: int) -> np.ndarray:
    keep = np.argsort(-var)[:min(n, len(var))]
    return np.sort(keep[var[keep] > 0])


# joint_pca: cells the components are fitted on at most (a seeded random subset beyond that; every
# cell is then projected)
JOINT_PCA_FIT_CELLS = 50_000


def joint_pca(datasets: list[Dataset], genes: pd.Index, *, n_features: int = 2000,
              n_components: int = 30, scale: bool = True, seed: int = 0,
              fit_cells: int | None = None, chunk: int | None = None) -> list[np.ndarray]:
    """All datasets' cells in one PCA of their shared ``genes``: counts per 1e4, log1p, the
    ``n_features`` genes of highest variance over all cells, each scaled to unit variance over all
    cells (clipped at 10), ``n_components`` components (the Seurat / scanpy recipe). With
    ``scale=False`` the genes are only centred, so each weighs by its variance. Returns one
    cells x components array per dataset (float32).

    Memory does not grow with cells x genes: the statistics come from one pass over chunks of
    ``chunk`` cells (default ``scferry.ondisk.CHUNK``; datasets on disk are read chunk by chunk),
    the components are fitted on at most ``fit_cells`` cells (default :data:`JOINT_PCA_FIT_CELLS`;
    a random subset drawn with ``seed`` beyond that, as scanpy's ``chunked`` / subsampled PCA),
    and every cell is projected in chunks."""
    from sklearn.decomposition import PCA
    from . import ondisk
    from .ondisk import read_rows, row_chunks
    chunk = int(chunk or ondisk.CHUNK)
    fit_cells = int(fit_cells or JOINT_PCA_FIT_CELLS)
    cols = [pd.Index(d.var_names).get_indexer(genes) for d in datasets]

    def chunks(d, c):  # normalised log1p chunks of dataset d on the shared genes, in row order
        for X in row_chunks(d, chunk):
            yield normalize_log1p(X[:, c]).astype(np.float64)

    n = sum(d.n_obs for d in datasets)
    s1, s2 = np.zeros(len(genes)), np.zeros(len(genes))
    for d, c in zip(datasets, cols):
        for X in chunks(d, c):
            s1 += np.asarray(X.sum(axis=0)).ravel()
            s2 += np.asarray(X.multiply(X).sum(axis=0)).ravel()
    mean = s1 / n
    var = s2 / n - mean ** 2
    keep = _top_variance(var, n_features)
    sd = np.sqrt(np.maximum(var[keep], 0) * n / max(n - 1, 1))
    mu = mean[keep]

    # with the statistics of all cells; scale=False: centred only, not clipped
    col_sd, clip = (sd, 10.0) if scale else (np.ones_like(sd), np.inf)

    def scaled(X):
        return zscore(X[:, keep], clip=clip, mean=mu, sd=col_sd)

    offsets = np.cumsum([0] + [d.n_obs for d in datasets])
    picked = np.sort(np.random.default_rng(seed).choice(n, fit_cells, replace=False)) if n > fit_cells \
        else np.arange(n)
    fit = []
    for d, c, lo, hi in zip(datasets, cols, offsets[:-1], offsets[1:]):
        rows = picked[(picked >= lo) & (picked < hi)] - lo
        for start in range(0, len(rows), chunk):
            part = read_rows(d, rows[start:start + chunk])[:, c]
            fit.append(scaled(normalize_log1p(part).astype(np.float64)))
    fit = np.vstack(fit)
    k = max(1, min(n_components, fit.shape[1], fit.shape[0] - 1))
    if k >= fit.shape[1]:  # as pca(): a rotation would not change distances, centre only
        centre = fit.mean(0)
        project = lambda Z: Z - centre  # noqa: E731
    else:
        solver = "randomized" if min(fit.shape) > 4 * k else "full"
        project = PCA(k, svd_solver=solver, random_state=seed).fit(fit).transform
    del fit
    return [np.vstack([project(scaled(X)).astype(np.float32) for X in chunks(d, c)])
            if d.n_obs else np.zeros((0, k), np.float32) for d, c in zip(datasets, cols)]


def highly_variable(X: sp.csr_matrix, genes: pd.Index, n_top: int, batches=None) -> pd.Index:
    """Top ``n_top`` highly variable genes (scanpy's 'seurat' flavour on log data), in input order."""
    if n_top >= len(genes):
        return genes
    ad = AnnData(X, var=pd.DataFrame(index=genes))
    if batches is not None:
        ad.obs["batch"] = pd.Categorical(batches)
    hv = sc.pp.highly_variable_genes(
        ad, n_top_genes=n_top, batch_key="batch" if batches is not None else None,
        flavor="seurat", inplace=False, subset=False,
    )
    return genes[np.asarray(hv["highly_variable"], dtype=bool)]


# How a modality's own ("specific") features are chosen: "variable" = the highly variable genes
# above (scanpy's seurat flavour); "open" = the features non-zero in the most cells (for ATAC peaks:
# the most often accessible peaks, as Signac's FindTopFeatures and ArchR's top accessible tiles).
FEATURE_SELECTIONS = ("variable", "open")


def top_open(n_cells: np.ndarray, genes: pd.Index, n_top: int) -> pd.Index:
    """The ``n_top`` features non-zero in the most cells (``n_cells[i]``: cells where feature i is
    non-zero; ties by position), in input order. On near-binary, sparse data such as ATAC peaks the
    seurat flavour ranks the rarest features highest (a rare peak's dispersion is largest), so a
    nucleus has few or no reads among them; the most often open peaks carry most of its reads."""
    if n_top >= len(genes):
        return genes
    order = np.argsort(-np.asarray(n_cells), kind="stable")[:n_top]
    return genes[np.sort(order)]


# A paired method's default number of a modality's own features (``n_specific_genes=None``): a
# modality with under SPARSE_DENSITY of its entries non-zero (e.g. ATAC peaks) gets SPARSE_FEATURES,
# any other DENSE_FEATURES. Why: each modality must place a held-apart cell alone, and of 2,000
# peaks a nucleus has a handful of reads (bench/multiome/RESULTS.md).
SPARSE_FEATURES, DENSE_FEATURES, SPARSE_DENSITY = 10000, 2000, 0.02


def head_rows(datasets) -> dict:
    """Each dataset's first (up to) 2,000 cells, read once: what :func:`specific_feature_counts`
    and :func:`resolve_feature_selection` judge a modality by (its density, its kind)."""
    from .ondisk import read_rows
    return {d.name: read_rows(d, np.arange(min(d.n_obs, 2000))) for d in datasets}


def specific_feature_counts(given, datasets, by_sparsity: bool = True, heads: dict | None = None,
                            sparse_features: int = SPARSE_FEATURES) -> int | dict[str, int]:
    """``n_specific_genes`` resolved: the user's integer, their dict (one entry per dataset), or
    by default per dataset by its sparsity (``by_sparsity``; density from up to 2,000 cells,
    ``heads`` as :func:`head_rows` returns them, read here when not given: ``sparse_features``
    for a sparse one), else DENSE_FEATURES."""
    names = [d.name for d in datasets]
    if isinstance(given, dict):
        if set(given) != set(names):
            raise ValueError(f"n_specific_genes as a dict needs one entry per dataset {names}; got "
                             f"{sorted(map(str, given))}.")
        return {n: int(given[n]) for n in names}
    if given is not None:
        return int(given)
    if not by_sparsity:
        return DENSE_FEATURES
    heads = heads if heads is not None else head_rows(datasets)
    out = {}
    for d in datasets:
        X = heads[d.name]
        sparse = X.nnz < SPARSE_DENSITY * X.shape[0] * X.shape[1]
        out[d.name] = sparse_features if sparse else DENSE_FEATURES
    return out


def check_feature_selection(value, key: str = "feature_selection") -> None:
    """None (by data kind), one of :data:`FEATURE_SELECTIONS`, or a dict dataset -> one of them."""
    vals = value.values() if isinstance(value, dict) else [value]
    if value is not None and not all(v in FEATURE_SELECTIONS for v in vals):
        raise ValueError(f"{key} must be None (by data kind: 'open' for ATAC peaks, 'variable' "
                         f"otherwise), 'variable' (highly variable genes), 'open' (the features "
                         f"non-zero in the most cells), or a dict dataset name -> one of them; got {value!r}.")


def resolve_feature_selection(given, datasets, choices: dict, who: str, counts=None,
                              stacklevel: int = 3, heads: dict | None = None) -> dict[str, str]:
    """Per dataset, how its own features are chosen. ``None``: by the modality's kind
    (:func:`scferry.gw.guess_kind`, from values and feature names): "open" for ATAC peaks,
    "variable" otherwise; a peaks choice is announced and recorded in ``choices`` (with the number
    of features, ``counts``: as :func:`specific_feature_counts` returns it, when given)."""
    from .errors import record_choice
    from .gw import guess_kind
    names = [d.name for d in datasets]
    if isinstance(given, dict):
        if set(given) != set(names):
            raise ValueError(f"feature_selection as a dict needs one entry per dataset {names}; got "
                             f"{sorted(map(str, given))}.")
        return {n: given[n] for n in names}
    if given is not None:
        return {n: given for n in names}
    heads = heads if heads is not None else head_rows(datasets)
    out = {}
    for d in datasets:  # the kind from up to 2,000 cells
        X = heads[d.name]
        out[d.name] = "open" if guess_kind(X, d.adata.var, d.var_names) == "peaks" else "variable"
    peaks = [n for n, v in out.items() if v == "open"]
    if peaks:
        size = {d.name: d.adata.n_vars for d in datasets}
        many = "" if counts is None else " " + ", ".join(
            f"{min(counts[n] if isinstance(counts, dict) else counts, size[n]):,}" for n in peaks)
        record_choice(choices, "feature_selection", "open",  # a string (R shows it); per dataset in params
                      f"{', '.join(map(repr, peaks))} look like ATAC peaks (peak coordinates): their "
                      "features are the peaks open in the most cells, not the highly variable ones",
                      f"{who}: {', '.join(map(repr, peaks))} look like ATAC peaks, so their input "
                      f"features are the{many} peaks open in the most cells (as Signac / ArchR select "
                      "them), not the highly variable ones (on sparse binary data those are the rarest "
                      "peaks). Pass feature_selection='variable' for the paper's choice, or a dict per "
                      "dataset.",
                      stacklevel=stacklevel)
    return out


def scale_columns(X: sp.csr_matrix, scale: np.ndarray, clip: bool = False) -> sp.csr_matrix:
    X = sp.csr_matrix(X @ sp.diags(scale.astype(np.float32)), dtype=np.float32)
    if clip:  # new cells may exceed the training maximum; the decoders' range is [0, 1]
        np.minimum(X.data, 1.0, out=X.data)
    return X


def select(X: sp.csr_matrix, var_names: pd.Index, genes: pd.Index) -> sp.csr_matrix:
    return X[:, var_names.get_indexer(genes)]


@dataclass
class Preprocessing:
    """Fitted preprocessing: the common genes, each dataset's specific genes and scale factors."""

    common_genes: list[str]
    specific_genes: dict[str, list[str]] = field(default_factory=dict)
    common_scale: dict[str, np.ndarray] = field(default_factory=dict)
    specific_scale: dict[str, np.ndarray] = field(default_factory=dict)
    normalize: bool = True
    target_sum: float = TARGET_SUM
    scaled: bool = True  # MaxAbs-scaled to [0, 1] (False: the scales are 1, values unbounded)

    def transform(self, X: sp.csr_matrix, var_names: pd.Index, dataset: str, view: str = "common",
                  clip: bool = False) -> sp.csr_matrix:
        """Map counts of cells from ``dataset`` (or new cells of its kind) to a model input view."""
        genes = pd.Index(self.common_genes if view == "common" else self.specific_genes[dataset])
        scale = (self.common_scale if view == "common" else self.specific_scale)[dataset]
        if self.normalize:
            X = normalize_log1p(X, self.target_sum)
        return scale_columns(select(X, var_names, genes), scale, clip=clip and self.scaled)

    def state_dict(self) -> dict:
        return {
            "common_genes": list(self.common_genes),
            "specific_genes": {k: list(v) for k, v in self.specific_genes.items()},
            "common_scale": {k: v.tolist() for k, v in self.common_scale.items()},
            "specific_scale": {k: v.tolist() for k, v in self.specific_scale.items()},
            "normalize": self.normalize,
            "target_sum": float(self.target_sum),
            "scaled": self.scaled,
        }

    @classmethod
    def from_state_dict(cls, d: dict) -> "Preprocessing":
        as_arr = lambda m: {k: np.asarray(v, dtype=np.float32) for k, v in m.items()}  # noqa: E731
        return cls(d["common_genes"], d["specific_genes"], as_arr(d["common_scale"]),
                   as_arr(d["specific_scale"]), d["normalize"], d["target_sum"],
                   d.get("scaled", True))


def fit_transform(datasets: list[Dataset], *, n_common: int = 2000, n_specific: int | dict[str, int] = 2000,
                  normalize: bool = True, scale: bool = True,
                  extra_specific: dict[str, list[str]] | None = None,
                  selection: dict[str, str] | None = None,
                  ) -> tuple[Preprocessing, dict[str, dict[str, sp.csr_matrix]]]:
    """uniPort's preprocessing (paper, Methods): returns the fitted parameters and, per dataset,
    the model inputs ``{"common": cells x common HVGs, "specific": cells x dataset HVGs}``, CSR
    float32 scaled to [0, 1] (no "common" view and no shared genes needed when ``n_common=0``). With ``normalize=False`` the inputs are taken as already normalised
    (and must then lie in [0, 1] after MaxAbs scaling, which holds for any nonnegative data).
    ``scale=False`` skips the MaxAbs scaling (scale factors 1; DAVAE models log values).
    ``extra_specific``: per dataset, genes added to its specific set (e.g. genes to impute).
    ``n_specific`` as a dict: dataset name -> its number of specific genes. ``selection``: per
    dataset, how its specific genes are chosen (:data:`FEATURE_SELECTIONS`; default "variable")."""
    # n_common=0: the method reads only each dataset's own features (vertical / diagonal
    # integration, e.g. RNA + ATAC peaks), so no shared feature names are needed.
    # One pass over chunks of cells per dataset gives the statistics (the highly variable genes
    # from per-gene sums, the MaxAbs scales from per-gene maxima); the model inputs are then
    # built chunk by chunk into arrays allocated once: no whole copy of the counts, of their log,
    # or of all datasets stacked is ever made (scferry.ondisk).
    from . import ondisk
    return ondisk.fit_transform(datasets, n_common=n_common, n_specific=n_specific, normalize=normalize,
                                scale=scale, extra_specific=extra_specific, selection=selection,
                                materialized=True)
