"""Geometry of an embedding on the working device: the refine kNN, chunked graph arithmetic,
neighbour batch entropy (Eq. 8), neighbourhood overlap (Eq. 18), graph strain (Eq. 19),
trustworthiness (Eq. 22) and local sparsity (Eq. 1)."""
from __future__ import annotations

import torch

from ..neighbors import knn_torch

# sf.refine searches neighbours several times per iteration; on the CPU it switches to
# pynndescent above 10,000 cells (not scferry.neighbors.EXACT_MAX) to keep those searches fast.
_EXACT_CPU_MAX = 10_000
_BLOCK = 2 ** 24            # entries per chunk of any (rows x neighbours x dims) temporary


def _knn(X: torch.Tensor, k: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """k nearest neighbours of every row of X among the rows of X, itself excluded:
    (distances, indices), each (n, k), ascending (:func:`scferry.neighbors.knn_torch`)."""
    return knn_torch(X, k, seed, exact_max=_EXACT_CPU_MAX)


def _chunks(n: int, per_row: int):
    step = max(1, _BLOCK // max(per_row, 1))
    return (slice(s, min(s + step, n)) for s in range(0, n, step))


def _edge_ratio(X: torch.Tensor, idx: torch.Tensor, d0: torch.Tensor, rows: slice,
                move: torch.Tensor | None = None) -> torch.Tensor:
    """Edge lengths of the fixed graph (rows' edges) in X (+ move), over their input lengths."""
    xi, xj = X[rows], X[idx[rows]]
    if move is not None:
        xi, xj = xi + move[rows], xj + move[idx[rows]]
    return torch.linalg.vector_norm(xi[:, None, :] - xj, dim=2) / (d0[rows] + 1e-8)


def _graph_strain(X, idx0, d0, clip: float = 1.0) -> float:
    """Eq. 19: mean squared relative change of the input graph's edge lengths, clipped."""
    total = 0.0
    for rows in _chunks(X.shape[0], idx0.shape[1] * X.shape[1]):
        dev = (_edge_ratio(X, idx0, d0, rows) - 1.0).clamp_(-clip, clip)
        total += float((dev * dev).sum())
    return total / idx0.numel()


def _neighbour_mean(F: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    out = torch.empty_like(F)
    for rows in _chunks(F.shape[0], idx.shape[1] * F.shape[1]):
        out[rows] = F[idx[rows]].mean(1)
    return out


def _batch_entropy(idx: torch.Tensor, codes: torch.Tensor, n_batches: int) -> torch.Tensor:
    """Eq. 8: per-cell entropy (natural log) of the batch fractions among its neighbours."""
    counts = torch.zeros(idx.shape[0], n_batches, device=idx.device)
    counts.scatter_add_(1, codes[idx], torch.ones(idx.shape, device=idx.device))
    p = counts / idx.shape[1]
    return -(p * torch.log(p + 1e-12)).sum(1)


def _overlap(idx_a: torch.Tensor, idx_b: torch.Tensor) -> float:
    """Eq. 18: mean fraction of shared neighbours."""
    k = idx_a.shape[1]
    shared = 0.0
    for rows in _chunks(idx_a.shape[0], k * k):
        shared += float((idx_a[rows, :, None] == idx_b[rows, None, :]).sum())
    return shared / idx_a.numel()


def _trustworthiness(X0: torch.Tensor, X: torch.Tensor, k: int, seed: int) -> float:
    """Eq. 22 (scikit-learn's definition) from kNN lists and row blocks of distances."""
    n = X0.shape[0]
    k = min(k, max(1, n // 2 - 1))
    _, idx = _knn(X, k, seed)
    penalty = 0.0
    for rows in _chunks(n, n):
        r = torch.arange(rows.start, rows.stop, device=X0.device)
        d = torch.cdist(X0[rows], X0)
        d[r - rows.start, r] = -1.0  # the cell itself: first in every sorted row
        dj = d.gather(1, idx[rows])
        # #cells closer than j, the cell itself included = j's one-based rank among the others
        rank = torch.searchsorted(torch.sort(d, dim=1).values, dj.contiguous())
        penalty += float((rank - k).clamp_min(0).sum())
    return 1.0 - 2.0 / (n * k * (2.0 * n - 3.0 * k - 1.0)) * penalty


def _sparsity(X: torch.Tensor, k: int, seed: int) -> torch.Tensor:
    """Eq. 1: mean distance to the k nearest neighbours over its mean (1 = typical density)."""
    d, _ = _knn(X, min(k, X.shape[0] - 1), seed)
    dbar = d.mean(1)
    return dbar / (dbar.mean() + 1e-8) + 1e-8
