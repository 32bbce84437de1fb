"""DAVAE's label-free neighbour terms (issue 16): ``structure_weight`` (each cell's own-dataset input
neighbours stay close in the latent; scDML / SMILE-style contrastive term) and ``mnn_weight``
(cross-dataset mutual nearest neighbours pulled together; iMAP / scDML), and the shared pieces
they use (``scferry.methods.base.neighbour_nce``, ``scferry.neighbors.mutual_pairs``)."""
import numpy as np
import pytest
import torch

import scferry as sf
from scferry.methods.base import neighbour_nce, neighbour_pull
from scferry.methods.davae import DAVAE
from scferry.neighbors import mutual_pairs
from helpers import assert_unchanged, snapshot, split

FAST = dict(max_iter=30, progress=False, n_common_genes=500, device="cpu")


def test_mutual_pairs_are_mutual_nearest_neighbours():
    rng = np.random.default_rng(0)
    A, B = rng.normal(size=(40, 3)), rng.normal(size=(30, 3))
    i, j = mutual_pairs(A, B, 3)
    d = ((A[:, None] - B[None]) ** 2).sum(-1)
    a_nn = np.argsort(d, axis=1)[:, :3]
    b_nn = np.argsort(d, axis=0)[:3].T
    want = {(a, b) for a in range(40) for b in range(30) if b in a_nn[a] and a in b_nn[b]}
    assert set(zip(i.tolist(), j.tolist())) == want and len(want) > 5
    assert np.all(np.diff(i) >= 0)


def test_neighbour_nce_is_scale_free_and_rewards_close_positives():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(16, 4, generator=g)
    close = a + 0.05 * torch.randn(16, 4, generator=g)
    far = torch.randn(16, 4, generator=g)
    lo, hi = neighbour_nce(a, close, 0.2), neighbour_nce(a, far, 0.2)
    assert lo < 1.0 < 2.0 < hi, (lo, hi)
    torch.testing.assert_close(neighbour_nce(10 * a, 10 * close, 0.2), lo)
    groups = torch.arange(16) % 2  # negatives only within a group: fewer of them, a lower loss
    assert neighbour_nce(a, far, 0.2, groups=groups) < hi


def test_neighbour_pull_is_scale_free_and_small_for_close_neighbours():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(32, 4, generator=g)
    close = a + 0.05 * torch.randn(32, 4, generator=g)
    far = torch.randn(32, 4, generator=g)
    lo, hi = neighbour_pull(a, close), neighbour_pull(a, far)
    assert lo < 0.01 and 0.7 < hi < 1.3, (lo, hi)
    torch.testing.assert_close(neighbour_pull(7 * a, 7 * close), lo)
    groups = torch.arange(32) // 16  # two groups far apart: within-group spread only
    shifted = a + 100.0 * groups[:, None]
    torch.testing.assert_close(neighbour_pull(shifted, shifted + (close - a), groups=groups), lo, rtol=0.2, atol=0)


def test_neighbour_terms_are_logged_and_off_by_default(pbmc):
    data = split(pbmc)
    snaps = {k: snapshot(a) for k, a in data.items()}
    assert DAVAE.defaults["structure_weight"] == 0.0 and DAVAE.defaults["mnn_weight"] == 0.0
    off = sf.integrate(data, method="davae", seed=0, **FAST)
    assert "structure" not in off.history[-1] and "mnn" not in off.history[-1]
    assert off.module._pool is None
    on = sf.integrate(data, method="davae", seed=0, structure_weight=0.2, mnn_weight=0.2, **FAST)
    for k, a in data.items():
        assert_unchanged(a, snaps[k], allowed_obsm={"X_scferry"})
        assert np.isfinite(a.obsm["X_scferry"]).all()
    h = on.history[-1]
    assert 0 < h["structure"] < 1 and 0 < h["mnn"] < np.log(600)
    # the total is the ELBO + the domain term + the weighted neighbour terms (p = 500 genes)
    again = sf.integrate(split(pbmc), method="davae", seed=0, structure_weight=0.2, mnn_weight=0.2,
                         **{**FAST, "max_iter": 1}).history[0]
    rest = again["loss"] - again["recon"] - 0.5 * again["kl"] - 3.0 * 500 * again["domain"]
    np.testing.assert_allclose(rest, 0.2 * 500 * (again["structure"] + again["mnn"]), rtol=1e-3)
    # the fitted model keeps no reference to its training inputs
    assert on.module._pool is None and on.module._nbr is None and on.module._mnn is None
    # mutual pairs exist between every two chemistries and are refound in the latent (the
    # training inputs set up again from the model's own transform of the data)
    module = on.module
    module._init_neighbours([{"common": on.transform(a, k)["common"]} for k, a in data.items()])
    assert all(len(other) > 0 for _, _, other in module._mnn)
    before = [o.copy() for _, _, o in module._mnn]
    module.train()
    module._refresh_mnn(torch.device("cpu"))
    assert module.training  # the refresh puts the module back in training mode
    assert any(len(a) != len(b) or np.any(a != b) for a, b in zip(before, (o for _, _, o in module._mnn)))


def test_same_seed_same_embedding_with_neighbour_terms(pbmc):
    out = []
    for _ in range(2):
        data = split(pbmc)
        sf.integrate(data, method="davae", seed=3, structure_weight=0.3, mnn_weight=0.3, **FAST)
        out.append(np.vstack([a.obsm["X_scferry"] for a in data.values()]))
    np.testing.assert_array_equal(out[0], out[1])


def test_neighbour_terms_refuse_datasets_on_disk(pbmc, tmp_path):
    paths = {}
    for name, a in split(pbmc).items():
        paths[name] = str(tmp_path / f"{name}.h5ad")
        a.write_h5ad(paths[name])
    with pytest.raises(ValueError, match="pass the datasets as AnnData objects in memory"):
        sf.integrate(paths, method="davae", structure_weight=0.5, **FAST)
