"""DAVAE through the shared spine, on real data: three 10x chemistries of the Symphony PBMC set."""
import numpy as np
import pandas as pd
import pytest
import torch

import scferry as sf
from scferry import metrics
from scferry.methods.davae import DAVAE, _ReverseGradient
from scferry.train import LossRecord, fit
from helpers import assert_unchanged, check_integration, pca_embedding, snapshot, split

FAST = dict(max_iter=60, progress=False, n_common_genes=800)


def test_mixes_chemistries_and_keeps_cell_types(pbmc):
    pca = pca_embedding(pbmc)
    snap = snapshot(pbmc)
    model = sf.integrate(pbmc, method="davae", batch_key="batch", seed=0, max_iter=600,
                         progress=False, n_common_genes=1000)
    assert_unchanged(pbmc, snap, allowed_obsm={"X_scferry"})
    X = pbmc.obsm["X_scferry"]
    assert X.shape == (pbmc.n_obs, 10) and X.dtype == np.float32 and np.isfinite(X).all()
    assert model.train_params["iterations_run"] == 600
    assert {"recon", "kl", "domain", "noise_var", "monitor"} <= set(model.history[-1])
    # mixing beats PCA; silhouette within 0.03 of PCA, kNN transfer within 0.1 (both far above random)
    check_integration(X, pbmc.obs, pca)


def test_same_seed_same_embedding(pbmc):
    sf.integrate(pbmc, method="davae", batch_key="batch", seed=3, **FAST)
    first = pbmc.obsm["X_scferry"].copy()
    sf.integrate(pbmc, method="davae", batch_key="batch", seed=3, **FAST)
    np.testing.assert_array_equal(first, pbmc.obsm["X_scferry"])
    sf.integrate(pbmc, method="davae", batch_key="batch", seed=4, **FAST)
    assert not np.allclose(first, pbmc.obsm["X_scferry"])


def test_inputs_save_load_and_transfer(pbmc, tmp_path):
    data = split(pbmc)
    model = sf.integrate(data, method="davae", seed=0, **FAST)
    prep = model.preprocessing
    # common genes only, log-normalised values (no MaxAbs scaling), no dataset-specific genes
    assert len(prep.common_genes) == 800 and not prep.scaled
    assert all(len(g) == 0 for g in prep.specific_genes.values())
    assert all(np.all(s == 1) for s in prep.common_scale.values())

    before = sf.transfer_labels(model, "10x_3p_v2", "10x_5p", "cell_type")  # no plan: kNN
    np.testing.assert_allclose(before.sum(axis=1), 1.0, atol=1e-5)
    with pytest.raises(ValueError, match="kept no OT plan"):
        sf.transfer_labels(model, "10x_3p_v2", "10x_5p", "cell_type", method="plan")

    model.save(tmp_path / "davae.pt")
    loaded = sf.load(tmp_path / "davae.pt", adatas=data)
    assert loaded.method == "davae" and loaded.dataset_names == list(data)
    assert loaded.params["n_latent"] == 10 and not loaded.preprocessing.scaled
    for k, v in model.module.state_dict().items():
        assert torch.equal(v, loaded.module.state_dict()[k])
    # the loaded network re-encodes the cells to the same coordinates
    d = loaded.dataset("10x_5p")
    views = {"common": prep.transform(d.counts(), d.var_names, "10x_5p")}
    np.testing.assert_allclose(loaded.encode(views, "10x_5p"), data["10x_5p"].obsm["X_scferry"],
                               rtol=1e-5, atol=1e-5)
    after = sf.transfer_labels(loaded, "10x_3p_v2", "10x_5p", "cell_type")
    pd.testing.assert_frame_equal(before, after)


def test_small_batch_is_used_whole_every_step(pbmc):
    """A batch with fewer cells than its share of the minibatch (128 / 3) contributes all its
    cells to every step (documented in integrate); the others are sampled as usual."""
    tiny = np.flatnonzero(pbmc.obs["batch"] == "10x_3p_v1")[:5]
    keep = np.sort(np.concatenate([np.flatnonzero(pbmc.obs["batch"] != "10x_3p_v1"), tiny]))
    small = pbmc[keep].copy()
    model = sf.integrate(small, method="davae", batch_key="batch", seed=0, **FAST)
    assert model.train_params["iterations_run"] == 60
    X = small.obsm["X_scferry"]
    assert X.shape == (small.n_obs, 10) and np.isfinite(X).all()
    assert len(model.obs_names["10x_3p_v1"]) == 5


def expect_error(exc, match, datasets, **kw):
    objs = list(datasets.values()) if isinstance(datasets, dict) else [datasets]
    snaps = [snapshot(a) for a in objs]
    with pytest.raises(exc, match=match):
        sf.integrate(datasets, method="davae", **{**FAST, **kw})
    for a, s in zip(objs, snaps):
        assert_unchanged(a, s)


def test_bad_input(pbmc):
    one = pbmc.copy()
    one.obs["batch"] = "10x_5p"
    expect_error(ValueError, r"at least 2 datasets; got 1 \(levels of 'batch': \['10x_5p'\]\)",
                 one, batch_key="batch")
    data = split(pbmc)
    data["10x_5p"].var_names = ["ENSG_" + g for g in data["10x_5p"].var_names]
    expect_error(ValueError, "share no feature names", data)
    data = split(pbmc)
    expect_error(ValueError, "takes no reference", data, reference="10x_5p")
    expect_error(ValueError, "n_latent must be a positive integer", data, n_latent=0)
    expect_error(ValueError, r"dropout must be in \[0, 1\)", data, dropout=1.0)
    expect_error(ValueError, "domain_weight must be a number >= 0", data, domain_weight=-1)
    expect_error(ValueError, "n_hidden must be", data, n_hidden=())
    with pytest.raises(TypeError, match=r"unknown parameter\(s\) \['n_specific_genes'\]"):
        sf.integrate(data, method="davae", n_specific_genes=100)


def test_gradient_reversal_and_classifier_roles():
    x = torch.randn(4, 3, requires_grad=True)
    g = torch.randn(4, 3)
    _ReverseGradient.apply(x).backward(g)
    torch.testing.assert_close(x.grad, -g)

    # In the training loss, the adversarial term's gradient is +lambda*p*dCE for the classifier
    # (it learns the datasets) and -lambda*p*dCE for the encoder (it hides them), eqs. 13 and 15.
    torch.manual_seed(0)
    m = DAVAE({"n_common": 20}, {**DAVAE.defaults, "reference": None}, ["a", "b"]).eval()
    batch = [{"common": torch.rand(16, 20)}, {"common": torch.rand(16, 20) + 1.0}]

    def grads(weight=None):
        torch.manual_seed(1)
        m.zero_grad()
        if weight is None:  # the domain cross entropy alone, no reversal, on the latent means
            mu, _ = m._encode(torch.cat([b["common"] for b in batch]))
            target = torch.repeat_interleave(torch.arange(2), 16)
            torch.nn.functional.cross_entropy(m.classifier(mu), target).backward()
        else:
            m.params["domain_weight"] = weight
            m.loss(batch).total.backward()
        return {n: p.grad.clone() for n, p in m.named_parameters() if p.grad is not None}

    with_adv, without, ce = grads(3.0), grads(0.0), grads()
    scale = 3.0 * 20
    for name, g_ce in ce.items():
        sign = 1.0 if name.startswith("classifier") else -1.0
        adv = with_adv[name] - without.get(name, torch.zeros_like(g_ce))
        torch.testing.assert_close(adv, sign * scale * g_ce, rtol=1e-3, atol=1e-4)
    assert any(n.startswith("classifier") for n in ce) and any(n.startswith("encoder") for n in ce)


class Adversarial(torch.nn.Module):
    """Total keeps falling, the monitored part is flat: early stopping must follow the monitor."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(()))

    def loss(self, batch):
        return LossRecord(-self.w, {"part": self.w.detach()}, monitor=self.w.detach() * 0 + 1.0)


def test_early_stopping_follows_the_monitor():
    hist = fit(Adversarial(), lambda: None, max_iter=5000, lr=0.01, weight_decay=0.0,
               iters_per_epoch=10, patience=3, progress=False)
    assert hist[-1]["iteration"] == 40  # first epoch sets the best, three flat epochs stop it
    assert all(h["monitor"] == 1.0 for h in hist) and hist[-1]["loss"] < hist[0]["loss"]
