"""Which cells each training step reads: the minibatch index stream, shared by the in-memory
sampler (``scferry.train.MinibatchSampler``), distributed training and on-disk loaders.

:class:`IndexSampler` knows only how many cells each dataset has; it yields, per step, one
array of row positions per dataset. It reads no data, so any loader (sparse matrices in memory,
a backed AnnData, a zarr store) can turn its positions into a minibatch.

Epochs: each dataset is walked in a shuffled order without replacement; when fewer than one
step's cells are left, a new permutation is drawn (a fresh shuffle per epoch of that dataset).
Datasets with different sizes start their epochs at different steps; paired datasets (the same
cells in every dataset) share one index stream, so a step reads the same rows from each.

Distributed training (``world_size`` processes): every process holds a generator seeded alike,
so all draw the same permutations; in each step, process ``rank`` takes the ``rank``-th of
``world_size`` consecutive, disjoint slices of ``batch_sizes[d]`` positions. Over one step the
processes read disjoint cells, and together they read ``world_size * batch_sizes[d]`` cells of
dataset ``d``. With ``world_size=1`` the stream is exactly that of a single process.
"""
from __future__ import annotations

from collections.abc import Sequence
from numbers import Integral

import numpy as np


class IndexSampler:
    """Row positions of each step's minibatch, per dataset.

    Parameters
    ----------
    n_cells
        Number of cells of each dataset. With ``paired=True`` all must be equal.
    batch_sizes
        Cells drawn from each dataset per step, per process (``world_size * batch_sizes[d]``
        must not exceed ``n_cells[d]``).
    rng
        A ``numpy.random.Generator``, or an integer seed. Distributed: the same seed on every
        process (the processes must draw the same permutations).
    paired
        The datasets hold the same cells (in the same order): one stream for all.
    rank, world_size
        This process's rank among ``world_size`` training processes.

    Calling the sampler (or ``next(sampler)``) returns ``[rows_0, rows_1, ...]``, one int64
    array per dataset. ``epoch[d]`` counts the permutations drawn for dataset ``d``.
    """

    def __init__(self, n_cells: Sequence[int], batch_sizes: Sequence[int],
                 rng: np.random.Generator | int, *, paired: bool = False, rank: int = 0,
                 world_size: int = 1):
        n_cells, batch_sizes = list(n_cells), list(batch_sizes)
        if not n_cells or len(n_cells) != len(batch_sizes):
            raise ValueError(f"n_cells and batch_sizes need one entry per dataset; got {n_cells} and "
                             f"{batch_sizes}.")
        if not all(isinstance(v, Integral) and v >= 1 for v in n_cells + batch_sizes):
            raise ValueError(f"n_cells and batch_sizes must be positive integers; got {n_cells} and "
                             f"{batch_sizes}.")
        if not (isinstance(world_size, Integral) and world_size >= 1
                and isinstance(rank, Integral) and 0 <= rank < world_size):
            raise ValueError(f"rank must be in [0, world_size) and world_size >= 1; got rank={rank}, "
                             f"world_size={world_size}.")
        for d, (n, b) in enumerate(zip(n_cells, batch_sizes)):
            if b * world_size > n:
                raise ValueError(f"dataset {d} has {n} cells, fewer than {world_size} process(es) x "
                                 f"{b} cells per step; lower the batch size or the number of devices.")
        if paired and len(set(n_cells)) != 1:
            raise ValueError(f"paired datasets must have the same number of cells; got {n_cells}.")
        if paired and len(set(batch_sizes)) != 1:
            raise ValueError(f"paired datasets share one index stream, so one batch size; got {batch_sizes}.")
        self.n_cells, self.batch_sizes, self.paired = [int(n) for n in n_cells], [int(b) for b in batch_sizes], paired
        self.rank, self.world_size = int(rank), int(world_size)
        self.rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
        streams = 1 if paired else len(n_cells)
        self._order = [np.empty(0, dtype=np.int64) for _ in range(streams)]
        self._pos = [0] * streams
        self.epoch = [0] * streams

    def _next_rows(self, d: int) -> np.ndarray:
        b, span = self.batch_sizes[d], self.batch_sizes[d] * self.world_size
        if self._pos[d] + span > len(self._order[d]):  # new epoch for this dataset
            self._order[d] = self.rng.permutation(self.n_cells[d])
            self._pos[d] = 0
            self.epoch[d] += 1
        start = self._pos[d] + self.rank * b
        self._pos[d] += span
        return self._order[d][start: start + b]

    def __call__(self) -> list[np.ndarray]:
        if self.paired:
            rows = self._next_rows(0)
            return [rows] * len(self.n_cells)
        return [self._next_rows(d) for d in range(len(self.n_cells))]

    __next__ = __call__

    def __iter__(self):
        return self

    def steps_per_epoch(self) -> int:
        """Steps until the largest dataset (in steps) has been read once by all processes."""
        return max(-(-n // (b * self.world_size)) for n, b in zip(self.n_cells, self.batch_sizes))


def batch_sizes(n_cells: Sequence[int], batch_size: int, world_size: int = 1) -> list[int]:
    """Split ``batch_size`` (cells per step and process) evenly over datasets; never more than a
    dataset can give each of ``world_size`` processes, never below 2 (batch norm needs two
    cells)."""
    per = max(2, batch_size // len(n_cells))
    return [min(per, n // world_size) for n in n_cells]
