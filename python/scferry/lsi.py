"""A TF-IDF + LSI front-end for an encoder of ATAC peaks, fitted on the training cells and kept
with the model, so that new cells are transformed the same way (``sf.project`` / ``sf.impute``).

Latent semantic indexing is how peaks are read before any distance or network in the field's
ATAC pipelines: binarise, term frequency (each cell's open peaks over its number of open peaks)
times inverse document frequency (cells over the cells where the peak is open), log, then a
truncated SVD whose first component (sequencing depth) is dropped (Cusanovich et al., Science
2015; Signac, Stuart et al., Nat Methods 2021); GLUE's ATAC encoders read it instead of the peaks
(Cao & Gao, Nat Biotechnol 2022). Here the SVD loadings, the IDF and the components' training mean
and sd are buffers of the module: a fitted model maps any cell's peaks to the same coordinates.
"""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn

TF_SCALE = 1e4  # as scferry.gw's peaks path: log1p(tf * idf * 1e4)
FIT_CELLS = 20000  # at most this many (evenly spaced) training cells fit the SVD
CHUNK = 2000


def n_components(n_features: int, n_cells: int, wanted: int) -> int:
    """Components kept (after the first, dropped): at most ``wanted``, and fewer than the
    matrix's rank allows; at least 1."""
    return max(1, min(wanted, n_features - 2, n_cells - 2))


class LSI(nn.Module):
    """x (cells x peaks; any non-negative values, read as open where > 0) -> standardised LSI
    components 2..k+1 (cells x k). Call :meth:`fit` once on the training cells."""

    def __init__(self, n_features: int, k: int):
        super().__init__()
        self.register_buffer("idf", torch.ones(n_features))
        self.register_buffer("loadings", torch.zeros(n_features, k))
        self.register_buffer("center", torch.zeros(k))
        self.register_buffer("scale", torch.ones(k))

    def tfidf(self, x: torch.Tensor) -> torch.Tensor:
        b = (x > 0).to(self.idf.dtype)
        tf = b / b.sum(1, keepdim=True).clamp_min(1.0)
        return torch.log1p(tf * self.idf * TF_SCALE)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.tfidf(x) @ self.loadings - self.center) / self.scale

    @torch.no_grad()
    def fit(self, X, seed: int = 0) -> "LSI":
        """IDF from all rows of ``X`` (cells x peaks, sparse or dense), the SVD from up to
        FIT_CELLS of them; the components' mean and sd from the same cells."""
        from sklearn.decomposition import TruncatedSVD
        X = sp.csr_matrix(X)
        n = X.shape[0]
        df = np.asarray((X > 0).sum(axis=0), dtype=np.float64).ravel()
        self.idf.copy_(torch.from_numpy(n / np.maximum(df, 1.0)).to(self.idf.dtype))
        rows = np.unique(np.linspace(0, n - 1, min(n, FIT_CELLS)).astype(int))
        T = sp.vstack([sp.csr_matrix(self.tfidf(torch.from_numpy(X[rows[i:i + CHUNK]].toarray()).to(
            self.idf.dtype)).numpy()) for i in range(0, len(rows), CHUNK)]).tocsr()
        k = self.loadings.shape[1]
        svd = TruncatedSVD(k + 1, algorithm="randomized", random_state=seed).fit(T)
        self.loadings.copy_(torch.from_numpy(svd.components_[1:].T.copy()).to(self.idf.dtype))
        Z = torch.from_numpy(np.asarray(T @ svd.components_[1:].T)).to(self.idf.dtype)
        self.center.copy_(Z.mean(0))
        self.scale.copy_(Z.std(0).clamp_min(1e-6))
        return self
