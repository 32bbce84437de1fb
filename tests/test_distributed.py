"""Distributed training (issue 20): the index sampler's shares, and 2 CPU processes (gloo)
against one process."""
from __future__ import annotations

import numpy as np
import pytest

from scferry.sampling import IndexSampler, batch_sizes


# ------------------------------------------------------------------------------------ sampler
def _steps(sampler, n):
    return [sampler() for _ in range(n)]


def test_ranks_draw_disjoint_cells_and_together_the_one_process_stream():
    n, b, world = [103, 57], [8, 5], 3
    ranks = [IndexSampler(n, b, 7, rank=r, world_size=world) for r in range(world)]
    whole = IndexSampler(n, [world * x for x in b], 7)  # one process, world x the batch
    for _ in range(40):  # several epochs of both datasets
        shares, full = [s() for s in ranks], whole()
        for d in range(len(n)):
            parts = [s[d] for s in shares]
            assert all(len(p) == b[d] for p in parts)
            cat = np.concatenate(parts)
            assert len(np.unique(cat)) == len(cat)  # disjoint across ranks within a step
            np.testing.assert_array_equal(cat, full[d])  # = one process reading world * b cells


def test_every_cell_once_per_epoch_and_a_fresh_shuffle_each_epoch():
    n, b, world = 60, 10, 2
    ranks = [IndexSampler([n], [b], 0, rank=r, world_size=world) for r in range(world)]
    epochs = []
    for _ in range(2):
        seen = np.concatenate([s()[0] for _ in range(n // (b * world)) for s in ranks])
        np.testing.assert_array_equal(np.sort(seen), np.arange(n))  # disjoint, complete
        epochs.append(seen)
    assert not np.array_equal(epochs[0], epochs[1])
    assert ranks[0].epoch == [2] and ranks[0].steps_per_epoch() == 3


def test_paired_datasets_share_one_stream():
    s = IndexSampler([50, 50], [6, 6], 3, paired=True, rank=1, world_size=2)
    for _ in range(12):
        a, c = s()
        np.testing.assert_array_equal(a, c)


def test_world_size_one_is_the_single_process_sampler():
    """The stream of one process is unchanged by the rank arguments' defaults: epochs drawn
    per dataset from one generator, in the order they run out."""
    n, b = [30, 11], [4, 4]
    s, rng = IndexSampler(n, b, np.random.default_rng(5)), np.random.default_rng(5)
    order, pos = [np.empty(0, int)] * 2, [0, 0]
    for _ in range(25):
        got = s()
        for d in range(2):
            if pos[d] + b[d] > len(order[d]):
                order[d], pos[d] = rng.permutation(n[d]), 0
            np.testing.assert_array_equal(got[d], order[d][pos[d]:pos[d] + b[d]])
            pos[d] += b[d]


def test_sampler_errors_in_user_terms():
    with pytest.raises(ValueError, match="fewer than 2 process"):
        IndexSampler([10], [6], 0, rank=0, world_size=2)
    with pytest.raises(ValueError, match="rank must be"):
        IndexSampler([10], [2], 0, rank=2, world_size=2)
    with pytest.raises(ValueError, match="same number of cells"):
        IndexSampler([10, 12], [2, 2], 0, paired=True)
    assert batch_sizes([100, 7], 64, world_size=2) == [32, 3]
