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
                  ) -> tuple[Preprocessing, dict[str, dict[str, sp.csr_matrix]]]:
    """uniPort's preprocessing (paper, Methods): returns the fitted parameters and, per dataset,
    the model inputs ``{"common": cells x common HVGs, "specific": cells x dataset HVGs}``, CSR
    float32 scaled to [0, 1] (no "common" view and no shared genes needed when ``n_common=0``). With ``normalize=False`` the inputs are taken as already normalised
    (and must then lie in [0, 1] after MaxAbs scaling, which holds for any nonnegative data).
    ``scale=False`` skips the MaxAbs scaling (scale factors 1; DAVAE models log values).
    ``extra_specific``: per dataset, genes added to its specific set (e.g. genes to impute).
    ``n_specific`` as a dict: dataset name -> its number of specific genes."""
    # n_common=0: the method reads only each dataset's own features (vertical / diagonal
    # integration, e.g. RNA + ATAC peaks), so no shared feature names are needed.
    # One pass over chunks of cells per dataset gives the statistics (the highly variable genes
    # from per-gene sums, the MaxAbs scales from per-gene maxima); the model inputs are then
    # built chunk by chunk into arrays allocated once: no whole copy of the counts, of their log,
    # or of all datasets stacked is ever made (scferry.ondisk).
    from . import ondisk
    return ondisk.fit_transform(datasets, n_common=n_common, n_specific=n_specific, normalize=normalize,
                                scale=scale, extra_specific=extra_specific, materialized=True)
